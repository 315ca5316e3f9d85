"""Sampling a generator into files: labels, batching, generation.json, `multigan generate --label`."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from multigan import cli
from multigan.restore import restore
from multigan.config import DataConfig, NetConfig, RunConfig, TrainConfig
from multigan.data.tensors import ImageTensorDataset, Labelled
from multigan.engine.trainer import train
from multigan.errors import ConfigError
from multigan.generate import generate, labels_for, synthesize
from multigan.modalities.image import ImageModality
from multigan.nets import dcgan

REPO_ROOT = Path(__file__).resolve().parents[1]
SHAPE = (1, 16, 16)
N_CLASSES = 4
IMAGES = torch.randint(0, 256, (64,) + SHAPE, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))

pytestmark = pytest.mark.usefixtures("one_thread")


def _checkpoint(run_dir: Path, n_classes: int) -> Path:
    """Two training steps of tiny nets on random 16x16 images (labelled 0..3 when conditional)."""
    cfg = RunConfig(
        data=DataConfig(source="folder", channels=1, height=16, width=16),
        model=NetConfig(z_dim=8, g_width=8, d_width=8, n_classes=n_classes),
        train=TrainConfig(steps=2, batch_size=16, device="cpu", n_preview=4, log_every=2),
    )
    dataset = ImageTensorDataset(IMAGES, torch.arange(64) % N_CLASSES)
    torch.manual_seed(0)
    G, D = dcgan.build(cfg.model, SHAPE)
    return train(cfg, ImageModality(*SHAPE), G, D, Labelled(dataset, n_classes) if n_classes else dataset, run_dir,
                 progress=False)


@pytest.fixture()
def conditional(tmp_path) -> Path:
    return _checkpoint(tmp_path / "conditional", N_CLASSES)


@pytest.fixture()
def unconditional(tmp_path) -> Path:
    return _checkpoint(tmp_path / "unconditional", 0)


# labels_for and synthesize ------------------------------------------------------
def test_labels_for_a_conditional_G():
    G, _ = dcgan.build(NetConfig(z_dim=8, g_width=8, d_width=8, n_classes=3), SHAPE)
    assert labels_for(G, 7).tolist() == [0, 1, 2, 0, 1, 2, 0]  # every class in turn
    y = labels_for(G, 5, label=2)
    assert y.tolist() == [2] * 5 and y.dtype == torch.long
    for label in (-1, 3):
        with pytest.raises(ConfigError, match="0..2"):
            labels_for(G, 5, label=label)


def test_labels_for_an_unconditional_G():
    G, _ = dcgan.build(NetConfig(z_dim=8, g_width=8, d_width=8), SHAPE)
    assert labels_for(G, 4) is None
    with pytest.raises(ConfigError, match="not class-conditional"):
        labels_for(G, 4, label=0)


def test_synthesize_in_batches_matches_one_pass():
    torch.manual_seed(0)
    G, _ = dcgan.build(NetConfig(z_dim=8, g_width=8, d_width=8, n_classes=N_CLASSES), SHAPE)
    G.eval()
    z, y = torch.randn(7, 8), torch.tensor([3, 1, 0, 2, 2, 1, 3])
    x = synthesize(G, z, y, batch_size=3)
    assert x.shape == (7, *SHAPE)
    assert torch.allclose(x, G(z, y), atol=1e-6)  # each batch got its own labels
    assert not torch.allclose(x, synthesize(G, z, (y + 1) % N_CLASSES, batch_size=3))


# generate -----------------------------------------------------------------------
def test_generate_records_the_labels(conditional, tmp_path):
    restored = restore(conditional)
    generate(restored, 6, tmp_path / "all", seed=1)
    assert json.loads((tmp_path / "all" / "generation.json").read_text())["labels"] == [0, 1, 2, 3, 0, 1]
    generate(restored, 6, tmp_path / "two", seed=1, label=2)
    record = json.loads((tmp_path / "two" / "generation.json").read_text())
    assert record["labels"] == [2] * 6 and record["n"] == 6
    # Same seed, same z: sample 2 has label 2 both times, sample 0 does not.
    assert _png(tmp_path / "all" / "sample-0002.png") == _png(tmp_path / "two" / "sample-0002.png")
    assert _png(tmp_path / "all" / "sample-0000.png") != _png(tmp_path / "two" / "sample-0000.png")


def test_generate_records_no_labels_for_an_unconditional_G(unconditional, tmp_path):
    generate(restore(unconditional), 3, tmp_path / "out")
    assert json.loads((tmp_path / "out" / "generation.json").read_text())["labels"] is None


def _png(path: Path) -> bytes:
    return path.read_bytes()


# The command line ---------------------------------------------------------------
def test_generate_label_command(conditional, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "MULTIGAN_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "multigan", "generate", str(conditional), "--label", "3", "--n", "5",
                             "--out", "G", "--seed", "2", "--device", "cpu"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    out = tmp_path / "G"
    assert {p.name for p in out.iterdir()} == {f"sample-{i:04d}.png" for i in range(5)} | {"sample-grid.png",
                                                                                        "generation.json"}
    record = json.loads((out / "generation.json").read_text())
    assert record["labels"] == [3] * 5 and record["seed"] == 2
    # The same files as the library call with label 3.
    generate(restore(conditional), 5, tmp_path / "lib", seed=2, label=3)
    assert all(_png(out / f"sample-{i:04d}.png") == _png(tmp_path / "lib" / f"sample-{i:04d}.png") for i in range(5))


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.strip("\n").splitlines()
    assert len(lines) == 1 and "error" in lines[0], err
    return lines[0]


def test_label_on_an_unconditional_checkpoint_is_a_one_line_error(unconditional, tmp_path, capsys):
    assert cli.main(["generate", str(unconditional), "--label", "0", "--out", str(tmp_path / "G"), "--device", "cpu"]) == 2
    assert "not class-conditional" in _one_line_error(capsys)
    assert not list((tmp_path / "G").glob("*.png"))


@pytest.mark.parametrize("label", ["4", "-1"])
def test_a_label_out_of_range_is_a_one_line_error(conditional, tmp_path, capsys, label):
    assert cli.main(["generate", str(conditional), "--label", label, "--out", str(tmp_path / "G"), "--device", "cpu"]) == 2
    assert "0..3" in _one_line_error(capsys)
    assert not list((tmp_path / "G").glob("*.png"))
