"""Feature networks: the kept classifiers on real test data, the network, its file, its input transforms, augmentation."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from multigan.config import AudioConfig
from multigan.data.audio_folder import fsdd_split, load_clip_folder
from multigan.data.mnist import load_mnist
from multigan.data.tensors import ImageTensorDataset
from multigan.metrics.evaluate import reference_set
from multigan.engine.checkpoint import save_checkpoint
from multigan.errors import CheckpointError, DataError
from multigan.metrics.classifier_training import fit_classifier, mask_bands, shift_images
from multigan.metrics.classifier_training import test_accuracy as accuracy_of  # renamed: pytest would collect test_*
from multigan.metrics.feature_file import KIND, load_feature_net, save_feature_net
from multigan.metrics.feature_inputs import DigitImages, LogMelClips
from multigan.metrics.feature_net import FeatureNet

REPO_ROOT = Path(__file__).resolve().parents[2]
ASSETS = REPO_ROOT / "multigan" / "assets"
KEPT = {"digit-classifier.pt": ("image", 0.9945), "spoken-digit-classifier.pt": ("audio", 0.9967)}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def mnist_test(shared_data, tmp_path_factory) -> ImageTensorDataset:
    """The 10,000 MNIST test digits, decompressed into a cache of this module's own."""
    return load_mnist(shared_data, train=False, cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def fsdd_test(shared_data, tmp_path_factory):
    """FSDD's own test split (takes 0-4 of every digit and speaker), centre-cropped to one model-space clip."""
    audio = AudioConfig()
    return load_clip_folder(shared_data / "fsdd" / "recordings", select=fsdd_split("test"), crop="center",
                            sample_rate=8000, length=audio.length, trim_db=audio.trim_db,
                            cache_dir=tmp_path_factory.mktemp("cache"), progress=False)


# The kept classifiers ------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(KEPT))
def test_kept_files_are_weights_only_feature_networks(name):
    state = torch.load(ASSETS / name, weights_only=True)
    kind, accuracy = KEPT[name]
    assert state["kind"] == KIND
    assert state["input"]["kind"] == kind
    assert state["class_names"] == [str(d) for d in range(10)]
    assert state["test_accuracy"] == pytest.approx(accuracy, abs=1e-4)
    assert not {"G", "D", "G_ema", "opt_G", "step"} & state.keys(), "a training checkpoint, not a feature network"
    assert all(isinstance(v, torch.Tensor) for v in state["weights"].values())


def test_kept_digit_classifier_on_the_mnist_test_split(mnist_test):
    extractor = load_feature_net(ASSETS / "digit-classifier.pt")
    assert len(mnist_test) == 10_000
    x = extractor.input.inputs(mnist_test.images)
    features, probs = extractor.embed(x)
    assert features.shape == (10_000, extractor.net.feature_dim) and probs.shape == (10_000, 10)
    accuracy = float((probs.argmax(1) == mnist_test.labels).double().mean())
    assert accuracy >= 0.990
    assert accuracy == pytest.approx(extractor.test_accuracy, abs=0.002), "the file's recorded accuracy does not hold"


def test_kept_spoken_digit_classifier_on_fsdd_takes_0_to_4(fsdd_test):
    extractor = load_feature_net(ASSETS / "spoken-digit-classifier.pt")
    assert len(fsdd_test) == 300
    assert all(int(p.stem.rsplit("_", 1)[1]) < 5 for p in fsdd_test.paths)
    x = extractor.input.inputs(fsdd_test.__getitems__(range(len(fsdd_test))), fsdd_test.sample_rate)
    assert x.shape == (300, 1, 64, 64)
    _, probs = extractor.embed(x)
    accuracy = float((probs.argmax(1) == fsdd_test.labels).double().mean())
    assert accuracy >= 0.95
    assert accuracy == pytest.approx(extractor.test_accuracy, abs=0.01), "the file's recorded accuracy does not hold"


def test_reference_features_follow_the_dataset_order(mnist_test):
    extractor = load_feature_net(ASSETS / "digit-classifier.pt")
    subset = ImageTensorDataset(mnist_test.images[:130])
    ref = reference_set(extractor, subset, batch_size=50)  # three batches, the last one short
    features, probs = ref.features, ref.probs
    direct = extractor.embed(extractor.input.inputs(subset.images))
    torch.testing.assert_close(features, direct[0])
    torch.testing.assert_close(probs, direct[1])
    torch.testing.assert_close(probs.sum(1), torch.ones(130))


# The network and its file ---------------------------------------------------------
@pytest.mark.parametrize("size", [28, 64])
def test_feature_net_shapes(size):
    torch.manual_seed(0)
    net = FeatureNet(n_classes=7, width=4, feature_dim=24).eval()
    x = torch.randn(3, 1, size, size)
    assert net.features(x).shape == (3, 24)
    assert net(x).shape == (3, 7)
    assert (net.features(x) >= 0).all(), "features come after a ReLU"
    assert net.spec() == {"n_classes": 7, "width": 4, "feature_dim": 24}


def _perturbed_net() -> FeatureNet:
    """A small net whose batch-norm statistics are away from their defaults, so a lost buffer shows."""
    torch.manual_seed(1)
    net = FeatureNet(n_classes=3, width=4, feature_dim=8)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    return net.eval()


def test_save_and_load_give_identical_outputs(tmp_path):
    net = _perturbed_net()
    path = save_feature_net(tmp_path / "net.pt", net, DigitImages(16, 16), class_names=["a", "b", "c"],
                            test_accuracy=0.5, trained_on="noise")
    extractor = load_feature_net(path)
    assert not extractor.net.training
    assert extractor.class_names == ["a", "b", "c"] and extractor.test_accuracy == 0.5
    assert isinstance(extractor.input, DigitImages) and (extractor.input.height, extractor.input.width) == (16, 16)
    x = torch.randn(5, 1, 16, 16)
    with torch.no_grad():
        assert torch.equal(extractor.net(x), net(x))
        assert torch.equal(extractor.net.features(x), net.features(x))

    # Other weights give another digest (the key of cached reference features).
    with torch.no_grad():
        net.head[1].bias.add_(1.0)
    other = save_feature_net(tmp_path / "other.pt", net, DigitImages(16, 16), class_names=["a", "b", "c"],
                             test_accuracy=0.5, trained_on="noise")
    assert load_feature_net(other).digest != extractor.digest
    assert load_feature_net(path).digest == extractor.digest


def test_save_and_load_keep_the_audio_transform(tmp_path):
    audio = AudioConfig(n_mels=32, frames=16, gl_iter=4)
    mean, std = torch.linspace(-60, -20, 32), torch.linspace(2, 9, 32)
    path = save_feature_net(tmp_path / "net.pt", _perturbed_net(), LogMelClips(audio, mean, std),
                            class_names=["a", "b", "c"], test_accuracy=0.9, trained_on="noise")
    transform = load_feature_net(path).input
    assert isinstance(transform, LogMelClips)
    assert transform.audio == audio
    assert torch.equal(transform.mean, mean) and torch.equal(transform.std, std)


def test_a_training_checkpoint_is_not_a_feature_network(tmp_path):
    path = save_checkpoint({"step": 3, "config": "{}", "G": {}, "D": {}, "G_ema": {}}, tmp_path / "step-0000003.pt")
    with pytest.raises(CheckpointError, match="not a multigan feature network"):
        load_feature_net(path)


@pytest.mark.parametrize("content", [b"", b"not a torch file", b"PK\x03\x04 cut short"])
def test_a_garbage_file_is_a_checkpoint_error(tmp_path, content):
    path = tmp_path / "net.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError):
        load_feature_net(path)


def test_a_feature_network_file_with_mismatched_weights(tmp_path):
    path = save_feature_net(tmp_path / "net.pt", _perturbed_net(), DigitImages(), class_names=list("abc"),
                            test_accuracy=0.5, trained_on="noise")
    state = torch.load(path, weights_only=True)
    state["net"]["width"] = 8  # the weights are for width 4
    save_checkpoint(state, path)
    with pytest.raises(CheckpointError, match="does not match"):
        load_feature_net(path)


# Input transforms -----------------------------------------------------------------
def test_digit_images_scale_uint8_to_minus_one_one():
    images = torch.tensor([0, 255, 51], dtype=torch.uint8).view(3, 1, 1, 1).expand(3, 1, 28, 28)
    x = DigitImages().inputs(images)
    assert x.dtype == torch.float32 and x.shape == (3, 1, 28, 28)
    assert x[:, 0, 0, 0].tolist() == pytest.approx([-1.0, 1.0, 51 / 127.5 - 1])


@pytest.mark.parametrize("shape", [(2, 3, 64, 64), (2, 1, 32, 32), (1, 28, 28)])
def test_digit_images_reject_other_shapes(shape):
    with pytest.raises(DataError):
        DigitImages().inputs(torch.zeros(shape, dtype=torch.uint8))


def _tone(hz: float, sample_rate: int, seconds: float) -> torch.Tensor:
    t = torch.arange(int(sample_rate * seconds), dtype=torch.float64) / sample_rate
    return (0.5 * torch.sin(2 * math.pi * hz * t)).float()


def test_log_mel_clips_resample_other_rates():
    audio = AudioConfig()
    transform = LogMelClips(audio, torch.full((audio.n_mels,), -40.0), torch.full((audio.n_mels,), 10.0))
    at_8k = transform.inputs(torch.stack([_tone(440, 8000, 1.2), _tone(2000, 8000, 1.2)]), 8000)
    at_16k = transform.inputs(torch.stack([_tone(440, 16000, 1.2), _tone(2000, 16000, 1.2)]), 16000)
    assert at_8k.shape == at_16k.shape == (2, 1, audio.n_mels, audio.frames)
    # The same tone lands in the same mel bin, whatever rate it came at.
    peak_8k = at_8k[:, 0].mean(-1).argmax(-1)
    peak_16k = at_16k[:, 0].mean(-1).argmax(-1)
    assert peak_8k.tolist() == peak_16k.tolist()
    assert peak_8k[0] < peak_8k[1]
    # A short clip is zero-padded to the window instead of failing.
    assert transform.inputs(_tone(440, 8000, 0.2)[None], 8000).shape == (1, 1, audio.n_mels, audio.frames)
    with pytest.raises(DataError):
        transform.inputs(_tone(440, 8000, 1.0), 8000)  # [T], not [B, T]


def test_log_mel_clips_standardise_as_the_mel_adapter_does():
    from multigan.modalities.mel import MelModality

    audio = AudioConfig()
    mean, std = torch.linspace(-70, -30, audio.n_mels), torch.linspace(0.5, 12, audio.n_mels)  # some std below the floor
    mel = MelModality(audio, mean, std)
    transform = LogMelClips.from_mel(mel)
    wave = _tone(900, 8000, 1.0)[None]
    x = transform.inputs(wave, 8000)
    torch.testing.assert_close(x, mel.standardize(mel.analyze(fix_length_clip(wave, audio.length)))[:, None])
    assert transform.state_dict().keys() == mel.state_dict().keys()
    assert torch.equal(transform.std, mel.std) and float(transform.std.min()) >= 1.0  # the adapter's floor


def fix_length_clip(wave, length):
    from multigan.audio.io import fix_length

    return fix_length(wave, length, mode="center")


def test_log_mel_clips_normalise_with_their_own_statistics():
    audio = AudioConfig()
    wave = _tone(700, 8000, 1.0)[None]
    plain = LogMelClips(audio, torch.zeros(audio.n_mels), torch.ones(audio.n_mels)).inputs(wave, 8000)
    shifted = LogMelClips(audio, torch.full((audio.n_mels,), 10.0), torch.full((audio.n_mels,), 2.0)).inputs(wave, 8000)
    torch.testing.assert_close(shifted, (plain - 10.0) / 2.0, atol=1e-4, rtol=1e-5)


# Augmentation -----------------------------------------------------------------------
def test_shift_images_moves_each_image_by_a_bounded_offset():
    B, H, W, s = 64, 9, 7, 2
    g = torch.Generator().manual_seed(0)
    x = torch.rand(B, 1, H, W, generator=g) + 1.0  # distinct values in [1, 2] ...
    x[0, 0, 4, 3] = -1.0  # ... and the batch minimum, which fills the uncovered border
    out = shift_images(x, s, torch.Generator().manual_seed(3))
    assert out.shape == x.shape
    padded = F.pad(x, (s,) * 4, value=-1.0)
    offsets = []
    for i in range(B):
        found = [(dy - s, dx - s) for dy in range(2 * s + 1) for dx in range(2 * s + 1)
                 if torch.equal(out[i], padded[i, :, dy:dy + H, dx:dx + W])]
        assert len(found) == 1, f"image {i} is not a shift of its original by at most {s} pixels"
        offsets.append(found[0])
    assert len(set(offsets)) > 10, "offsets should vary from image to image"
    assert not torch.equal(out, x)
    # The same generator state gives the same shifts; no shift leaves the batch as it was.
    assert torch.equal(out, shift_images(x, s, torch.Generator().manual_seed(3)))
    assert torch.equal(shift_images(x, 0, torch.Generator().manual_seed(3)), x)


def _band(mask: torch.Tensor) -> tuple[int, int]:
    """(start, width) of the one run of True in a 1-D mask; (0, 0) if none. Fails on several runs."""
    where = mask.nonzero().flatten().tolist()
    if not where:
        return 0, 0
    assert where == list(range(where[0], where[-1] + 1)), f"masked positions {where} are not one band"
    return where[0], len(where)


def test_mask_bands_zero_one_band_of_bins_and_one_of_frames():
    B, H, W, width = 64, 16, 20, 5
    x = torch.rand(B, 1, H, W, generator=torch.Generator().manual_seed(0)) + 1.0  # no zero anywhere
    before = x.clone()
    out = mask_bands(x, width, torch.Generator().manual_seed(1))
    assert out.shape == x.shape
    assert torch.equal(x, before), "the input was changed in place"
    bins, frames = [], []
    for i in range(B):
        zero = out[i, 0] == 0  # [H, W]
        rows, cols = zero.all(1), zero.all(0)
        _, n_rows = _band(rows)
        _, n_cols = _band(cols)
        assert n_rows <= width and n_cols <= width
        # Every zero lies in a masked band, and everything else is untouched.
        assert torch.equal(zero, rows[:, None] | cols[None, :])
        assert torch.equal(out[i, 0][~zero], x[i, 0][~zero])
        bins.append(n_rows)
        frames.append(n_cols)
    assert max(bins) >= 3 and max(frames) >= 3 and len(set(bins)) > 2, "band widths should vary up to max_width"
    assert torch.equal(out, mask_bands(x, width, torch.Generator().manual_seed(1)))
    assert torch.equal(mask_bands(x, 0, torch.Generator().manual_seed(1)), x)


# Training ------------------------------------------------------------------------------
def test_fit_classifier_learns_an_easy_task():
    # Class 1 images have a bright square in the top-left corner, class 0 in the bottom-right.
    g = torch.Generator().manual_seed(0)

    def make(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, 2, (n,), generator=g)
        x = torch.randn(n, 1, 8, 8, generator=g) * 0.3
        x[y == 1, :, :3, :3] += 2.0
        x[y == 0, :, 5:, 5:] += 2.0
        return x, y

    train, test = make(256), make(128)
    torch.manual_seed(0)
    net = FeatureNet(n_classes=2, width=4, feature_dim=8, dropout=0.0)
    before = accuracy_of(net, *test)

    def batches(epoch: int):
        for i in range(0, 256, 32):
            yield train[0][i:i + 32], train[1][i:i + 32]

    after = fit_classifier(net, batches, test, epochs=3, steps_per_epoch=8, lr=1e-2, progress=False)
    assert after >= 0.95 > before
    assert after == accuracy_of(net, *test)


def test_a_feature_network_is_not_taken_for_a_training_checkpoint():
    from multigan.restore import restore
    from multigan.errors import CheckpointError

    with pytest.raises(CheckpointError, match="is a feature network"):
        restore(ASSETS / "digit-classifier.pt")


# The colour (emoji) classifier and the choice of feature network ---------------------------
EMOJI_HELD_OUT_ACCURACY = 0.8148  # 629 of 772 held-out emoji, measured when the kept file was trained


@pytest.fixture(scope="module")
def emoji(shared_data):
    """All 3,786 Noto emoji at 64x64 on white, labelled by category, with each one's base emoji."""
    from multigan.data.image_folder import labels_from_table, load_image_folder

    root = shared_data / "emoji"
    data = load_image_folder(root / "png", channels=3, height=64, width=64, background=(255, 255, 255),
                             labels=labels_from_table(root / "emoji.json", label_field="category"), progress=False)
    base = labels_from_table(root / "emoji.json", label_field="name")
    return data, [base[p.name] for p in data.paths]


def test_kept_emoji_classifier_on_held_out_emoji(emoji):
    from multigan.metrics.classifier_training import split_by_group
    from multigan.metrics.feature_inputs import ColourImages

    data, groups = emoji
    extractor = load_feature_net(ASSETS / "emoji-classifier.pt")
    assert isinstance(extractor.input, ColourImages) and extractor.net.in_channels == 3
    assert extractor.class_names == data.class_names and len(data.class_names) == 10
    held = split_by_group(groups, 0.2, seed=0)  # recipes/images/train_classifier.py's defaults
    assert 600 < int(held.sum()) < 900
    _, probs = extractor.embed(extractor.input.inputs(data.images[held]))
    accuracy = float((probs.argmax(1) == data.labels[held]).double().mean())
    assert accuracy >= EMOJI_HELD_OUT_ACCURACY - 0.01
    assert accuracy == pytest.approx(extractor.test_accuracy, abs=0.002), "the file's recorded accuracy does not hold"


def test_split_by_group_keeps_groups_whole():
    from multigan.metrics.classifier_training import split_by_group

    groups = [f"g{i % 50}" for i in range(400)]  # 50 groups of 8
    held = split_by_group(groups, 0.2, seed=3)
    assert int(held.sum()) == 10 * 8
    for g in set(groups):
        sides = {bool(h) for h, name in zip(held, groups) if name == g}
        assert len(sides) == 1, f"group {g} is split"
    assert torch.equal(held, split_by_group(groups, 0.2, seed=3))
    assert not torch.equal(held, split_by_group(groups, 0.2, seed=4))


def test_colour_images_scale_and_resize():
    from multigan.metrics.feature_inputs import ColourImages

    transform = ColourImages(64, 64)
    images = torch.zeros(2, 3, 64, 64, dtype=torch.uint8)
    images[:, 0] = 255
    x = transform.inputs(images)
    assert x.shape == (2, 3, 64, 64) and x[:, 0].eq(1).all() and x[:, 1:].eq(-1).all()
    small = transform.inputs(images[:, :, :32, :32])  # another size: resized to the network's own
    assert small.shape == (2, 3, 64, 64)
    torch.testing.assert_close(small, x)
    for shape in [(2, 1, 64, 64), (3, 64, 64)]:
        with pytest.raises(DataError):
            transform.inputs(torch.zeros(shape, dtype=torch.uint8))


def test_save_and_load_keep_the_colour_input(tmp_path):
    from multigan.metrics.feature_inputs import ColourImages

    torch.manual_seed(0)
    net = FeatureNet(n_classes=3, width=4, feature_dim=8, in_channels=3).eval()
    assert net.spec()["in_channels"] == 3
    path = save_feature_net(tmp_path / "net.pt", net, ColourImages(32, 32), class_names=list("abc"),
                            test_accuracy=0.7, trained_on="noise")
    extractor = load_feature_net(path)
    assert isinstance(extractor.input, ColourImages) and (extractor.input.height, extractor.input.width) == (32, 32)
    assert extractor.trained_on == "noise"
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(extractor.net(x), net(x))


@pytest.mark.parametrize("modality, shape, name", [
    ("image", (1, 28, 28), "digit-classifier.pt"),
    ("image", (3, 64, 64), "emoji-classifier.pt"),
    ("image", (3, 32, 48), "emoji-classifier.pt"),
    ("mel", (1, 64, 64), "spoken-digit-classifier.pt"),
    ("mel", (1, 80, 128), "spoken-digit-classifier.pt"),
])
def test_the_feature_network_follows_the_sample_shape(modality, shape, name):
    from multigan.registry import feature_net_path

    assert feature_net_path(modality, shape=shape) == ASSETS / name
    other = ASSETS / "digit-classifier.pt" if name != "digit-classifier.pt" else ASSETS / "emoji-classifier.pt"
    assert feature_net_path(modality, str(other), shape) == other  # --features wins


@pytest.mark.parametrize("shape", [(1, 64, 64), (1, 32, 32), (2, 28, 28)])
def test_a_shape_without_a_feature_network_names_the_flag(shape):
    from multigan.errors import ConfigError
    from multigan.registry import feature_net_path

    with pytest.raises(ConfigError, match="--features") as caught:
        feature_net_path("image", shape=shape)
    assert "\n" not in str(caught.value) and "x".join(map(str, shape)) in str(caught.value)


def _grey_emoji(emoji) -> ImageTensorDataset:
    """The emoji as grey 28x28 pictures: MNIST's shape, not its kind of data."""
    data, _ = emoji
    grey = F.interpolate(data.images.float().mean(1, keepdim=True), size=(28, 28), mode="area")
    return ImageTensorDataset(grey.round().clamp(0, 255).to(torch.uint8))


def test_the_digit_classifier_warns_on_grey_pictures_that_are_not_digits(emoji, mnist_test, tmp_path, monkeypatch,
                                                                         caplog):
    import logging

    from multigan.config import EvalConfig
    from multigan.modalities.image import ImageModality
    from multigan.run import make_evaluator

    monkeypatch.setenv("MULTIGAN_CACHE", str(tmp_path / "cache"))
    with caplog.at_level(logging.INFO, logger="multigan"):
        make_evaluator(EvalConfig(n=10), ImageModality(1, 28, 28), ImageTensorDataset(mnist_test.images[:2000]))
    assert "evaluation features: digit-classifier.pt" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="multigan"):
        make_evaluator(EvalConfig(n=10), ImageModality(1, 28, 28), _grey_emoji(emoji))
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "features of digit-classifier.pt" in warnings[0] and "--features" in warnings[0]


