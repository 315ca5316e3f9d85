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
from multigan.generate import class_index, generate, labels_for, labels_in_proportion, sample, synthesize
from multigan.modalities.image import ImageModality
from multigan.nets import dcgan

REPO_ROOT = Path(__file__).resolve().parents[1]
SHAPE = (1, 16, 16)
N_CLASSES = 4
IMAGES = torch.randint(0, 256, (64,) + SHAPE, dtype=torch.uint8, generator=torch.Generator().manual_seed(0))

pytestmark = pytest.mark.usefixtures("one_thread")


def _checkpoint(run_dir: Path, n_classes: int, names: list[str] | None = None) -> Path:
    """Two training steps of tiny nets on random 16x16 images (labelled 0..3 when conditional, the classes
    named `names`)."""
    cfg = RunConfig(
        data=DataConfig(source="folder", channels=1, height=16, width=16),
        model=NetConfig(z_dim=8, g_width=8, d_width=8, n_classes=n_classes),
        train=TrainConfig(steps=2, batch_size=16, device="cpu", n_preview=4, log_every=2),
    )
    dataset = ImageTensorDataset(IMAGES, torch.arange(64) % N_CLASSES, names)
    torch.manual_seed(0)
    G, D = dcgan.build(cfg.model, SHAPE)
    return train(cfg, ImageModality(*SHAPE), G, D, Labelled(dataset, n_classes) if n_classes else dataset, run_dir,
                 progress=False)


@pytest.fixture()
def conditional(tmp_path) -> Path:
    return _checkpoint(tmp_path / "conditional", N_CLASSES)


NAMES = ["circle", "Heart", "7", "star"]  # "7" is a name that is also a number


@pytest.fixture()
def named(tmp_path) -> Path:
    return _checkpoint(tmp_path / "named", N_CLASSES, NAMES)


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


def test_labels_in_a_class_mix_are_its_shares_rounded_to_whole_counts():
    G, _ = dcgan.build(NetConfig(z_dim=8, g_width=8, d_width=8, n_classes=3), SHAPE)
    mix = torch.tensor([0.5, 0.3, 0.2])
    y = labels_for(G, 7, mix=mix)  # quotas 3.5, 2.1, 1.4: the largest remainder goes to class 0
    assert torch.bincount(y, minlength=3).tolist() == [4, 2, 1] and y.dtype == torch.long
    assert torch.equal(y, labels_in_proportion(mix, 7)) and not torch.equal(y, labels_in_proportion(mix, 7, seed=1))
    assert torch.bincount(labels_in_proportion(torch.tensor([1.0, 0.0, 3.0]), 1000), minlength=3).tolist() == [250, 0, 750]
    assert labels_for(G, 5, label=1, mix=mix).tolist() == [1] * 5  # one asked-for class wins over the mix
    with pytest.raises(ConfigError, match="3 shares"):
        labels_for(G, 5, mix=torch.tensor([0.5, 0.5]))


def test_class_index_takes_a_name_or_a_number():
    assert [class_index(x, NAMES, 4) for x in ("circle", "Heart", "heart", " star ", "7", "3", "0", 2, None)] == \
        [0, 1, 1, 3, 2, 3, 0, 2, None]  # a name wins over a number: "7" is class 2
    assert class_index("9", NAMES, 4) == 9  # out of range: labels_for says so
    with pytest.raises(ConfigError, match="did you mean 'star'"):
        class_index("stars", NAMES, 4)
    with pytest.raises(ConfigError, match="did you mean 'Heart'"):
        class_index("HAERT", NAMES, 4)
    with pytest.raises(ConfigError, match="the classes: circle, Heart, 7, star"):
        class_index("dragon", NAMES, 4)
    many = [f"class {k:02d}" for k in range(40)]
    with pytest.raises(ConfigError, match=r"class 07, \.\.\. \(`multigan info` lists all 40\)"):
        class_index("zzz", many, 40)
    with pytest.raises(ConfigError, match="names no classes, give a number from 0 to 3"):
        class_index("circle", None, 4)
    with pytest.raises(ConfigError, match="not class-conditional"):
        class_index("circle", None, 0)
    with pytest.raises(ConfigError, match="class number or name"):
        class_index(1.5, NAMES, 4)


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


def test_a_class_is_drawn_by_its_name(named, conditional, tmp_path):
    restored = restore(named)
    assert restored.class_names == NAMES and restore(conditional).class_names is None
    by_name = sample(restored, 3, seed=4, label="star")
    assert by_name.labels.tolist() == [3] * 3 and torch.equal(by_name.x, sample(restored, 3, seed=4, label=3).x)
    generate(restored, 4, tmp_path / "out", seed=1, label="heart")
    record = json.loads((tmp_path / "out" / "generation.json").read_text())
    assert record["labels"] == [1] * 4 and record["class_names"] == NAMES
    generate(restore(conditional), 2, tmp_path / "unnamed", seed=1)
    assert "class_names" not in json.loads((tmp_path / "unnamed" / "generation.json").read_text())


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


