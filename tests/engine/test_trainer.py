"""The training loop: determinism, exact resume, kills and Ctrl-C, logs, previews.

In-process runs use 256 random 1x16x16 images (with 4 labels for
class-conditional runs) and nets 8 channels wide, so a run takes a fraction
of a second. Subprocess runs go through `python -m multigan`.
"""
from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from multigan import run
from multigan.restore import describe, restore
from multigan.config import LOSS_KINDS, DataConfig, LossConfig, NetConfig, RunConfig, TrainConfig
from multigan.data.tensors import ImageTensorDataset, Labelled
from multigan.engine.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint
from multigan.engine.trainer import train
from multigan.errors import CheckpointError, ConfigError, DataError
from multigan.modalities.image import ImageModality
from multigan.nets import dcgan
from same_state import assert_same

REPO_ROOT = Path(__file__).resolve().parents[2]
SHAPE = (1, 16, 16)
DATASET = ImageTensorDataset(torch.randint(0, 256, (256,) + SHAPE, dtype=torch.uint8, generator=torch.Generator().manual_seed(0)))
N_CLASSES = 4
LABELS = torch.arange(256) % N_CLASSES
LABELLED = Labelled(ImageTensorDataset(DATASET.images, LABELS), N_CLASSES)
LOG_KEYS = {"step", "d_adv", "g_adv", "d_real", "d_fake", "grad_norm_D", "grad_norm_G", "img_per_s"}


pytestmark = pytest.mark.usefixtures("one_thread")


def _cfg(steps=6, kind="nonsaturating", weights=None, d_norm="batch", n_classes=0, reg_every=1, model=None,
         **train_settings) -> RunConfig:
    settings = dict(steps=steps, batch_size=16, device="cpu", ema_decay=0.9, ema_rampup=2, log_every=3,
                    preview_every=1000, checkpoint_every=1000, n_preview=8)
    settings.update(train_settings)
    return RunConfig(
        data=DataConfig(source="folder", channels=1, height=16, width=16),
        model=NetConfig(z_dim=8, g_width=8, d_width=8, d_norm=d_norm, n_classes=n_classes, **(model or {})),
        loss=LossConfig(kind=kind, weights=weights or {}, reg_every=reg_every),
        train=TrainConfig(**settings),
    )


def _run(cfg: RunConfig, run_dir: Path, resume=None, dataset=None) -> Path:
    torch.manual_seed(1234)  # the networks' initial weights
    G, D = dcgan.build(cfg.model, SHAPE)
    dataset = dataset or (LABELLED if cfg.model.n_classes else DATASET)
    return train(cfg, ImageModality(*SHAPE), G, D, dataset, run_dir, resume=resume, progress=False)


