"""Evaluation: the Evaluator contract on both modalities, cached reference features, `multigan evaluate`."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch import nn

from multigan import cli
from multigan.run import make_evaluator, train_run
from multigan.config import AudioConfig, EvalConfig, NetConfig
from multigan.data.audio_folder import ClipDataset, load_clip_folder
from multigan.data.mnist import load_mnist
from multigan.data.tensors import ImageTensorDataset
from multigan.errors import ConfigError
from multigan.generate import labels_in_proportion, latents
from multigan.metrics import feature_file, feature_inputs, feature_net
from multigan.metrics.evaluate import METRICS, Evaluator, FeatureSet, format_table, metric_label, reference_set
from multigan.metrics.feature_file import load_feature_net
from multigan.metrics.feature_net import FeatureExtractor
from multigan.modalities.image import ImageModality
from multigan.modalities.mel import MelModality
from multigan.nets import dcgan
from multigan.presets import mnist_quick

ASSETS = Path(__file__).resolve().parents[2] / "multigan" / "assets"
INCEPTION = {"inception_fid", "inception_kid", "inception_score"}  # only with `evaluate --inception`
FIGURES = set(METRICS) - INCEPTION | {"kid_std", "classifier_score_se", "diversity_ratio", "n", "seconds"}

pytestmark = pytest.mark.usefixtures("one_thread")


class Replay(nn.Module):
    """A stand-in generator that hands out given model-space samples in order, whatever z is."""

    def __init__(self, x: torch.Tensor):
        super().__init__()
        self.x, self.cursor, self.z_dim = x, 0, 4
        self.anchor = nn.Parameter(torch.zeros(()))  # tells the evaluator the device
        self.modes: list[bool] = []

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        self.modes.append(self.training)
        out = self.x[self.cursor:self.cursor + len(z)]
        self.cursor = (self.cursor + len(z)) % len(self.x)
        return out


@pytest.fixture(scope="module")
def mnist_test(shared_data, tmp_path_factory) -> ImageTensorDataset:
    return load_mnist(shared_data, train=False, cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def fsdd_clips(shared_data, tmp_path_factory) -> ClipDataset:
    """FSDD takes 0-3 of every digit and speaker (240 clips), one model-space clip long."""
    audio = AudioConfig()
    return load_clip_folder(shared_data / "fsdd" / "recordings", select=lambda p: int(p.stem.rsplit("_", 1)[1]) < 4,
                            crop="center", sample_rate=audio.sample_rate, length=audio.length, trim_db=audio.trim_db,
                            cache_dir=tmp_path_factory.mktemp("cache"), progress=False)


def _image_case(mnist_test):
    """(evaluator, untrained G, replay of held-out real digits) against 3,000 real test digits."""
    extractor = load_feature_net(ASSETS / "digit-classifier.pt")
    modality = ImageModality(1, 28, 28)
    reference = reference_set(extractor, ImageTensorDataset(mnist_test.images[:3000]))
    evaluator = Evaluator(modality, extractor, reference, n=400, batch_size=150)
    torch.manual_seed(0)
    G, _ = dcgan.build(NetConfig(z_dim=8, g_width=8, d_width=8), modality.shape)
    return evaluator, G, Replay(modality.encode(mnist_test.images[3000:3400]))


def _audio_case(fsdd_clips):
    """The same against takes 0-1 (120 clips); the real samples are takes 2-3. Griffin-Lim kept short."""
    extractor = load_feature_net(ASSETS / "spoken-digit-classifier.pt")
    takes = [int(p.stem.rsplit("_", 1)[1]) for p in fsdd_clips.paths]
    ref_idx = [i for i, t in enumerate(takes) if t < 2]
    held_out = [i for i, t in enumerate(takes) if t >= 2]
    modality = MelModality.fit(AudioConfig(gl_iter=4), fsdd_clips.waveforms)
    reference = reference_set(extractor, ClipDataset([fsdd_clips.waveforms[i] for i in ref_idx],
                                                     sample_rate=fsdd_clips.sample_rate, length=fsdd_clips.length))
    evaluator = Evaluator(modality, extractor, reference, n=64, batch_size=32)
    torch.manual_seed(0)
    G, _ = dcgan.build(NetConfig(z_dim=8, g_width=4, d_width=4), modality.shape)
    real = modality.encode(fsdd_clips.with_crop("center").__getitems__(held_out[:64]))
    return evaluator, G, Replay(real)


@pytest.fixture(params=["image", "audio"])
def case(request, mnist_test, fsdd_clips):
    return _image_case(mnist_test) if request.param == "image" else _audio_case(fsdd_clips)


# The Evaluator contract ------------------------------------------------------------
def test_evaluator_returns_every_figure_finite_and_repeatable(case):
    evaluator, G, _ = case
    G.train()
    first = evaluator(G)
    assert first.keys() == FIGURES
    assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in first.values()), first
    assert first["n"] == evaluator.n and first["seconds"] > 0
    assert G.training, "the evaluator must give G back in the mode it found it"
    second = evaluator(G)
    for key in FIGURES - {"seconds"}:
        assert first[key] == second[key], key


def test_truncation_measures_the_noise_that_generate_draws(mnist_test):
    """With a truncation the evaluator feeds G the latents `generate --truncation` feeds it; without, plain N(0, 1)."""
    evaluator, _, real = _image_case(mnist_test)
    seen: list[torch.Tensor] = []
    real.register_forward_pre_hook(lambda module, args: seen.append(args[0].clone()))
    plain = evaluator(real)
    assert "truncation" not in plain
    assert torch.equal(torch.cat(seen), latents(evaluator.n, real.z_dim, evaluator.seed))
    seen.clear()
    truncated = Evaluator(evaluator.modality, evaluator.extractor, evaluator.reference, n=evaluator.n,
                          batch_size=evaluator.batch_size, truncation=0.5)(real)
    z = torch.cat(seen)
    assert truncated["truncation"] == 0.5 and z.abs().max() <= 0.5
    assert torch.equal(z, latents(evaluator.n, real.z_dim, evaluator.seed, truncation=0.5))


def test_a_conditional_generator_draws_every_class_in_turn_or_the_class_mix_it_is_given(mnist_test):
    evaluator, _, _ = _image_case(mnist_test)
    torch.manual_seed(0)
    G, _ = dcgan.build(NetConfig(z_dim=8, g_width=8, d_width=8, n_classes=10), evaluator.modality.shape)
    seen: list[torch.Tensor] = []
    G.register_forward_pre_hook(lambda module, args: seen.append(args[1].clone()))
    evaluator(G)
    assert torch.equal(torch.cat(seen), torch.arange(evaluator.n) % 10)
    seen.clear()
    mix = torch.tensor([0.5, 0.25, 0.25] + [0.0] * 7)
    evaluator(G, mix)
    assert torch.equal(torch.cat(seen), labels_in_proportion(mix, evaluator.n))
    with pytest.raises(ConfigError, match="10 shares"):
        evaluator(G, mix[:3])


def test_real_samples_beat_an_untrained_generator(case):
    evaluator, G, real = case
    untrained, replayed = evaluator(G), evaluator(real)
    assert real.modes and not any(real.modes), "samples must be drawn in eval mode"
    assert replayed["fid"] < untrained["fid"] / 4
    assert replayed["kid"] < untrained["kid"]
    assert replayed["classifier_score"] > untrained["classifier_score"] + 0.2
    assert replayed["classes"] > untrained["classes"]
    assert replayed["diversity_ratio"] > 0.5 > untrained["diversity_ratio"]


def test_real_digits_score_like_real_digits(mnist_test):
    evaluator, _, real = _image_case(mnist_test)
    figures = evaluator(real)
    assert figures["fid"] < 5
    assert figures["classifier_score"] > 8 and figures["classes"] == 10
    assert figures["precision"] > 0.8 and figures["recall"] > 0.8
    assert 0.8 < figures["diversity_ratio"] < 1.25


# Reference features and their cache -------------------------------------------------------
@pytest.fixture()
def counted_embed(monkeypatch) -> list[int]:
    """Rows embedded by FeatureExtractor.embed during the test."""
    rows: list[int] = []
    embed = FeatureExtractor.embed

    def counting(self, x, batch_size=500):
        rows.append(len(x))
        return embed(self, x, batch_size)

    monkeypatch.setattr(FeatureExtractor, "embed", counting)
    return rows


def test_reference_set_is_cached_and_a_change_of_data_misses_the_cache(mnist_test, tmp_path, counted_embed):
    extractor = load_feature_net(ASSETS / "digit-classifier.pt")
    dataset = ImageTensorDataset(mnist_test.images[:600].clone())
    first = reference_set(extractor, dataset, cache_dir=tmp_path, batch_size=250)
    assert sum(counted_embed) == 600 and len(first) == 600
    files = list((tmp_path / "eval-reference").glob("*.pt"))
    assert len(files) == 1

    counted_embed.clear()
    again = reference_set(extractor, dataset, cache_dir=tmp_path, batch_size=250)
    assert counted_embed == [], "the second call should read the cache"
    assert torch.equal(again.features, first.features) and torch.equal(again.probs, first.probs)

    dataset.images[17, 0, 14, 14] ^= 0xFF  # one pixel of one digit
    changed = reference_set(extractor, dataset, cache_dir=tmp_path, batch_size=250)
    assert sum(counted_embed) == 600, "changed data must not read the old features"
    assert len(list((tmp_path / "eval-reference").glob("*.pt"))) == 2
    assert not torch.equal(changed.features[17], first.features[17])
    torch.testing.assert_close(changed.features[18:], first.features[18:])


def test_reference_set_cache_depends_on_the_feature_network(mnist_test, tmp_path, counted_embed):
    dataset = ImageTensorDataset(mnist_test.images[:100])
    reference_set(load_feature_net(ASSETS / "digit-classifier.pt"), dataset, cache_dir=tmp_path)
    other = feature_net.FeatureNet(width=4)  # another network reading the same images
    path = feature_file.save_feature_net(tmp_path / "other.pt", other.eval(), feature_inputs.DigitImages(),
                                            class_names=[str(d) for d in range(10)], test_accuracy=0.1,
                                            trained_on="nothing")
    counted_embed.clear()
    reference_set(load_feature_net(path), dataset, cache_dir=tmp_path)
    assert sum(counted_embed) == 100
    assert len(list((tmp_path / "eval-reference").glob("*.pt"))) == 2


def test_a_damaged_cache_file_is_computed_again(mnist_test, tmp_path, counted_embed):
    extractor = load_feature_net(ASSETS / "digit-classifier.pt")
    dataset = ImageTensorDataset(mnist_test.images[:100])
    first = reference_set(extractor, dataset, cache_dir=tmp_path)
    (path,) = (tmp_path / "eval-reference").glob("*.pt")
    path.write_bytes(path.read_bytes()[:200])  # cut short
    counted_embed.clear()
    again = reference_set(extractor, dataset, cache_dir=tmp_path)
    assert sum(counted_embed) == 100
    assert torch.equal(again.features, first.features)
    assert torch.load(path, weights_only=True)["features"].shape == (100, extractor.net.feature_dim)


def test_feature_set_subset():
    s = FeatureSet(torch.arange(20.0).view(10, 2), torch.full((10, 3), 1 / 3))
    assert s.subset(10) is s and s.subset(50) is s
    a, b = s.subset(4, seed=1), s.subset(4, seed=1)
    assert len(a) == 4 and torch.equal(a.features, b.features)
    assert len(set(a.features[:, 0].tolist())) == 4, "rows are drawn without replacement"


# `multigan evaluate` on a tiny run ---------------------------------------------------------------
def _digit_folder(folder: Path, images: torch.Tensor) -> Path:
    folder.mkdir(parents=True)
    for i, image in enumerate(images):
        Image.fromarray(image[0].numpy()).save(folder / f"{i:04d}.png")
    return folder


def test_evaluate_command_on_a_tiny_checkpoint(mnist_test, tmp_path, monkeypatch, capsys):
    # A folder of real MNIST digits stands in for MNIST itself: the reference is 400 digits, not 60,000.
    monkeypatch.setenv("MULTIGAN_CACHE", str(tmp_path / "cache"))
    train_digits = _digit_folder(tmp_path / "train-digits", mnist_test.images[:400])
    other_digits = _digit_folder(tmp_path / "other-digits", mnist_test.images[400:700])
    cfg = mnist_quick()
    for key, value in {"data.source": "folder", "data.root": str(train_digits), "train.steps": 3,
                       "train.checkpoint_every": 3, "train.log_every": 3, "train.preview_every": 3,
                       "train.batch_size": 16, "train.device": "cpu", "model.g_width": 8, "model.d_width": 8}.items():
        cfg = cfg.override(key, value)
    run = tmp_path / "run"
    ckpt = train_run(cfg, run, progress=False)

    assert cli.main(["-q", "evaluate", str(ckpt), "--n", "200", "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    assert "FID" in printed and "classifier score" in printed
    result = json.loads((run / "evaluation.json").read_text())  # the default: beside the run's checkpoints
    assert FIGURES <= result.keys()
    assert result["n"] == 200 and result["step"] == 3
    assert result["reference_items"] == 400 and result["reference_data"] == str(train_digits)
    assert result["checkpoint"] == str(ckpt.resolve())
    assert result["label_draw"] is None  # a flat folder has no labels: G is unconditional
    assert Path(result["features"]) == ASSETS / "digit-classifier.pt"
    assert result["features_test_accuracy"] == pytest.approx(0.9945)
    assert all(math.isfinite(result[k]) for k in FIGURES)
    assert f"{result['fid']:.2f}" in printed
    # evaluation.json names each metric as the table does, beside the machine keys old readers use
    assert result["labels"]["fid"] == "classifier-feature FID (lower is better)" == metric_label("fid")
    assert result["labels"]["classifier_score"] == "classifier score"
    assert set(result["labels"]) == set(METRICS) - INCEPTION
    assert all(label in printed for label in result["labels"].values())
    assert "not with published Inception FIDs" in printed

    out = tmp_path / "elsewhere" / "figures.json"
    assert cli.main(["-q", "evaluate", str(run), "--n", "100", "--device", "cpu", "--seed", "1",
                     "--data-root", str(other_digits), "--out", str(out), "--truncation", "1.5"]) == 0
    other = json.loads(out.read_text())
    assert other["reference_items"] == 300 and other["seed"] == 1 and other["n"] == 100 and other["truncation"] == 1.5
    printed = capsys.readouterr().out
    assert str(out) in printed and "noise truncated at +-1.5" in printed


def test_evaluate_command_errors_are_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MULTIGAN_CACHE", str(tmp_path / "cache"))
    assert cli.main(["-q", "evaluate", str(tmp_path / "absent.pt")]) == 2
    assert "not found" in capsys.readouterr().err
    # A feature network is not a checkpoint to evaluate.
    assert cli.main(["-q", "evaluate", str(ASSETS / "digit-classifier.pt"), "--device", "cpu"]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_a_feature_network_for_another_modality_is_refused(mnist_test, tmp_path, monkeypatch):
    monkeypatch.setenv("MULTIGAN_CACHE", str(tmp_path / "cache"))
    dataset = ImageTensorDataset(mnist_test.images[:50])
    cfg = EvalConfig(n=10, features=str(ASSETS / "spoken-digit-classifier.pt"))
    with pytest.raises(ConfigError, match="spoken-digit-classifier"):
        make_evaluator(cfg, ImageModality(1, 28, 28), dataset)


def test_the_table_shows_no_kid_spread_when_there_is_none():
    figures = {"fid": 1.0, "kid": 0.0123, "kid_std": None, "classifier_score": 9.5, "classifier_score_se": 0.04}
    table = format_table({"generated": figures, "other": {**figures, "kid_std": 0.0021}})
    kid_row = next(line for line in table.splitlines() if line.startswith(metric_label("kid")))
    assert "0.0123 ± n/a" in kid_row and "0.0123 ± 0.0021" in kid_row
    assert "0.0000" not in table
    assert "9.50 ± 0.04" in table


def test_kid_spread_of_sets_within_one_subset_is_none(mnist_test):
    extractor = load_feature_net(ASSETS / "digit-classifier.pt")
    reference = reference_set(extractor, ImageTensorDataset(mnist_test.images[:300]))
    samples = reference_set(extractor, ImageTensorDataset(mnist_test.images[300:500]))
    from multigan.metrics.evaluate import measure

    figures = measure(samples, reference.subset(200))
    assert figures["kid_std"] is None and math.isfinite(figures["kid"])
    assert measure(samples, reference)["kid_std"] > 0  # the reference's subsets differ: a real spread
