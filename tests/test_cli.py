"""The `multigan` command line, run as a user runs it: in a fresh interpreter."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, cwd: Path, cache: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "MULTIGAN_CACHE": str(cache or cwd / "cache")}
    return subprocess.run([sys.executable, "-m", "multigan", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip("\n").splitlines()
    assert len(lines) == 1, result.stderr
    assert "error" in lines[0]
    return lines[0]


# Help -------------------------------------------------------------------
FLAGS = {
    (): ["train", "generate", "info", "evaluate", "report", "vocode", "settings", "--version", "--quiet"],
    ("train",): ["TARGET", "--steps", "--batch-size", "--out", "--device", "--seed", "--data-root", "--amp",
                 "--resume", "--set", "--dry-run", "--no-progress", "--eval-every", "mnist-quick"],
    ("generate",): ["CHECKPOINT", "--n", "--out", "--seed", "--label", "--device"],
    ("info",): ["CHECKPOINT", "--json"],
    ("evaluate",): ["CHECKPOINT", "--n", "--data-root", "--features", "--out", "--seed", "--truncation", "--device"],
    ("report",): ["RUN_DIR", "--out"],
}


@pytest.mark.parametrize("command", list(FLAGS), ids=lambda c: " ".join(c) or "multigan")
def test_help_mentions_every_flag(command, tmp_path):
    result = run(*command, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    for flag in FLAGS[command]:
        assert flag in result.stdout, f"{flag} missing from `multigan {' '.join(command)} --help`"


def test_help_does_not_import_torch(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    probe = "import multigan.cli, sys; multigan.cli.build_parser(); print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert result.stdout.strip() == "False", result.stdout + result.stderr

    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "multigan", "--help"], env=env,
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0
    imported = {line.rsplit("|", 1)[-1].strip() for line in result.stderr.splitlines() if "|" in line}
    heavy = sorted(m for m in imported if m.split(".")[0] in ("torch", "torchvision", "numpy", "librosa", "PIL"))
    assert not heavy, f"`multigan --help` imports {heavy[:5]}"


# Dry run ----------------------------------------------------------------
def test_dry_run_prints_resolved_settings(tmp_path):
    result = run("train", "mnist-quick", "--steps", "7", "--set", "loss.kind=lsgan", "--set", "optim.betas=0.0,0.9",
                 "--set", "model.d_norm=layer", "--seed", "5", "--eval-every", "300", "--dry-run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    settings = json.loads(result.stdout)
    assert settings["name"] == "mnist-quick"
    assert settings["train"]["steps"] == 7
    assert settings["train"]["seed"] == 5
    assert settings["loss"]["kind"] == "lsgan"
    assert settings["optim"]["betas"] == [0.0, 0.9]
    assert settings["model"]["d_norm"] == "layer"
    assert settings["model"]["g_width"] == 48  # untouched preset value
    assert settings["model"]["n_classes"] == -1  # the preset takes its classes from the data
    assert settings["eval"]["every"] == 300
    assert not (tmp_path / "runs").exists(), "a dry run created the run folder"


def test_dry_run_of_a_settings_file(tmp_path):
    (tmp_path / "s.json").write_text(json.dumps({"name": "mine", "train": {"steps": 11, "batch_size": 8}}))
    result = run("train", "s.json", "--batch-size", "4", "--dry-run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    settings = json.loads(result.stdout)
    assert (settings["name"], settings["train"]["steps"], settings["train"]["batch_size"]) == ("mine", 11, 4)
    assert settings["loss"]["kind"] == "nonsaturating"  # defaults fill what the file leaves out


# Bad input: one line on stderr, no traceback -------------------------------
@pytest.fixture()
def junk(tmp_path) -> Path:
    (tmp_path / "x.pt").write_text("hello, this is not a checkpoint\n")
    (tmp_path / "random.pt").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    (tmp_path / "afile").write_text("a regular file\n")
    (tmp_path / "bad.json").write_text('{"train": {"steps": 10,}\n')
    (tmp_path / "list.json").write_text("[1, 2, 3]\n")
    (tmp_path / "typo.json").write_text('{"train": {"stepz": 10}}\n')
    return tmp_path


# name -> (arguments, a fragment the one-line message must hold)
BAD_COMMANDS = {
    "generate: missing checkpoint": (["generate", "nope.pt", "--out", "G"], "nope.pt"),
    "info: missing checkpoint": (["info", "nope.pt"], "not found"),
    "generate: text file named .pt": (["generate", "x.pt", "--out", "G"], "x.pt is not"),
    "info: random bytes": (["info", "random.pt"], "random.pt is not"),
    "generate --n 0": (["generate", "x.pt", "--n", "0", "--out", "G"], "--n"),
    "generate --n abc": (["generate", "x.pt", "--n", "abc", "--out", "G"], "'abc'"),
    "train --set train.steps=-1": (["train", "mnist-quick", "--set", "train.steps=-1", "--dry-run"], "train.steps"),
    "train --set nope.x=1": (["train", "mnist-quick", "--set", "nope.x=1", "--dry-run"], "nope.x"),
    "train --set without =": (["train", "mnist-quick", "--set", "train.steps", "--dry-run"], "KEY=VALUE"),
    "train --set a string for an int": (["train", "mnist-quick", "--set", "train.batch_size=many", "--dry-run"],
                                        "train.batch_size"),
    "train --steps 0": (["train", "mnist-quick", "--steps", "0", "--dry-run"], "--steps"),
    "train unknown recipe": (["train", "no-such-recipe", "--dry-run"], "no-such-recipe"),
    "train malformed settings JSON": (["train", "bad.json", "--dry-run"], "JSON"),
    "train settings JSON that is not an object": (["train", "list.json", "--dry-run"], "object"),
    "train settings file with an unknown key": (["train", "typo.json", "--dry-run"], "train.stepz"),
    "train missing settings file": (["train", "missing.json", "--dry-run"], "missing.json"),
    "train --out under a file": (["train", "mnist-quick", "--out", "afile/run", "--steps", "1"], "afile/run"),
    "evaluate --n 3": (["evaluate", "random.pt", "--n", "3"], "--n must be at least 10"),
    "evaluate a missing checkpoint": (["evaluate", "nope.pt"], "nope.pt"),
    "evaluate --truncation 0": (["evaluate", "random.pt", "--truncation", "0"], "truncation must be a number above 0"),
    "report a folder that is not a run": (["report", "G"], "G"),
    "unknown command": (["fly"], "fly"),
}


@pytest.mark.parametrize("args,fragment", list(BAD_COMMANDS.values()), ids=list(BAD_COMMANDS))
def test_bad_input_gives_one_line(args, fragment, junk):
    message = assert_one_line_error(run(*args, cwd=junk))
    assert fragment in message
    # torch's own advice for unreadable files (load with weights_only=False) is unsafe for a user to follow.
    assert "weights_only" not in message, message


def test_no_command_is_an_error(tmp_path):
    assert_one_line_error(run(cwd=tmp_path))


# A tiny real run ----------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    """64 random 16x16 grey PNGs, 6 training steps with tiny nets, through `multigan train`."""
    root = tmp_path_factory.mktemp("cli")
    data = root / "pngs"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(64):
        # Blobs of varying brightness on black, so the data is not pure noise.
        yy, xx = np.mgrid[:16, :16]
        cy, cx = rng.uniform(4, 12, 2)
        blob = 255 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / rng.uniform(4, 16))
        Image.fromarray(blob.astype(np.uint8), "L").save(data / f"img-{i:03d}.png")
    settings = {
        "name": "tiny",
        "data": {"modality": "image", "source": "folder", "root": str(data), "channels": 1, "height": 16, "width": 16},
        "model": {"z_dim": 8, "g_width": 8, "d_width": 8},
        "train": {"steps": 6, "batch_size": 16, "checkpoint_every": 3, "preview_every": 3, "log_every": 2,
                  "n_preview": 16, "device": "cpu"},
    }
    (root / "settings.json").write_text(json.dumps(settings, indent=2))
    result = run("train", "settings.json", "--out", "RUN", "--no-progress", cwd=root)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return root


def test_train_writes_a_run_folder(tiny_run):
    run_dir = tiny_run / "RUN"
    assert (run_dir / "checkpoints" / "latest.pt").is_file()
    assert {p.name for p in (run_dir / "checkpoints").glob("step-*.pt")} == {"step-0000003.pt", "step-0000006.pt"}
    assert json.loads((run_dir / "config.json").read_text())["train"]["steps"] == 6
    steps = [json.loads(line)["step"] for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6]
    previews = sorted((run_dir / "previews").glob("*.png"))
    assert [p.name for p in previews] == ["step-0000003.png", "step-0000006.png"]


def test_info_shows_the_step(tiny_run):
    result = run("info", "RUN/checkpoints/latest.pt", cwd=tiny_run)
    assert result.returncode == 0, result.stderr
    assert re.search(r"^\s*step: 6$", result.stdout, re.M), result.stdout
    assert "1, 16, 16" in result.stdout
    assert '"z_dim": 8' in result.stdout  # the settings the checkpoint carries
    assert re.search(r"^\s*classes: none \(unconditional\)$", result.stdout, re.M), result.stdout


def _generate(cwd: Path, out: str, seed: int, n: int = 5) -> subprocess.CompletedProcess:
    result = run("generate", "RUN/checkpoints/latest.pt", "--n", str(n), "--out", out, "--seed", str(seed),
                 "--device", "cpu", cwd=cwd)
    assert result.returncode == 0, result.stderr
    return result


def test_generate_writes_samples_grid_and_record(tiny_run):
    _generate(tiny_run, "G", seed=3)
    out = tiny_run / "G"
    names = {p.name for p in out.iterdir()}
    assert names == {f"sample-{i:04d}.png" for i in range(5)} | {"sample-grid.png", "generation.json"}
    record = json.loads((out / "generation.json").read_text())
    assert record["seed"] == 3 and record["step"] == 6 and record["n"] == 5
    assert Path(record["checkpoint"]) == (tiny_run / "RUN" / "checkpoints" / "latest.pt").resolve()
    samples = []
    for i in range(5):
        with Image.open(out / f"sample-{i:04d}.png") as im:
            assert im.format == "PNG" and im.size == (16, 16) and im.mode == "L"
            samples.append(np.asarray(im))
            assert np.ptp(samples[-1]) > 0, "a constant image"
    assert any(not np.array_equal(samples[0], s) for s in samples[1:]), "every sample is the same"
    with Image.open(out / "sample-grid.png") as im:
        assert im.format == "PNG" and im.width > 16 and im.height > 16


def _pngs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.png"))}


def test_generation_is_seeded_and_needs_no_dataset(tiny_run):
    if not (tiny_run / "G").is_dir():  # when run on its own
        _generate(tiny_run, "G", seed=3)
    _generate(tiny_run, "C", seed=4)
    g, c = _pngs(tiny_run / "G"), _pngs(tiny_run / "C")
    assert len(g) == 6 and g.keys() == c.keys()
    assert all(g[k] != c[k] for k in g if k.startswith("sample-0")), "another seed gave the same samples"

    # The checkpoint alone is enough (no dataset folder, no cache), and the same seed gives the same files.
    shutil.rmtree(tiny_run / "pngs")
    shutil.rmtree(tiny_run / "cache", ignore_errors=True)
    _generate(tiny_run, "D", seed=3)
    assert _pngs(tiny_run / "D") == g, "the same seed gave different files"


def test_generate_into_a_path_under_a_file(tiny_run):
    (tiny_run / "afile").write_text("x")
    result = run("generate", "RUN/checkpoints/latest.pt", "--out", "afile/G", cwd=tiny_run)
    assert_one_line_error(result)
    assert not (tiny_run / "afile").is_dir()


# Vocode -------------------------------------------------------------------
def test_vocode_keeps_clips_with_the_same_stem_apart(tmp_path):
    import soundfile as sf

    clips = {"a/x.wav": 300.0, "b/x.wav": 600.0, "y.flac": 900.0, "y.wav": 1500.0}  # name -> tone (Hz)
    t = np.arange(2400) / 8000
    for name, freq in clips.items():
        (tmp_path / "in" / name).parent.mkdir(parents=True, exist_ok=True)
        sf.write(tmp_path / "in" / name, (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32), 8000)
    result = run("vocode", "in", "--out", "out", "--set", "gl_iter=4", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "wrote 4 WAV files" in result.stdout
    written = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.wav"))
    assert written == sorted(f"{name}.wav" for name in clips)  # the documented rule: <path under IN>.wav
    for name, freq in clips.items():  # each file holds its own clip, not another one written over it
        wave, rate = sf.read(tmp_path / "out" / f"{name}.wav")
        peak = np.fft.rfftfreq(len(wave), 1 / rate)[np.abs(np.fft.rfft(wave)).argmax()]
        assert abs(peak - freq) < 20, (name, peak)
        assert name in result.stdout


@pytest.mark.parametrize("name, folder", [("../../x", "x"), ("/etc/cron.d", "etc-cron.d"), ("..", "run"), ("", "run"),
                                          ("mnist quick", "mnist-quick"), (".hidden", "hidden"), ("ok-1.2_a", "ok-1.2_a")])
def test_a_run_name_from_settings_stays_under_runs(name, folder, tmp_path, capsys):
    from multigan.cli import main
    from multigan.config import RunConfig
    from multigan.folders import run_folder_name

    assert run_folder_name(name) == folder
    settings = tmp_path / "s.json"
    settings.write_text(RunConfig(name=name).to_json())
    assert main(["train", str(settings), "--dry-run"]) == 0
    assert f"# output folder: {Path('runs') / folder}" in capsys.readouterr().err