def _log(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


# Determinism --------------------------------------------------------------------
def test_same_seed_gives_bitwise_identical_runs(tmp_path):
    cfg = _cfg(steps=5)
    a = load_checkpoint(_run(cfg, tmp_path / "a"))
    b = load_checkpoint(_run(cfg, tmp_path / "b"))
    assert a["step"] == b["step"] == 5
    for key in ("G", "D", "G_ema", "opt_G", "opt_D", "noise", "rng"):
        assert_same(a[key], b[key], key)

    c = load_checkpoint(_run(cfg.override("train.seed", 1), tmp_path / "c"))
    for key in ("G", "D", "G_ema"):
        assert any(not torch.equal(a[key][k], c[key][k]) for k in a[key] if a[key][k].is_floating_point()), key


def test_train_run_is_reproducible_within_one_process(tmp_path, monkeypatch):
    # run.train_run builds G and D from the global RNG before train() seeds it,
    # so the initial weights depend on whatever ran before (here: the first run).
    monkeypatch.setattr(run, "load_data", lambda data_cfg, progress=True: (DATASET, ImageModality(*SHAPE)))
    cfg = _cfg(steps=2)
    a = load_checkpoint(run.train_run(cfg, tmp_path / "a", progress=False))
    b = load_checkpoint(run.train_run(cfg, tmp_path / "b", progress=False))
    for key in ("G", "D"):
        assert_same(a[key], b[key], key)


# Exact resume -----------------------------------------------------------------
RESUME_CASES = {
    "default": dict(),
    "wgan-gp-n_critic-2": dict(kind="wasserstein", weights={"gp": 10.0}, d_norm="layer", n_critic=2),
    "r1": dict(weights={"r1": 5.0}),
}
# Class-conditional cases: (run settings, model settings).
CONDITIONAL_CASES = {
    "default": (dict(), dict()),
    "wgan-gp-n_critic-2": (RESUME_CASES["wgan-gp-n_critic-2"], dict()),
    "aux-lazy-r1": (dict(weights={"r1": 5.0}, reg_every=2), dict(d_cond="aux")),
}


@pytest.mark.parametrize("case", sorted(RESUME_CASES))
def test_resume_is_exact(tmp_path, case):
    n = 4
    settings = RESUME_CASES[case]
    straight = load_checkpoint(_run(_cfg(steps=2 * n, **settings), tmp_path / "straight"))

    half = _run(_cfg(steps=n, **settings), tmp_path / "split")
    assert load_checkpoint(half)["step"] == n
    halfway = {k: v.clone() for k, v in load_checkpoint(half)["G"].items()}
    resumed = load_checkpoint(_run(_cfg(steps=2 * n, **settings), tmp_path / "split", resume=half))

    assert resumed["step"] == straight["step"] == 2 * n
    for key in ("G", "D", "G_ema", "opt_G", "opt_D", "scaler_G", "scaler_D", "noise", "rng"):
        assert_same(straight[key], resumed[key], key)
    assert any(not torch.equal(halfway[k], resumed["G"][k]) for k in halfway), "the resumed run did not train"
    # The penalty really ran (its log key exists and is positive).
    for term in ("gp", "r1"):
        if settings.get("weights", {}).get(term):
            values = [r[term] for r in _log(tmp_path / "straight")]
            assert values and all(math.isfinite(v) and v > 0 for v in values)


def test_the_ema_generator_saves_batch_norm_statistics_of_its_own_samples(tmp_path):
    """Standing statistics change what G_ema saves and nothing else: G, D and every RNG are the same."""
    settled = load_checkpoint(_run(_cfg(steps=6, n_classes=N_CLASSES), tmp_path / "settled"))
    copied = load_checkpoint(_run(_cfg(steps=6, n_classes=N_CLASSES, ema_bn_batches=0), tmp_path / "copied"))
    for key in ("G", "D", "opt_G", "opt_D", "noise", "rng"):
        assert_same(settled[key], copied[key], key)
    stats = [k for k in settled["G_ema"] if k.endswith(("running_mean", "running_var"))]
    assert stats
    for k in stats:
        assert torch.equal(copied["G_ema"][k], copied["G"][k])  # without: the live G's, copied
        assert not torch.equal(settled["G_ema"][k], settled["G"][k]), k
    weights = [k for k in settled["G_ema"] if k not in stats and not k.endswith("num_batches_tracked")]
    for k in weights:
        assert torch.equal(settled["G_ema"][k], copied["G_ema"][k]), k
    # They are the EMA generator's own: its eval-mode samples match its batch-statistics samples.
    G = restore(latest_checkpoint(tmp_path / "settled" / "checkpoints")).G
    z, y = torch.randn(512, 8), torch.arange(512) % N_CLASSES
    with torch.no_grad():
        evaluated, batch = G(z, y), G.train()(z, y)
    assert (evaluated - batch).abs().mean() < 0.02


def test_channels_last_trains_the_same_nets_as_nchw(tmp_path):
    """NHWC changes the layout, not the maths: the same run's weights agree to float rounding."""
    nchw = load_checkpoint(_run(_cfg(steps=4, n_classes=N_CLASSES), tmp_path / "nchw"))
    nhwc = load_checkpoint(_run(_cfg(steps=4, n_classes=N_CLASSES, channels_last=True), tmp_path / "nhwc"))
    for net in ("G", "D", "G_ema"):
        for k, v in nchw[net].items():
            if v.is_floating_point():
                assert torch.allclose(nhwc[net][k], v, rtol=1e-3, atol=1e-5), (net, k)
    torch.manual_seed(1234)  # _run's initial weights
    start = dcgan.build(_cfg(n_classes=N_CLASSES).model, SHAPE)[0].state_dict()
    # Both trained (Adam moves a weight by about lr = 2e-4 a step), far beyond the tolerance above.
    assert max((nchw["G"][k] - v).abs().max() for k, v in start.items() if v.is_floating_point()) > 5e-4


def test_resume_refuses_a_different_model(tmp_path):
    half = _run(_cfg(steps=2), tmp_path / "a")
    cfg = _cfg(steps=4)
    other = RunConfig(data=cfg.data, model=NetConfig(z_dim=8, g_width=16, d_width=8), loss=cfg.loss, train=cfg.train)
    torch.manual_seed(0)
    G, D = dcgan.build(other.model, SHAPE)
    with pytest.raises(CheckpointError):
        train(other, ImageModality(*SHAPE), G, D, DATASET, tmp_path / "b", resume=half, progress=False)


# Class-conditional runs ------------------------------------------------------------
@pytest.mark.parametrize("case", sorted(CONDITIONAL_CASES))
def test_conditional_resume_is_exact(tmp_path, case):
    n = 3
    settings, model = CONDITIONAL_CASES[case]
    settings = dict(settings, n_classes=N_CLASSES, model=model)
    straight = load_checkpoint(_run(_cfg(steps=2 * n, **settings), tmp_path / "straight"))

    half = _run(_cfg(steps=n, **settings), tmp_path / "split")
    halfway = {k: v.clone() for k, v in load_checkpoint(half)["G"].items()}
    resumed = load_checkpoint(_run(_cfg(steps=2 * n, **settings), tmp_path / "split", resume=half))

    assert resumed["step"] == straight["step"] == 2 * n
    for key in ("G", "D", "G_ema", "opt_G", "opt_D", "noise", "rng", "label_mix"):
        assert_same(straight[key], resumed[key], key)
    assert any(not torch.equal(halfway[k], resumed["G"][k]) for k in halfway), "the resumed run did not train"
    assert (tmp_path / "straight" / "previews" / f"step-{2 * n:07d}.png").is_file()
    records = _log(tmp_path / "straight")
    assert records and all(math.isfinite(v) for r in records for v in r.values())


def test_conditional_checkpoint_restores_a_conditional_G(tmp_path):
    path = _run(_cfg(steps=2, n_classes=N_CLASSES), tmp_path)
    state = load_checkpoint(path)
    restored = restore(path)
    assert restored.config.model.n_classes == N_CLASSES and restored.step == 2
    assert restored.G.n_classes == N_CLASSES and not restored.G.training
    assert_same(dict(restored.G.state_dict()), dict(state["G_ema"]), "G_ema")
    z = torch.randn(N_CLASSES, 8)
    x = restored.G(z, torch.arange(N_CLASSES))
    assert x.shape == (N_CLASSES, *SHAPE)
    with pytest.raises(ValueError):
        restored.G(z)
    # Its settings cannot resume as an unconditional run.
    cfg = _cfg(steps=4)
    torch.manual_seed(0)
    G, D = dcgan.build(cfg.model, SHAPE)
    with pytest.raises(CheckpointError):
        train(cfg, ImageModality(*SHAPE), G, D, DATASET, tmp_path / "other", resume=path, progress=False)


def test_conditional_training_reads_the_real_labels(tmp_path):
    # The same images and noise with other real labels: D must learn something else.
    cfg = _cfg(steps=2, n_classes=N_CLASSES)
    shifted = Labelled(ImageTensorDataset(DATASET.images, (LABELS + 1) % N_CLASSES), N_CLASSES)
    a = load_checkpoint(_run(cfg, tmp_path / "a"))
    b = load_checkpoint(_run(cfg, tmp_path / "b", dataset=shifted))
    again = load_checkpoint(_run(cfg, tmp_path / "again"))
    assert_same(a["D"], again["D"], "D")
    for key in ("D", "G"):
        assert any(not torch.equal(a[key][k], b[key][k]) for k in a[key] if a[key][k].is_floating_point()), key


# Three quarters class 0, a quarter class 1, none of classes 2 and 3.
SKEWED = Labelled(ImageTensorDataset(DATASET.images, (torch.arange(256) % 4 == 3).long()), N_CLASSES)


def _labels_G_was_given(cfg: RunConfig, run_dir: Path, resume=None, evaluate=None) -> torch.Tensor:
    """Every label G was given in train mode (the EMA copy's batch-norm settling included, previews not)."""
    torch.manual_seed(1234)
    G, D = dcgan.build(cfg.model, SHAPE)
    seen: list[torch.Tensor] = []
    G.register_forward_pre_hook(lambda module, args: seen.append(args[1].clone()) if module.training else None)
    train(cfg, ImageModality(*SHAPE), G, D, SKEWED, run_dir, resume=resume, progress=False, evaluate=evaluate)
    return torch.cat(seen)


def test_G_draws_its_labels_in_the_data_s_class_mix_and_the_checkpoint_keeps_it(tmp_path):
    mixes = []

    def evaluate(G, label_mix):
        mixes.append(label_mix)
        return {"fid": 1.0}

    y = _labels_G_was_given(_cfg(steps=40, n_classes=N_CLASSES).override("eval.every", 20), tmp_path / "data", evaluate=evaluate)
    shares = torch.bincount(y, minlength=N_CLASSES) / len(y)
    assert shares[2] == shares[3] == 0 and abs(shares[0] - 0.75) < 0.05, shares
    path = latest_checkpoint(tmp_path / "data")
    expected = torch.tensor([0.75, 0.25, 0.0, 0.0])
    assert torch.equal(load_checkpoint(path)["label_mix"], expected) and torch.equal(restore(path).label_mix, expected)
    assert describe(path)["classes"] == "4, drawn in the training data's proportions: 0 0.750, 1 0.250, 2 0.000, 3 0.000"
    assert len(mixes) == 2 and all(torch.equal(m, expected) for m in mixes)  # evaluation draws the same mix

    y = _labels_G_was_given(_cfg(steps=40, n_classes=N_CLASSES, labels="uniform"), tmp_path / "uniform")
    shares = torch.bincount(y, minlength=N_CLASSES) / len(y)
    assert torch.all((shares - 0.25).abs() < 0.05), shares
    assert "label_mix" not in load_checkpoint(latest_checkpoint(tmp_path / "uniform"))
    assert restore(tmp_path / "uniform").label_mix is None
    assert describe(tmp_path / "uniform")["classes"] == "4 (0..3, unnamed), drawn uniformly in training"


def test_a_checkpoint_without_a_class_mix_resumes_with_uniform_labels(tmp_path):
    """Checkpoints written before the mix was kept trained with uniform labels: resuming one goes on so."""
    _labels_G_was_given(_cfg(steps=3, n_classes=N_CLASSES), tmp_path / "old")
    path = latest_checkpoint(tmp_path / "old")
    state = load_checkpoint(path)
    del state["label_mix"]
    torch.save(state, path)
    y = _labels_G_was_given(_cfg(steps=40, n_classes=N_CLASSES), tmp_path / "old", resume=path)
    assert torch.bincount(y, minlength=N_CLASSES).min() > 0
    assert "label_mix" not in load_checkpoint(latest_checkpoint(tmp_path / "old"))


def test_a_class_mix_that_does_not_fit_G_is_refused_on_resume_and_restore(tmp_path):
    _labels_G_was_given(_cfg(steps=3, n_classes=N_CLASSES), tmp_path / "run")
    path = latest_checkpoint(tmp_path / "run")
    state = load_checkpoint(path)
    state["label_mix"] = torch.tensor([0.5, 0.5])
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="class mix"):
        _labels_G_was_given(_cfg(steps=6, n_classes=N_CLASSES), tmp_path / "run", resume=path)
    with pytest.raises(CheckpointError, match="class mix"):
        restore(path)


