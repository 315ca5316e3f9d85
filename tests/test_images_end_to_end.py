"""Colour images end to end: recipes/images/train.py on 64 real emoji, the PNGs it writes, their evaluation."""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from multigan.config import RunConfig
from multigan.presets import images64
from multigan.run import evaluate_checkpoint

REPO_ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def emoji(shared_data, tmp_path_factory) -> Path:
    """64 Noto emoji from across the categories (every 59th file), copied so the test owns them."""
    folder = tmp_path_factory.mktemp("data") / "emoji"
    folder.mkdir()
    for path in sorted((shared_data / "emoji" / "png").glob("*.png"))[::59][:64]:
        shutil.copy(path, folder / path.name)
    assert len(list(folder.iterdir())) == 64
    return folder


def _tiny() -> RunConfig:
    """The preset with tiny nets, a fast learning rate and frequent previews: a few seconds on a CPU.

    These tests check the data path (alpha on white, RGB 64x64 files, the run's name), through a
    generator that must learn the white background in 150 steps: they keep the non-saturating loss,
    batch-norm D with label planes, Adam (0.5, 0.999) and no augmentation that the thresholds below
    were measured with, which learn it faster at this size than the preset's settings.
    """
    cfg = images64()
    for key, value in {"loss.kind": "nonsaturating", "model.spectral_norm": False, "model.d_norm": "batch",
                       "model.d_cond": "concat", "loss.augment": 0.0, "optim.betas": (0.5, 0.999),
                       "model.g_width": 8, "model.d_width": 8, "model.z_dim": 16, "train.batch_size": 16,
                       "train.preview_every": 50, "train.log_every": 10, "train.n_preview": 16,
                       "train.ema_decay": 0.0, "optim.lr_g": 2e-3, "optim.lr_d": 2e-3, "eval.n": 50}.items():
        cfg = cfg.override(key, value)
    return cfg


@pytest.fixture(scope="module")
def run(emoji, tmp_path_factory) -> Path:
    spec = importlib.util.spec_from_file_location("images_train", REPO_ROOT / "recipes" / "images" / "train.py")
    recipe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipe)
    work = tmp_path_factory.mktemp("work")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(recipe, "images64", _tiny)
        mp.setenv("MULTIGAN_CACHE", str(work / "cache"))
        mp.chdir(work)  # the default run folder is relative: runs/images-64-<folder name>
        assert recipe.main(["--data-root", str(emoji), "--steps", "150", "--device", "cpu", "--eval-every", "150"]) == 0
    return work / "runs" / "images-64-emoji"


def _corners(path: Path) -> np.ndarray:
    """The 6x6 corner patches of a 64x64 PNG, or of every tile of a grid (2-pixel padding), [tiles * 4, 6, 6, 3]."""
    with Image.open(path) as im:
        assert im.mode == "RGB", (path, im.mode)
        pixels = np.asarray(im)
    h, w, _ = pixels.shape
    tiles = [pixels[y:y + 64, x:x + 64] for y in range(2, h - 63, 66) for x in range(2, w - 63, 66)] \
        if (h, w) != (64, 64) else [pixels]
    return np.stack([t[a:a + 6, b:b + 6] for t in tiles for a in (0, 58) for b in (0, 58)])


def test_the_run_is_named_for_what_it_trains(run):
    config = json.loads((run / "config.json").read_text())
    assert config["name"] == "images-64-emoji"
    assert (config["data"]["channels"], config["data"]["height"], config["data"]["width"]) == (3, 64, 64)
    assert config["data"]["background"] == [255, 255, 255] and config["model"]["family"] == "dcgan"


def test_samples_are_rgb_64x64_on_white(run):
    samples = sorted((run / "samples").glob("sample-0*.png"))
    assert len(samples) == 64
    for path in samples:
        with Image.open(path) as im:
            assert (im.mode, im.size) == ("RGB", (64, 64)), path
    # Where the emoji are transparent (their corners), the generator has learnt white: 199 on average
    # after these 150 steps; 43 with data.background=0,0,0, about 127 (grey) untrained.
    corners = np.concatenate([_corners(p) for p in samples])
    assert corners.mean() > 170, corners.mean()
    assert (corners.reshape(-1, 3).min(1) > 128).mean() > 0.9  # light in every channel: white, not a colour


def test_previews_show_white_backgrounds_too(run):
    previews = sorted(p.name for p in (run / "previews").glob("*.png"))
    assert previews == ["step-0000050.png", "step-0000100.png", "step-0000150.png"]
    assert _corners(run / "previews" / "step-0000150.png").mean() > 170


def test_evaluation_uses_the_colour_feature_network(run, emoji, tmp_path, monkeypatch):
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [150] and np.isfinite(metrics[0]["fid"])
    monkeypatch.setenv("MULTIGAN_CACHE", str(tmp_path / "cache"))
    result = evaluate_checkpoint(run, n=50, data_root=str(emoji), progress=False)
    assert Path(result["features"]).name == "emoji-classifier.pt"
    assert result["features_warning"] is None  # real emoji: the data the network knows
    assert result["reference_items"] == 64 and np.isfinite(result["fid"])
