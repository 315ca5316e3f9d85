"""Starting runs from the command line and the recipes: where settings come from, where files go,
what a failed start leaves, and the library functions the commands print."""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from multigan.cli import main, recipe_main
from multigan.config import RunConfig
from multigan.engine import checkpoint as ckpt
from multigan.presets import PRESETS
from multigan.registry import load_data
from multigan.restore import describe, restore
from multigan.run import evaluation_path, start_settings, train_run

REPO_ROOT = Path(__file__).resolve().parents[1]


def _pngs(folder: Path, n: int = 32) -> Path:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8), "L").save(folder / f"img-{i:03d}.png")
    return folder


def _tiny(root: str | None = None, steps: int = 2) -> RunConfig:
    """Tiny nets on 16x16 grey images: a run of a few steps takes about a second."""
    return RunConfig.from_dict({
        "name": "tiny",
        "data": {"modality": "image", "source": "folder", "root": root, "channels": 1, "height": 16, "width": 16},
        "model": {"z_dim": 8, "g_width": 8, "d_width": 8},
        "train": {"steps": steps, "batch_size": 8, "checkpoint_every": 2, "preview_every": 100, "log_every": 1,
                  "n_preview": 4, "device": "cpu", "threads": 1},
    })


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A working folder holding `pngs/`, and a 2-step run `RUN` trained from it with a *relative* data root."""
    work = tmp_path_factory.mktemp("work")
    _pngs(work / "pngs")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        mp.setenv("MULTIGAN_CACHE", str(work / "cache"))
        assert train_run(_tiny("pngs"), "RUN", progress=False).name == "step-0000002.pt"
    return work


# Data paths are stored absolute (item: relative --data-root) ------------------------
def test_a_relative_data_root_is_stored_absolute(work):
    stored = json.loads((work / "RUN" / "config.json").read_text())["data"]["root"]
    assert stored == str(work / "pngs")
    state = ckpt.load_checkpoint(work / "RUN" / "checkpoints" / "latest.pt")
    assert json.loads(state["config"])["data"]["root"] == str(work / "pngs")


def test_resume_and_the_evaluation_data_are_found_from_another_folder(work, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing named pngs here
    monkeypatch.setenv("MULTIGAN_CACHE", str(tmp_path / "cache"))
    run_dir = tmp_path / "copy"
    shutil.copytree(work / "RUN", run_dir)
    # What `evaluate` reads: the data the run trained on, from its settings.
    dataset, _ = load_data(restore(run_dir).config.data, progress=False)
    assert len(dataset) == 32
    # --resume: the checkpoint's settings, then the flags.
    cfg, resume = start_settings(_tiny("elsewhere"), run_dir, "latest")
    assert resume == run_dir / "checkpoints" / "latest.pt" and cfg.data.root == str(work / "pngs")
    last = train_run(cfg.override("train.steps", 4), run_dir, resume=resume, progress=False)
    assert ckpt.load_checkpoint(last)["step"] == 4


def test_the_dry_run_prints_the_root_it_would_store(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", "images-64", "--data-root", "../pictures", "--dry-run"]) == 0
    assert json.loads(capsys.readouterr().out)["data"]["root"] == str(tmp_path.parent / "pictures")


# Failed starts (item: no empty run folder; the --resume refusal) -------------------------
def _tiny_file(folder: Path, root: str) -> str:
    path = folder / "tiny.json"
    path.write_text(_tiny(root).to_json())
    return str(path)


@pytest.mark.parametrize("flags, message", [
    (["--data-root", "missing"], "missing"),  # the data fails to load
    (["--set", "model.g_width=60000", "--set", "model.max_width=60000"], "parameters"),  # nets too large, after the data
])
def test_a_failed_train_leaves_no_folder(flags, message, work, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    settings = _tiny_file(tmp_path, str(work / "pngs"))
    assert main(["train", settings, "--out", "a/b/run", *flags]) == 2
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.json"], "a failed start left folders behind"
    assert main(["train", settings, *flags]) == 2  # the default folder, runs/tiny
    assert not (tmp_path / "runs").exists()


def test_a_failed_start_keeps_folders_that_were_there(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "other").mkdir(parents=True)
    assert main(["train", _tiny_file(tmp_path, "missing"), "--out", "runs/new/run"]) == 2
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["other"]


def _recipe_module(name: str):
    spec = importlib.util.spec_from_file_location(f"{name}_recipe", REPO_ROOT / "recipes" / name / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_failed_recipe_leaves_no_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    images = _recipe_module("images")
    assert images.main(["--data-root", str(tmp_path / "missing"), "--device", "cpu"]) == 2
    assert "missing" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == [], "the recipe left runs/images-64-missing behind"
    assert recipe_main({"tiny": lambda: _tiny("missing")}, "tiny", n_samples=4, needs_data=False,
                       argv=["--out", "x/y/run"]) == 2
    assert list(tmp_path.iterdir()) == []


def _holding_checkpoints(folder: Path) -> Path:
    (folder / "checkpoints").mkdir(parents=True)
    (folder / "checkpoints" / "step-0000005.pt").write_bytes(b"another run's weights")
    return folder


def test_a_folder_with_checkpoints_is_refused_before_the_data_loads(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    _holding_checkpoints(tmp_path / "old")
    # The data root does not exist: had the data loaded first, the error would be about it.
    assert main(["train", _tiny_file(tmp_path, "missing"), "--out", "old"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already holds checkpoints" in err[0] and "--resume" in err[0], err
    assert recipe_main({"tiny": lambda: _tiny("missing")}, "tiny", n_samples=4, needs_data=False,
                       argv=["--out", "old"]) == 2
    err = capsys.readouterr().err
    assert "--resume" in err and "missing" not in err
    assert sorted(p.name for p in (tmp_path / "old" / "checkpoints").iterdir()) == ["step-0000005.pt"]


# Recipes (item: preset names and resume policy) -------------------------------------
@pytest.mark.parametrize("recipe", ["mnist", "voice"])
def test_recipe_presets_are_named_as_the_command_line_names_them(recipe):
    result = subprocess.run([sys.executable, str(REPO_ROOT / "recipes" / recipe / "train.py"), "--help"],
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    choices = result.stdout.split("--preset {", 1)[1].split("}", 1)[0].split(",")
    assert choices and set(choices) <= set(PRESETS), choices
    assert f"default: {recipe}-quick" in result.stdout


def test_the_images_recipe_preset_is_the_command_lines(tmp_path, monkeypatch, capsys):
    images = _recipe_module("images")
    with pytest.raises(SystemExit):
        images.main(["--help"])
    assert "--preset {images-64}" in capsys.readouterr().out


def test_a_recipe_resumes_as_train_resume_does(work, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MULTIGAN_CACHE", str(tmp_path / "cache"))
    preset = {"tiny": lambda: _tiny(str(work / "pngs"))}
    assert recipe_main(preset, "tiny", n_samples=4, needs_data=False, argv=["--steps", "2", "-q"]) == 0
    run_dir = tmp_path / "runs" / "tiny"  # the default folder: runs/NAME, as `multigan train`'s
    assert "step-0000002.pt" in capsys.readouterr().out
    # The preset has changed since (wider nets): a resumed run goes on with its checkpoint's settings, then the flags.
    preset = {"tiny": lambda: _tiny(str(work / "pngs")).override("model.g_width", 16)}
    assert recipe_main(preset, "tiny", n_samples=4, needs_data=False, argv=["--resume", "--steps", "4", "-q"]) == 0
    state = ckpt.load_checkpoint(run_dir / "checkpoints" / "latest.pt")
    assert state["step"] == 4 and json.loads(state["config"])["model"]["g_width"] == 8
    assert len(list((run_dir / "samples").glob("sample-0*.png"))) == 4
    # An explicit checkpoint, as `train --resume CKPT`.
    assert recipe_main(preset, "tiny", n_samples=4, needs_data=False,
                       argv=["--resume", str(run_dir / "checkpoints" / "step-0000004.pt"), "--steps", "6", "-q"]) == 0
    assert ckpt.load_checkpoint(run_dir / "checkpoints" / "latest.pt")["step"] == 6
    # Nothing to resume: one line, and no folder made.
    assert recipe_main(preset, "tiny", n_samples=4, needs_data=False, argv=["--resume", "--out", "none"]) == 2
    assert "no checkpoint found in none" in capsys.readouterr().err and not (tmp_path / "none").exists()


# Library functions behind the commands ------------------------------------------------
def test_evaluation_path(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    assert evaluation_path(run_dir) == run_dir / "evaluation.json"
    assert evaluation_path(run_dir / "checkpoints" / "step-0000002.pt") == run_dir / "evaluation.json"
    assert evaluation_path(tmp_path / "mine.pt") == tmp_path / "mine-evaluation.json"
    assert evaluation_path(run_dir, tmp_path / "x.json") == tmp_path / "x.json"


def test_describe_a_checkpoint(work):
    info = describe(work / "RUN")
    assert (info["step"], info["of_steps"], info["modality"], info["sample_shape"]) == (2, 2, "image", [1, 16, 16])
    assert info["generator"].startswith("dcgan, ") and info["generator"].endswith(" parameters")
    assert RunConfig.from_dict(info["settings"]).model.z_dim == 8
    json.dumps(info)  # `info --json` prints it as it is


def test_vocode_keeps_the_tone_and_the_length():
    from multigan.audio.spectral import magnitude, spectral_convergence
    from multigan.config import AudioConfig
    from multigan.vocode import vocode

    audio = AudioConfig(gl_iter=8)
    for n in (4000, 4000 + audio.hop_length // 2):  # whole hops, and a tail
        t = torch.arange(n) / audio.sample_rate
        wave = 0.5 * torch.sin(2 * torch.pi * 440 * t)
        rebuilt = vocode(wave, audio)
        assert rebuilt.shape == wave.shape
        peak = torch.fft.rfftfreq(n, 1 / audio.sample_rate)[torch.fft.rfft(rebuilt).abs().argmax()]
        assert abs(float(peak) - 440) < 20
        sc = spectral_convergence(magnitude(wave, audio.n_fft, audio.hop_length),
                                  magnitude(rebuilt, audio.n_fft, audio.hop_length))
        assert float(sc) < 0.5


# Files (item: one atomic write; checkpoint permissions) ------------------------------------
@pytest.mark.parametrize("linked", [True, False])
def test_latest_follows_the_umask_linked_or_copied(linked, tmp_path, monkeypatch):
    if not linked:
        def no_links(*args):
            raise OSError("hard links are not supported here")

        monkeypatch.setattr(os, "link", no_links)
    old = os.umask(0o027)
    try:
        step = ckpt.save_checkpoint({"step": 3}, tmp_path / ckpt.checkpoint_name(3))
        latest = ckpt.update_latest(tmp_path, step)
    finally:
        os.umask(old)
    assert step.stat().st_mode & 0o777 == 0o640
    assert latest.stat().st_mode & 0o777 == 0o640
    assert latest.samefile(step) is linked
    assert ckpt.load_checkpoint(latest)["step"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pt", step.name]  # no temporary file left


def test_a_recipe_on_a_rank_other_than_0_writes_and_samples_nothing(tmp_path, monkeypatch, capsys):
    # Under torchrun, train_run returns None on ranks other than 0: they hold no checkpoint path.
    import multigan.run as run

    monkeypatch.setattr(run, "train_run", lambda *a, **k: None)
    assert run.train_and_sample(PRESETS["mnist-quick"](), tmp_path / "r", n_samples=4) == (None, [])
    assert recipe_main({"mnist-quick": PRESETS["mnist-quick"]}, "a recipe", n_samples=4, needs_data=False,
                       argv=["--out", str(tmp_path / "r"), "-q"]) == 0
    assert not (tmp_path / "r").exists() and "checkpoint:" not in capsys.readouterr().out