def test_generate_label_by_name_command(named, tmp_path, capsys):
    assert cli.main(["generate", str(named), "--label", "STAR", "--n", "2", "--out", str(tmp_path / "G"),
                     "--device", "cpu"]) == 0
    assert "2 samples of class 3 (star)" in capsys.readouterr().out
    assert json.loads((tmp_path / "G" / "generation.json").read_text())["labels"] == [3, 3]
    assert cli.main(["generate", str(named), "--label", "hart", "--out", str(tmp_path / "H"), "--device", "cpu"]) == 2
    assert "no class is named 'hart'; did you mean 'Heart'" in _one_line_error(capsys)
    assert not (tmp_path / "H").exists()


# Where samples go, and the report finding them ----------------------------------
def _cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "MULTIGAN_CACHE": str(cwd / "cache"), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "multigan", *args, "--device", "cpu"], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=180)


def test_out_defaults_to_the_run_folder_and_the_report_finds_every_folder(unconditional, tmp_path):
    from multigan.report import GENERATIONS, write_report

    run = unconditional.parent.parent
    assert main_ok(["generate", str(unconditional), "--n", "4"])
    assert (run / "generated" / "sample-grid.png").is_file()
    work = tmp_path / "elsewhere"
    work.mkdir()
    result = _cli(["generate", str(run), "--n", "3", "--out", "samples-here"], cwd=work)  # a run folder, a relative --out
    assert result.returncode == 0, result.stderr
    folders = json.loads((run / GENERATIONS).read_text())["folders"]
    assert folders == [str((run / "generated").resolve()), str((work / "samples-here").resolve())]
    assert main_ok(["generate", str(unconditional), "--n", "2"])  # the same folder again: recorded once
    assert len(json.loads((run / GENERATIONS).read_text())["folders"]) == 2

    page = write_report(run).read_text()
    assert "No samples" not in page
    assert "../generated/sample-grid.png" in page
    assert "samples-here/sample-grid.png" in page and str(work / "samples-here") in page


def test_a_run_folder_that_cannot_be_written_is_not_recorded(unconditional, tmp_path, monkeypatch):
    import importlib

    from multigan.report import GENERATIONS

    generate_module = importlib.import_module("multigan.generate")  # `multigan.generate` is the API function

    run = unconditional.parent.parent
    monkeypatch.setattr(generate_module.os, "access", lambda path, mode: Path(path) != run)
    generate(restore(unconditional), 2, tmp_path / "out")
    assert (tmp_path / "out" / "sample-grid.png").is_file()
    assert not (run / GENERATIONS).exists()


def test_a_checkpoint_outside_a_run_folder_writes_beside_itself(unconditional, tmp_path):
    from multigan.generate import default_out, run_folder

    loose = tmp_path / "loose" / "model.pt"
    loose.parent.mkdir()
    loose.write_bytes(unconditional.read_bytes())
    assert run_folder(loose) is None and default_out(loose) == tmp_path / "loose" / "generated"
    assert run_folder(unconditional) == unconditional.parent.parent


def main_ok(argv: list[str]) -> bool:
    return cli.main([*argv, "--device", "cpu"]) == 0


def _exit_code(argv: list[str]) -> int:
    """cli.main's return value, or the status of argparse's exit on a malformed command line."""
    try:
        return cli.main(argv)
    except SystemExit as e:
        return e.code


# Truncation ----------------------------------------------------------------------
def test_truncation_bounds_the_noise_and_keeps_what_was_inside():
    from multigan.generate import latents, truncate

    free = latents(256, 32, seed=3)
    cut = latents(256, 32, seed=3, truncation=0.5)
    assert free.abs().max() > 2 and cut.abs().max() <= 0.5
    inside = free.abs() <= 0.5
    assert torch.equal(cut[inside], free[inside])  # only the values beyond the bound are redrawn
    assert cut[~inside].std() > 0.2  # redrawn across the interval, not pinned to its ends
    assert (cut[~inside].abs() < 0.5).float().mean() > 0.9
    tiny = truncate(torch.randn(1000, generator=torch.Generator().manual_seed(0)), 1e-4)
    assert tiny.abs().max() <= 1e-4


def test_truncated_samples_record_it_and_differ(unconditional):
    from multigan.generate import sample

    restored = restore(unconditional)
    free, cut = sample(restored, 4, seed=1), sample(restored, 4, seed=1, truncation=0.2)
    assert cut.record["truncation"] == 0.2 and free.record["truncation"] is None
    assert not torch.allclose(free.x, cut.x)


