"""MNIST end to end: train, stop, resume, generate from the checkpoint alone, and the recipe script."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from multigan.registry import build_nets
from multigan.restore import restore
from multigan.run import train_run
from multigan.engine.checkpoint import load_checkpoint
from multigan.generate import generate, labels_for, synthesize
from multigan.presets import mnist_quick

REPO_ROOT = Path(__file__).resolve().parents[1]


def _settings(shared_data: Path, steps: int):
    cfg = mnist_quick()
    for key, value in {
        "data.root": str(shared_data), "train.steps": steps, "train.checkpoint_every": 15,
        "train.preview_every": 15, "train.log_every": 5, "train.device": "cpu",
        "model.g_width": 16, "model.d_width": 16, "train.batch_size": 32,  # a few seconds on 2 CPU cores
    }.items():
        cfg = cfg.override(key, value)
    return cfg


def _log_steps(run_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "log.jsonl").read_text().splitlines()]


def _assert_digit_png(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        assert im.format == "PNG", path
        assert im.size == (28, 28) and im.mode == "L", (path, im.size, im.mode)
        pixels = np.asarray(im)
    assert np.ptp(pixels) > 0, f"{path} is a constant image"
    return pixels


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """MULTIGAN_CACHE for this module: MNIST is decompressed here once, not in ~/.cache."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def mnist_run(shared_data, cache, tmp_path_factory) -> Path:
    """30 steps, then a resumed run to 45 steps, in one run folder."""
    run_dir = tmp_path_factory.mktemp("mnist") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MULTIGAN_CACHE", str(cache))
        first = train_run(_settings(shared_data, 30), run_dir, progress=False)
        assert first.name == "step-0000030.pt"
        assert _log_steps(run_dir)[-1] == 30
        latest = run_dir / "checkpoints" / "latest.pt"
        assert load_checkpoint(latest)["step"] == 30
        last = train_run(_settings(shared_data, 45), run_dir, resume=latest, progress=False)
    assert last.name == "step-0000045.pt"
    return run_dir


def test_resume_continues_the_run(mnist_run):
    steps = _log_steps(mnist_run)
    assert steps == list(range(5, 50, 5)), "the resumed run should log steps 35..45 after 5..30, once each"
    state = load_checkpoint(mnist_run / "checkpoints" / "latest.pt")
    assert state["step"] == 45
    assert json.loads(state["config"])["train"]["steps"] == 45
    assert sorted(p.name for p in (mnist_run / "checkpoints").glob("step-*.pt")) == [
        "step-0000015.pt", "step-0000030.pt", "step-0000045.pt"]
    assert sorted(p.name for p in (mnist_run / "previews").glob("*.png")) == [
        "step-0000015.png", "step-0000030.png", "step-0000045.png"]
    for line in (mnist_run / "log.jsonl").read_text().splitlines():
        record = json.loads(line)
        assert all(np.isfinite(v) for v in record.values()), record
    # Resuming restored the optimiser: Adam's step counter went on from 30.
    opt_state = state["opt_G"]["state"]
    assert int(next(iter(opt_state.values()))["step"]) == 45


def test_generate_from_checkpoint_alone(mnist_run, tmp_path, monkeypatch):
    monkeypatch.setenv("MULTIGAN_CACHE", str(tmp_path / "empty-cache"))  # no dataset anywhere
    restored = restore(mnist_run / "checkpoints" / "latest.pt")
    assert restored.step == 45 and restored.modality.shape == (1, 28, 28)
    paths = generate(restored, 16, tmp_path / "samples", seed=0)
    samples = [p for p in paths if p.name.startswith("sample-0")]
    assert len(samples) == 16
    pixels = [_assert_digit_png(p) for p in samples]
    assert len({p.tobytes() for p in pixels}) == 16, "some samples are identical"
    assert (tmp_path / "samples" / "sample-grid.png").is_file()
    assert not (tmp_path / "empty-cache").exists(), "generation touched the dataset cache"
    # Digits are mostly dark background (mean pixel 33): G has started to learn that, an untrained G has not.
    torch.manual_seed(0)
    untrained, _ = build_nets(restored.config.model, restored.modality.shape)
    with torch.no_grad():
        x = synthesize(untrained.eval(), torch.randn(16, restored.G.z_dim), labels_for(untrained, 16))
        before = restored.modality.decode(x).float().mean().item()
    after = float(np.mean(pixels))
    assert after < before - 5, f"mean pixel {after:.0f} after training, {before:.0f} before"


def test_recipe_script(shared_data, cache, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "MULTIGAN_CACHE": str(cache)}
    result = subprocess.run(
        [sys.executable, str(REPO_ROOT / "recipes" / "mnist" / "train.py"), "--steps", "20",
         "--data-root", str(shared_data), "--out", str(out), "--device", "cpu"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    grid = out / "samples" / "sample-grid.png"
    assert str(grid) in result.stdout
    with Image.open(grid) as im:
        assert im.format == "PNG" and im.mode == "L"
        assert im.width > 28 * 8 and im.height > 28 * 8  # 64 digits
        assert np.ptp(np.asarray(im)) > 0
    assert torch.load(out / "checkpoints" / "latest.pt", weights_only=True)["step"] == 20
    assert len(list((out / "samples").glob("sample-0*.png"))) == 64