NAMES = ["circle", "heart", "star", "moon"]


def test_the_checkpoint_keeps_the_data_s_class_names_and_a_resume_adds_them_to_an_old_one(tmp_path):
    named = Labelled(ImageTensorDataset(DATASET.images, SKEWED.labels, NAMES), N_CLASSES)
    cfg = _cfg(steps=3, n_classes=N_CLASSES)
    path = _run(cfg, tmp_path / "named", dataset=named)
    assert load_checkpoint(path)["class_names"] == NAMES and restore(path).class_names == NAMES
    assert describe(path)["classes"] == ("4, drawn in the training data's proportions: "
                                         "circle 0.750, heart 0.250, star 0.000, moon 0.000")
    assert "class_names" not in load_checkpoint(_run(cfg, tmp_path / "unnamed"))  # the data names no class
    # A checkpoint from before names were kept gets them from the data it resumes on.
    state = load_checkpoint(path)
    del state["class_names"]
    torch.save(state, path)
    assert restore(path).class_names is None
    resumed = _run(_cfg(steps=5, n_classes=N_CLASSES), tmp_path / "named", dataset=named, resume=path)
    assert load_checkpoint(resumed)["class_names"] == NAMES


@pytest.mark.parametrize("names", [["circle", "heart"], ["a", "b", "c", 4], "abcd"])
def test_class_names_that_do_not_fit_G_are_refused_on_resume_and_restore(tmp_path, names):
    named = Labelled(ImageTensorDataset(DATASET.images, SKEWED.labels, NAMES), N_CLASSES)
    path = _run(_cfg(steps=2, n_classes=N_CLASSES), tmp_path / "run", dataset=named)
    state = load_checkpoint(path)
    state["class_names"] = names
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="class names"):
        restore(path)
    if isinstance(names, list) and len(names) != N_CLASSES:
        with pytest.raises(CheckpointError, match="class names"):
            _run(_cfg(steps=4, n_classes=N_CLASSES), tmp_path / "run", dataset=named, resume=path)


