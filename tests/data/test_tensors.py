"""In-memory image tensors, and `Labelled`: (items, labels) batches for class-conditional training."""
from __future__ import annotations

import pytest
import torch

from multigan.data.audio_folder import ClipDataset
from multigan.data.tensors import ImageTensorDataset, Labelled
from multigan.errors import DataError

IMAGES = torch.randint(0, 256, (12, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
LABELS = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 4, 4])


def test_image_tensors_serve_items_and_whole_batches():
    dataset = ImageTensorDataset(IMAGES)
    assert len(dataset) == 12 and dataset.shape == (1, 8, 8)
    batch = dataset.__getitems__([5, 0, 11, 5])
    assert torch.equal(batch, torch.stack([dataset[i] for i in (5, 0, 11, 5)]))
    assert batch.dtype == torch.uint8


@pytest.mark.parametrize("images", [IMAGES.float(), IMAGES[:, 0], IMAGES[:0]], ids=["float", "3-d", "empty"])
def test_image_tensors_refuse_what_is_not_uint8_images(images):
    with pytest.raises(DataError):
        ImageTensorDataset(images)


@pytest.mark.parametrize("n_classes", [5, 7])  # the data may use fewer classes than the model
def test_labelled_images_batch_matches_the_base_dataset(n_classes):
    base = ImageTensorDataset(IMAGES, LABELS.to(torch.int32))
    dataset = Labelled(base, n_classes)
    assert len(dataset) == len(base)
    indices = [3, 11, 0, 7]
    x, y = dataset.__getitems__(indices)
    assert torch.equal(x, base.__getitems__(indices))
    assert y.tolist() == [3, 4, 0, 2]
    assert y.dtype == torch.long  # what nn.Embedding takes
    item, label = dataset[7]
    assert torch.equal(item, IMAGES[7]) and int(label) == 2


def test_class_names_travel_with_the_data():
    names = ["a", "b", "c", "d", "e"]
    labelled = Labelled(ImageTensorDataset(IMAGES, LABELS, names), 5)
    assert labelled.class_names == names and labelled.to("cpu").class_names == names
    assert ImageTensorDataset(IMAGES, LABELS, names).to("cpu").class_names == names
    assert Labelled(ImageTensorDataset(IMAGES, LABELS), 5).class_names is None


def test_labelled_clips_batch_matches_the_base_dataset():
    waves = [torch.linspace(-1, 1, n) for n in (50, 80, 120)]
    base = ClipDataset(waves, sample_rate=8000, length=64, crop="start", labels=torch.tensor([2, 0, 1]))
    x, y = Labelled(base, 3).__getitems__([2, 0])
    assert torch.equal(x, base.__getitems__([2, 0]))
    assert x.shape == (2, 64) and y.tolist() == [1, 2]


def test_labelled_refuses_data_without_labels():
    waves = [torch.zeros(64) + 0.1]
    for base in (ImageTensorDataset(IMAGES), ClipDataset(waves, sample_rate=8000, length=64, crop="start")):
        with pytest.raises(DataError, match="n_classes"):
            Labelled(base, 10)


def test_labelled_refuses_more_classes_than_the_model_has():
    with pytest.raises(DataError, match="5 classes"):
        Labelled(ImageTensorDataset(IMAGES, LABELS), 4)
    with pytest.raises(DataError):
        Labelled(ImageTensorDataset(IMAGES, LABELS), 1)