@pytest.mark.parametrize("psi", ["0", "-1", "nan", "inf", "abc"])
def test_bad_truncation_is_a_one_line_error(unconditional, tmp_path, capsys, psi):
    code = _exit_code(["generate", str(unconditional), "--truncation", psi, "--out", str(tmp_path / "G"), "--device", "cpu"])
    assert code == 2
    assert "truncation" in _one_line_error(capsys)
    assert not (tmp_path / "G").exists()


# Latent walks ------------------------------------------------------------------
def test_slerp_ends_and_norm():
    from multigan.generate import slerp

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(3, 64, generator=g), torch.randn(3, 64, generator=g)
    b = b / b.norm(dim=1, keepdim=True) * a.norm(dim=1, keepdim=True)  # equal norms: the arc keeps the norm
    z = slerp(a, b, torch.linspace(0, 1, 7))
    assert z.shape == (3, 7, 64)
    assert torch.allclose(z[:, 0], a, atol=1e-5) and torch.allclose(z[:, -1], b, atol=1e-5)
    assert torch.allclose(z.norm(dim=-1), a.norm(dim=1, keepdim=True).expand(3, 7), rtol=1e-4)
    line = (a + b) / 2
    assert (z[:, 3].norm(dim=-1) > line.norm(dim=-1) * 1.1).all()  # the midpoint does not dip towards 0
    same = slerp(a, a.clone(), torch.linspace(0, 1, 3))  # parallel ends: no division by zero
    assert torch.isfinite(same).all() and torch.allclose(same[:, 1], a, atol=1e-5)


def test_walks_of_an_unconditional_run(unconditional, tmp_path):
    from PIL import Image

    paths = generate(restore(unconditional), 3, tmp_path / "walk", interpolate_steps=5, truncation=1.0)
    assert {p.name for p in paths} == {"interpolation-grid.png", "generation.json"}
    with Image.open(tmp_path / "walk" / "interpolation-grid.png") as im:
        assert im.size == (5 * 18 + 2, 3 * 18 + 2)  # 16x16 images, 2 px padding: 5 steps across, 3 walks down
    record = json.loads((tmp_path / "walk" / "generation.json").read_text())
    assert record["interpolate"] == 5 and record["walks"] == 3 and record["rows"] == 3 and record["labels"] is None


def test_walks_of_a_conditional_run_show_each_walk_for_every_class(conditional):
    from multigan.generate import interpolate, walk_latents

    restored = restore(conditional)
    walks = interpolate(restored, 4, walks=2, seed=5)
    assert walks.x.shape == (2 * N_CLASSES * 4, *SHAPE)
    assert walks.labels.tolist() == [0, 1, 2, 3, 0, 1, 2, 3]  # rows: walk 0 in every class, then walk 1
    z = walk_latents(2, 4, restored.G.z_dim, seed=5)
    expected = synthesize(restored.G, z[1], torch.full((4,), 2))  # walk 1, class 2: row 6
    assert torch.allclose(walks.x[6 * 4:7 * 4], expected, atol=1e-6)
    one = interpolate(restored, 3, walks=2, seed=5, label=1)
    assert one.labels.tolist() == [1, 1] and one.x.shape[0] == 6


def test_a_walk_needs_two_steps(unconditional, tmp_path, capsys):
    assert cli.main(["generate", str(unconditional), "--interpolate", "1", "--out", str(tmp_path / "G"),
                     "--device", "cpu"]) == 2
    assert "at least 2 steps" in _one_line_error(capsys)


# Scale ---------------------------------------------------------------------------
def test_scale_enlarges_grids_by_nearest_neighbour(unconditional, tmp_path, capsys):
    from PIL import Image
    import numpy as np

    assert main_ok(["generate", str(unconditional), "--n", "16", "--out", str(tmp_path / "x1")])
    assert main_ok(["generate", str(unconditional), "--n", "16", "--out", str(tmp_path / "x3"), "--scale", "3"])
    with Image.open(tmp_path / "x1" / "sample-grid.png") as a, Image.open(tmp_path / "x3" / "sample-grid.png") as b:
        small, big = np.asarray(a), np.asarray(b)
    assert small.shape == (74, 74) and big.shape == (3 * 74, 3 * 74)
    assert (big[::3, ::3] == small).all() and (big[1::3, 2::3] == small).all()  # blocks of one pixel each
    with Image.open(tmp_path / "x3" / "sample-0000.png") as one:
        assert one.size == (16, 16)  # single samples stay at their size
    capsys.readouterr()
    assert _exit_code(["generate", str(unconditional), "--scale", "0", "--out", str(tmp_path / "x0"), "--device", "cpu"]) == 2
    assert "positive integer" in _one_line_error(capsys)
    assert _exit_code(["generate", str(unconditional), "--scale", "99", "--out", str(tmp_path / "x0"), "--device", "cpu"]) == 2
    assert "1 to 16" in _one_line_error(capsys)