def test_an_auxiliary_classifier_D_learns_the_labels_and_G_learns_to_match_them(tmp_path):
    # Each class its own brightness, so its label can be told from the image alone.
    noise = torch.randint(0, 20, (256,) + SHAPE, generator=torch.Generator().manual_seed(0))
    images = (LABELS[:, None, None, None] * 60 + 40 + noise).to(torch.uint8)
    brightness = Labelled(ImageTensorDataset(images, LABELS), N_CLASSES)
    cfg = _cfg(steps=60, n_classes=N_CLASSES, model=dict(d_cond="aux"), log_every=10)
    cfg = cfg.override("optim.lr_d", 2e-3).override("optim.lr_g", 2e-3)
    state = load_checkpoint(_run(cfg, tmp_path, dataset=brightness))
    records = _log(tmp_path)
    assert all({"d_cls", "g_cls"} <= r.keys() for r in records)
    chance = math.log(N_CLASSES)  # cross-entropy of a uniform guess
    assert records[0]["d_cls"] > 0.5 * chance and records[-1]["d_cls"] < 0.1 * chance, [r["d_cls"] for r in records]
    assert records[-1]["g_cls"] < 0.5 * chance, [r["g_cls"] for r in records]  # G draws what it was asked
    # D's class head itself, on a batch of real images as D sees them in training (batch statistics: its
    # running statistics average real and generated batches, which no single batch looks like).
    _, D = dcgan.build(cfg.model, SHAPE)
    D.load_state_dict(state["D"])
    with torch.no_grad():
        x = ImageModality(*SHAPE).encode(images[:64])
        _, logits = D(x, None, classify=True)
    assert (logits.argmax(1) == LABELS[:64]).float().mean() > 0.9