def test_the_emoji_classifier_warns_on_digits_not_on_emoji(emoji, mnist_test):
    from multigan.metrics.feature_net import mismatch_warning

    data, _ = emoji
    extractor = load_feature_net(ASSETS / "emoji-classifier.pt")
    _, probs = extractor.embed(extractor.input.inputs(data.images[::4]))
    assert mismatch_warning(extractor, probs, "emoji-classifier.pt") is None
    digits = mnist_test.images[:500].expand(-1, 3, -1, -1)  # grey digits as RGB, resized by the transform
    _, probs = extractor.embed(extractor.input.inputs(digits))
    warning = mismatch_warning(extractor, probs, "emoji-classifier.pt")
    assert warning and "trained on Noto emoji categories" in warning


@pytest.mark.parametrize("accuracy, confidence, warns", [
    (0.99, 0.97, False), (0.99, 0.95, True),  # near-perfect nets: 3 points of margin
    (0.80, 0.65, False), (0.80, 0.55, True),  # weaker nets: as much again as their error rate
])
def test_mismatch_warning_floor(accuracy, confidence, warns):
    from multigan.metrics.feature_net import FeatureExtractor, mismatch_warning

    extractor = FeatureExtractor(_perturbed_net(), DigitImages(), list("abc"), accuracy, "digest", "toys")
    probs = torch.tensor([[confidence, (1 - confidence) / 2, (1 - confidence) / 2]]).expand(20, 3)
    warning = mismatch_warning(extractor, probs, "toys.pt")
    assert (warning is not None) == warns
    if warns:
        assert warning.startswith("features of toys.pt (trained on toys)") and "\n" not in warning


def test_the_old_module_path_still_names_the_feature_network_api():
    from multigan.metrics import features

    assert features.load_feature_net is load_feature_net and features.KIND == KIND
    assert features.FeatureNet is FeatureNet and features.LogMelClips is LogMelClips
