"""Inception FID/KID/IS through torch-fidelity: our plumbing against torch-fidelity's own calculate_metrics,
the weights file (read weights only, one-line errors), grey images as RGB."""
from __future__ import annotations

import math
import urllib.error

import pytest
import torch
from torch import nn

from multigan.data.tensors import ImageTensorDataset
from multigan.errors import CheckpointError, ConfigError, DataError
from multigan.metrics.inception import WEIGHTS_ENV, evaluate_inception, load_inception, to_rgb, weights_path
from multigan.modalities.image import ImageModality

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def random_weights(tmp_path_factory):
    """A randomly initialised state dict of torch-fidelity's InceptionV3, in a file like its weights file."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    folder = tmp_path_factory.mktemp("inception")
    torch.save({}, folder / "empty.pth")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(FeatureExtractorInceptionV3, "load_state_dict", lambda self, state: None)  # keep the fresh layers
        net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                          feature_extractor_weights_path=str(folder / "empty.pth"))
    torch.manual_seed(0)
    for m in net.modules():  # He init keeps the activations at scale through the whole depth
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
    path = folder / "random-inception.pth"
    torch.save(net.state_dict(), path)
    return path


class Replay(nn.Module):
    """A stand-in generator that hands out given model-space samples in order, whatever z is."""

    def __init__(self, x: torch.Tensor):
        super().__init__()
        self.x, self.cursor, self.z_dim = x, 0, 4
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.x[self.cursor:self.cursor + len(z)]
        self.cursor += len(z)
        return out


def _blobs(n: int, seed: int, brightness: float) -> torch.Tensor:
    """n grey 28x28 uint8 pictures of one Gaussian blob each, at random places and widths."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    centre = 6 + 16 * torch.rand(n, 2, generator=g)
    width = 2 + 4 * torch.rand(n, 1, 1, generator=g)
    d2 = (yy - centre[:, 0, None, None]) ** 2 + (xx - centre[:, 1, None, None]) ** 2
    return (brightness * 255 * torch.exp(-d2 / (2 * width ** 2))).round().to(torch.uint8)[:, None]


class Images(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


def test_our_figures_are_torch_fidelitys_on_the_same_images(random_weights):
    import torch_fidelity

    # Few images: every one costs a full Inception pass at 299x299, twice (ours and theirs).
    fake, real = _blobs(12, seed=1, brightness=0.6), _blobs(16, seed=2, brightness=1.0)
    inception = load_inception(random_weights)
    modality = ImageModality(1, 28, 28)
    ours = evaluate_inception(inception, Replay(modality.encode(fake)), modality, ImageTensorDataset(real), n=12,
                              batch_size=8)
    theirs = torch_fidelity.calculate_metrics(
        input1=Images(fake.expand(-1, 3, -1, -1)), input2=Images(real.expand(-1, 3, -1, -1)), cuda=False, isc=True,
        fid=True, kid=True, kid_subset_size=12, batch_size=8, feature_extractor_weights_path=str(random_weights), verbose=False,
        cache=False, save_cpu_ram=True)
    assert ours["inception_reference_items"] == 16
    assert ours["inception_fid"] == pytest.approx(theirs["frechet_inception_distance"], rel=1e-5)
    # KID is a small difference of large float32 kernel sums: equal to a few parts in 1e5
    assert ours["inception_kid"] == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-4)
    assert ours["inception_kid_std"] == pytest.approx(theirs["kernel_inception_distance_std"], rel=1e-4)
    assert ours["inception_score"] == pytest.approx(theirs["inception_score_mean"], rel=1e-5)
    assert ours["inception_score_std"] == pytest.approx(theirs["inception_score_std"], rel=1e-5)
    # A random net still tells dim blobs from bright ones, so the plumbing compares different sets.
    assert ours["inception_fid"] > 0 and ours["inception_kid_std"] > 0 and math.isfinite(ours["inception_score"])


def test_kid_spread_is_not_available_when_one_subset_holds_both_sets():
    from multigan.metrics.inception import inception_metrics

    g = torch.Generator().manual_seed(0)
    a = {"2048": torch.randn(20, 8, generator=g), "logits_unbiased": torch.randn(20, 5, generator=g)}
    b = {"2048": torch.randn(20, 8, generator=g) + 1, "logits_unbiased": torch.randn(20, 5, generator=g)}
    figures = inception_metrics(a, b)
    assert figures["inception_kid_std"] is None and figures["inception_kid"] > 0
    bigger = {k: torch.cat([v, v + 0.5]) for k, v in b.items()}
    assert inception_metrics(a, bigger)["inception_kid_std"] > 0


def test_grey_images_become_rgb_and_others_are_refused():
    grey = torch.arange(4 * 28 * 28, dtype=torch.int64).remainder(256).to(torch.uint8).view(4, 1, 28, 28)
    rgb = to_rgb(grey)
    assert rgb.shape == (4, 3, 28, 28) and all(torch.equal(rgb[:, c], grey[:, 0]) for c in range(3))
    colour = torch.zeros(2, 3, 8, 8, dtype=torch.uint8)
    assert to_rgb(colour) is colour
    for bad in (grey.float(), torch.zeros(2, 2, 8, 8, dtype=torch.uint8), torch.zeros(3, 8, 8, dtype=torch.uint8)):
        with pytest.raises(DataError):
            to_rgb(bad)


class Payload:
    """An object that a full unpickler would build: what weights_only=True must refuse."""

    def __reduce__(self):
        return (print, ("unpickled",))


def test_a_weights_file_holding_objects_is_refused(tmp_path, capsys):
    path = tmp_path / "weights.pth"
    torch.save({"fc.weight": Payload()}, path)
    with pytest.raises(CheckpointError, match="not a file of Inception weights") as caught:
        load_inception(path)
    assert "unpickled" not in capsys.readouterr().out and "\n" not in str(caught.value)


def test_a_state_dict_of_another_network_is_refused(tmp_path):
    path = tmp_path / "other.pth"
    torch.save(nn.Linear(2, 2).state_dict(), path)
    with pytest.raises(CheckpointError, match="does not hold torch-fidelity's Inception weights") as caught:
        load_inception(path)
    assert "\n" not in str(caught.value)


def test_the_weights_come_from_the_flag_then_the_environment(tmp_path, monkeypatch):
    flag, env = tmp_path / "a.pth", tmp_path / "b.pth"
    flag.write_bytes(b"x")
    env.write_bytes(b"x")
    monkeypatch.setenv(WEIGHTS_ENV, str(env))
    assert weights_path(flag) == flag and weights_path() == env
    with pytest.raises(ConfigError, match="not found.*weights-inception-2015-12-05-6726825d.pth"):
        weights_path(tmp_path / "absent.pth")


def test_offline_without_weights_says_where_to_get_them(tmp_path, monkeypatch):
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("Name or service not known")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    with pytest.raises(ConfigError) as caught:
        weights_path()
    message = str(caught.value)
    assert "\n" not in message
    assert "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" in message
    assert "--inception-weights" in message and WEIGHTS_ENV in message
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / "weights-inception-2015-12-05-6726825d.pth") in message


def test_without_torch_fidelity_the_error_names_the_extra(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "torch_fidelity", None)  # import fails as if not installed
    with pytest.raises(ConfigError, match=r"pip install 'multigan\[inception\]'"):
        weights_path()