def test_train_run_wraps_labelled_data_for_a_conditional_model(tmp_path, monkeypatch):
    labelled_images = ImageTensorDataset(DATASET.images, LABELS)
    monkeypatch.setattr(run, "load_data", lambda data_cfg, progress=True: (labelled_images, ImageModality(*SHAPE)))
    cfg = _cfg(steps=2, n_classes=N_CLASSES)
    state = load_checkpoint(run.train_run(cfg, tmp_path / "a", progress=False))
    assert state["step"] == 2 and RunConfig.from_json(state["config"]).model.n_classes == N_CLASSES
    # More classes in the data than the model has, or no labels at all: a DataError before any training.
    for dataset, n_classes in ((labelled_images, 3), (DATASET, N_CLASSES)):
        monkeypatch.setattr(run, "load_data", lambda data_cfg, progress=True, d=dataset: (d, ImageModality(*SHAPE)))
        with pytest.raises(DataError):
            run.train_run(_cfg(steps=2, n_classes=n_classes), tmp_path / f"refused-{n_classes}", progress=False)
        assert not (tmp_path / f"refused-{n_classes}").exists()


# Losses, logs, previews, checkpoints ---------------------------------------------
@pytest.mark.parametrize("kind", LOSS_KINDS)
def test_every_loss_trains_and_logs_finite_figures(tmp_path, kind):
    path = _run(_cfg(steps=3, kind=kind, log_every=1), tmp_path)
    records = _log(tmp_path)
    assert [r["step"] for r in records] == [1, 2, 3]
    for r in records:
        assert LOG_KEYS <= r.keys(), LOG_KEYS - r.keys()
        assert all(math.isfinite(v) for v in r.values()), r
        assert r["grad_norm_D"] > 0 and r["grad_norm_G"] > 0 and r["img_per_s"] > 0
        if kind in ("minimax", "nonsaturating"):
            assert 0 <= r["d_real"] <= 1 and 0 <= r["d_fake"] <= 1
    assert load_checkpoint(path)["step"] == 3
    assert json.loads((tmp_path / "config.json").read_text())["loss"]["kind"] == kind


def test_previews_and_keep_checkpoints(tmp_path):
    _run(_cfg(steps=12, checkpoint_every=2, keep_checkpoints=2, preview_every=5, log_every=4), tmp_path)
    previews = sorted(p.name for p in (tmp_path / "previews").iterdir())
    assert previews == ["step-0000005.png", "step-0000010.png", "step-0000012.png"]
    with Image.open(tmp_path / "previews" / previews[-1]) as im:
        im.load()
        assert im.format == "PNG" and min(im.size) > 16  # a grid of several 16x16 samples
    ckpts = tmp_path / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["latest.pt", "step-0000010.pt", "step-0000012.pt"]
    assert load_checkpoint(latest_checkpoint(tmp_path))["step"] == 12
    assert [r["step"] for r in _log(tmp_path)] == [4, 8, 12]


