"""An in-memory image dataset: the fastest way to feed small images on a CPU."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from multigan.errors import DataError


class ImageTensorDataset(torch.utils.data.Dataset):
    """Images held as one uint8 tensor [N, C, H, W].

    `__getitems__` lets `DataLoader` fetch a whole batch with one indexing
    operation instead of stacking N single items.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None = None,
                 class_names: Sequence[str] | None = None):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise DataError(f"expected uint8 images [N, C, H, W], got {images.dtype} {tuple(images.shape)}")
        if len(images) == 0:
            raise DataError("the dataset holds no image")
        self.images = images
        self.labels = labels
        self.class_names = list(class_names) if class_names is not None else None  # label k's name

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.images.shape[1:])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index]

    def __getitems__(self, indices: Sequence[int]) -> torch.Tensor:
        # x: [B, C, H, W] uint8
        return self.images[torch.as_tensor(indices, dtype=torch.long, device=self.images.device)]

    def nbytes(self) -> int:
        return self.images.nbytes + (0 if self.labels is None else self.labels.nbytes)

    def to(self, device: torch.device | str) -> ImageTensorDataset:
        """The same dataset held on `device` (the training loop indexes it there)."""
        return ImageTensorDataset(self.images.to(device), None if self.labels is None else self.labels.to(device),
                                  self.class_names)


class Labelled(torch.utils.data.Dataset):
    """A dataset with `labels` served as (items, labels) batches, for class-conditional training."""

    def __init__(self, dataset, n_classes: int):
        labels = getattr(dataset, "labels", None)
        if labels is None:
            raise DataError("class-conditional training (model.n_classes > 0) needs labels: MNIST, image sub-folders, "
                            "clip sub-folders or FSDD file names; set model.n_classes=0 for this data")
        found = int(labels.max()) + 1
        if int(labels.min()) < 0:
            raise DataError("labels must be >= 0")
        if found > n_classes:
            raise DataError(f"the data has {found} classes but model.n_classes is {n_classes}")
        self.dataset, self.labels = dataset, torch.as_tensor(labels, dtype=torch.long)
        self.class_names = getattr(dataset, "class_names", None)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        return self.dataset[index], self.labels[index]

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        # (x [B, ...], y [B])
        return self.dataset.__getitems__(indices), self.labels[torch.as_tensor(indices, dtype=torch.long, device=self.labels.device)]

    def nbytes(self) -> int | None:
        inner = getattr(self.dataset, "nbytes", None)
        return None if not callable(inner) or not callable(getattr(self.dataset, "to", None)) else inner() + self.labels.nbytes

    def to(self, device: torch.device | str) -> Labelled:
        """The same labelled dataset held on `device`."""
        moved = Labelled.__new__(Labelled)
        moved.dataset, moved.labels = self.dataset.to(device), self.labels.to(device)
        moved.class_names = self.class_names
        return moved