def test_a_finished_run_does_nothing_on_resume(tmp_path):
    last = _run(_cfg(steps=3), tmp_path)
    before = last.read_bytes()
    again = _run(_cfg(steps=3), tmp_path, resume=last)
    assert load_checkpoint(again)["step"] == 3
    assert last.read_bytes() == before
    assert [r["step"] for r in _log(tmp_path)] == [3]


# Subprocesses -------------------------------------------------------------------
def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(PYTHONPATH=str(REPO_ROOT), MULTIGAN_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return env


def _start(args: list[str], tmp_path: Path, name: str) -> tuple[subprocess.Popen, Path]:
    err = tmp_path / f"{name}.stderr"
    with open(tmp_path / f"{name}.stdout", "w") as stdout, open(err, "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "multigan", *args], cwd=tmp_path, env=_env(tmp_path),
                                stdout=stdout, stderr=stderr)
    return proc, err


def _wait_for(condition, proc: subprocess.Popen, err: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            pytest.fail(f"training exited early ({proc.returncode}):\n{err.read_text()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for training:\n{err.read_text()}")
        time.sleep(0.02)


def _settings(path: Path, data: dict, **train_settings) -> Path:
    cfg = RunConfig(
        name="kill-test",
        data=DataConfig(**data),
        model=NetConfig(z_dim=8, g_width=8, d_width=8),
        train=TrainConfig(**{"steps": 100_000, "batch_size": 16, "device": "cpu", "ema_rampup": 10, "n_preview": 8,
                             "preview_every": 100_000, **train_settings}),
    )
    path.write_text(cfg.to_json())
    return path


def test_sigkill_leaves_a_resumable_checkpoint(tmp_path, shared_data):
    settings = _settings(tmp_path / "settings.json", dict(source="mnist", root=str(shared_data)),
                         log_every=5, checkpoint_every=5, keep_checkpoints=3)
    out = tmp_path / "run"
    ckpts = out / "checkpoints"
    proc, err = _start(["train", str(settings), "--out", str(out), "--no-progress"], tmp_path, "first")
    try:
        _wait_for(lambda: bool(list_checkpoints(ckpts)), proc, err)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    # What a kill during a write leaves behind: hidden temporary files.
    (ckpts / ".step-9999999.pt.k1ll3d.tmp").write_bytes(b"PK\x03\x04 half")
    (ckpts / ".latest.pt.tmp").write_bytes(b"")
    for path in list_checkpoints(ckpts):
        assert not path.name.startswith("."), path
        assert load_checkpoint(path)["step"] % 5 == 0
    latest = latest_checkpoint(out)
    assert latest.parent == ckpts and (latest.name == "latest.pt" or re.fullmatch(r"step-\d+\.pt", latest.name))
    step = load_checkpoint(latest)["step"]
    assert step >= 5 and step % 5 == 0

    n_before = len(_log(out))
    final = step + 10
    proc, err = _start(["train", str(settings), "--out", str(out), "--no-progress", "--resume", "--steps", str(final)],
                       tmp_path, "resumed")
    assert proc.wait(timeout=180) == 0, err.read_text()
    stderr = err.read_text()
    assert f"at step {step}" in stderr and "Traceback" not in stderr
    steps = [r["step"] for r in _log(out)]
    assert steps == list(range(5, final + 1, 5)), "one log line per step: the lines past the checkpoint were dropped"
    assert n_before >= step // 5
    assert load_checkpoint(latest_checkpoint(out))["step"] == final
    assert (ckpts / f"step-{final:07d}.pt").is_file()
    assert f"step-{final:07d}.pt" in (tmp_path / "resumed.stdout").read_text()
    assert len(list_checkpoints(ckpts)) <= 3


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_a_stop_signal_saves_and_exits_with_a_message(tmp_path, sig):
    # Ctrl-C; SIGTERM from timeout, docker stop, Slurm, systemd and Kubernetes; SIGHUP from a closed terminal.
    settings = _settings(tmp_path / "settings.json", dict(source="folder", root=str(_image_folder(tmp_path)),
                                                          height=16, width=16), log_every=1, checkpoint_every=100_000)
    out = tmp_path / "run"
    proc, err = _start(["train", str(settings), "--out", str(out), "--no-progress"], tmp_path, "run")
    try:
        _wait_for(lambda: (out / "log.jsonl").is_file() and len((out / "log.jsonl").read_text().splitlines()) >= 3,
                  proc, err)
        proc.send_signal(sig)
        code = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    stderr = err.read_text()
    assert code == 128 + sig, stderr
    match = re.search(rf"interrupted at step (\d+) by {sig.name}; saved (\S+)", stderr)
    assert match and "Traceback" not in stderr, stderr
    step = int(match.group(1))
    state = load_checkpoint(latest_checkpoint(out))
    assert state["step"] == step == _log(out)[-1]["step"]
    assert (out / "checkpoints" / f"step-{step:07d}.pt").is_file()
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.endswith(".tmp")]
    events = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    assert events[-1]["kind"] == "stopped" and sig.name in events[-1]["message"]


def test_two_runs_in_one_folder_are_refused(tmp_path):
    folder = _image_folder(tmp_path)
    settings = _settings(tmp_path / "settings.json", dict(source="folder", root=str(folder), height=16, width=16),
                         log_every=1, checkpoint_every=2)
    out = tmp_path / "run"
    first, err = _start(["train", str(settings), "--out", str(out), "--no-progress"], tmp_path, "first")
    try:
        _wait_for(lambda: bool(list_checkpoints(out / "checkpoints")), first, err)
        for name, extra in (("second", []), ("resume", ["--resume"])):
            proc, err2 = _start(["train", str(settings), "--out", str(out), "--no-progress", *extra], tmp_path, name)
            assert proc.wait(timeout=120) == 2
            lines = err2.read_text().strip().splitlines()
            assert lines and f"in use by process {first.pid}" in lines[-1] and "Traceback" not in err2.read_text()
        assert first.poll() is None, "the first run goes on"
    finally:
        first.kill()
        first.wait(timeout=30)


def _image_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir(exist_ok=True)
    g = torch.Generator().manual_seed(0)
    for i in range(48):
        pixels = torch.randint(0, 256, (16, 16), dtype=torch.uint8, generator=g).numpy()
        Image.fromarray(pixels).save(folder / f"{i:03d}.png")
    return folder


# Divergence that stays finite ----------------------------------------------------------
def test_a_huge_learning_rate_is_caught_although_everything_stays_finite(tmp_path):
    # Adam at lr 1e4: G's loss reaches ~1e11 and weights ~1e24 with no NaN on the way.
    cfg = _cfg(steps=12, log_every=1, nan_retries=30, nan_lr_factor=0.01).override("optim.lr_g", 1e4).override("optim.lr_d", 1e4)
    last = _run(cfg, tmp_path)
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert events and all(e["kind"] in ("restored", "d-won") for e in events)
    assert any(e["kind"] == "restored" and "beyond" in e["message"] for e in events), events
    state = load_checkpoint(last)
    for key in ("G", "D", "G_ema"):  # the weights the guard bounds (BN statistics are not weights)
        assert all(v.abs().max() < 1e4 for k, v in state[key].items() if v.is_floating_point() and "running" not in k)


def test_a_discriminator_that_has_won_is_an_event(tmp_path):
    # Hinge D loss is exactly 0 once D separates every pair by the margin: here D is far faster than G.
    cfg = _cfg(steps=40, kind="hinge", log_every=5, d_norm="none").override("optim.lr_d", 5e-3).override("optim.lr_g", 1e-6)
    _run(cfg, tmp_path)
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [e["kind"] for e in events] == ["d-won"], events  # once, not at every log line
    assert "no signal" in events[0]["message"]


# Precision and compile ----------------------------------------------------------------
def test_bf16_trains_on_the_cpu_and_fp16_falls_back(tmp_path, caplog):
    path = _run(_cfg(steps=3, precision="bf16", log_every=1, weights={"r1": 1.0}), tmp_path / "bf16")
    state = load_checkpoint(path)
    assert all(v.dtype == torch.float32 for v in state["G"].values() if v.is_floating_point())  # weights stay fp32
    records = _log(tmp_path / "bf16")
    assert all(math.isfinite(r["r1"]) and r["r1"] > 0 for r in records)
    with caplog.at_level("WARNING", logger="multigan"):
        _run(_cfg(steps=1, precision="fp16"), tmp_path / "fp16")
    assert "not available on cpu" in caplog.text


@pytest.mark.slow
def test_a_compiled_run_resumes_uncompiled_and_back(tmp_path):
    n = 2
    straight = load_checkpoint(_run(_cfg(steps=3 * n), tmp_path / "straight"))
    half = _run(_cfg(steps=n, compile=True), tmp_path / "split")
    state = load_checkpoint(half)
    assert not any("_orig_mod" in k or k.startswith("module.") for key in ("G", "D", "G_ema") for k in state[key])
    again = _run(_cfg(steps=2 * n), tmp_path / "split", resume=half)
    last = load_checkpoint(_run(_cfg(steps=3 * n, compile=True), tmp_path / "split", resume=again))
    assert last["step"] == 3 * n
    for key in ("G", "D", "G_ema"):
        for k, v in straight[key].items():
            assert torch.allclose(v.float(), last[key][k].float(), atol=1e-4), f"{key}.{k}"
    restored = restore(half)  # generation never needs compile
    assert restored.G(torch.randn(2, 8)).shape == (2, *SHAPE)


# Differentiable augmentation ------------------------------------------------------------
def test_augmentation_changes_what_D_learns_and_resumes_exactly(tmp_path):
    plain = load_checkpoint(_run(_cfg(steps=3), tmp_path / "plain"))
    cfg = _cfg(steps=6, weights={"r1": 1.0}).override("loss.augment", 0.5)
    straight = load_checkpoint(_run(cfg, tmp_path / "straight"))
    half = _run(cfg.override("train.steps", 3), tmp_path / "split")
    assert any(not torch.equal(plain["D"][k], load_checkpoint(half)["D"][k]) for k in plain["D"])
    resumed = load_checkpoint(_run(cfg, tmp_path / "split", resume=half))
    for key in ("G", "D", "G_ema", "noise"):
        assert_same(straight[key], resumed[key], key)


def test_augmentation_needs_an_adapter_that_offers_it(tmp_path):
    class Plain(ImageModality):
        augment = None

    cfg = _cfg(steps=1).override("loss.augment", 0.5)
    torch.manual_seed(0)
    G, D = dcgan.build(cfg.model, SHAPE)
    with pytest.raises(ConfigError, match="no augmentation"):
        train(cfg, Plain(*SHAPE), G, D, DATASET, tmp_path, progress=False)


# The progress bar --------------------------------------------------------------------
def _train_with_progress(cfg: RunConfig, run_dir: Path) -> None:
    torch.manual_seed(0)
    G, D = dcgan.build(cfg.model, SHAPE)
    train(cfg, ImageModality(*SHAPE), G, D, DATASET, run_dir, progress=True)


def test_progress_to_a_file_is_a_few_labelled_lines(tmp_path, capsys):
    _train_with_progress(_cfg(steps=60, log_every=10), tmp_path)
    err = capsys.readouterr().err  # pytest's capture is not a terminal, as a redirected log is not
    lines = [line for line in err.splitlines() if line.startswith("train:")]
    assert "\r" not in err
    assert 3 <= len(lines) <= 21  # one per 5% of the run at most, not one per step
    assert lines[-1].startswith("train: step 60/60 (100%)") and " D=" in lines[-1] and " G=" in lines[-1]


def test_progress_on_a_terminal_of_0_columns(tmp_path, monkeypatch):
    master, slave = os.openpty()  # a fresh pseudo-terminal reports 0 columns
    monkeypatch.delenv("COLUMNS", raising=False)
    stream = os.fdopen(slave, "w")
    monkeypatch.setattr(sys, "stderr", stream)
    try:
        _train_with_progress(_cfg(steps=6), tmp_path)
        stream.flush()
        text = os.read(master, 65536).decode().replace("\r\n", "\n")  # the terminal's own line ends
    finally:
        stream.close()
        os.close(master)
    assert "\r" not in text and "train: step 6/6 (100%)" in text
    assert load_checkpoint(latest_checkpoint(tmp_path))["step"] == 6


# The collapse warning ------------------------------------------------------------------
class LowDiversity:
    """A stand-in evaluator whose samples are always a tenth as diverse as the data."""

    def __call__(self, G, label_mix=None) -> dict[str, float]:
        return {"fid": 50.0, "diversity_ratio": 0.1}


@pytest.mark.parametrize("steps, ema_rampup, first", [(10, 6, 6), (20, 1, 4)])
def test_the_collapse_warning_waits_for_the_ema_and_a_share_of_the_run(tmp_path, steps, ema_rampup, first):
    # Waits for max(ema_rampup, 20% of the steps): a young G is not diverse yet, which is no collapse.
    cfg = _cfg(steps=steps, ema_rampup=ema_rampup, log_every=1).override("eval.every", 1)
    torch.manual_seed(0)
    G, D = dcgan.build(cfg.model, SHAPE)
    train(cfg, ImageModality(*SHAPE), G, D, DATASET, tmp_path, progress=False, evaluate=LowDiversity())
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    warned = [e["step"] for e in events if e["kind"] == "low-diversity"]
    assert warned == list(range(first, steps + 1))
    metrics = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == list(range(1, steps + 1))  # measured (and logged) from the start
