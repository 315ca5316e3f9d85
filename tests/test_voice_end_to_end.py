"""Voice end to end: train on FSDD clips, generate WAVs from the checkpoint alone, vocode, espeak clips."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from multigan.restore import restore
from multigan.run import train_run
from multigan.generate import generate
from multigan.config import RunConfig
from multigan.presets import voice_quick

REPO_ROOT = Path(__file__).resolve().parents[1]


def _env(cache: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO_ROOT), "MULTIGAN_CACHE": str(cache)}


@pytest.fixture(scope="module")
def clips(shared_data, tmp_path_factory) -> Path:
    """120 FSDD clips (two takes of each digit by each of six speakers), copied so the test owns them."""
    folder = tmp_path_factory.mktemp("fsdd")
    for path in sorted((shared_data / "fsdd" / "recordings").glob("*_[01].wav")):
        shutil.copy(path, folder / path.name)
    assert len(list(folder.iterdir())) == 120
    return folder


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="module")
def voice_run(clips, cache, tmp_path_factory) -> Path:
    cfg = voice_quick()
    for key, value in {"data.root": str(clips), "train.steps": 24, "train.checkpoint_every": 12,
                       "train.preview_every": 12, "train.log_every": 6, "train.batch_size": 16, "train.device": "cpu",
                       "model.g_width": 8, "model.d_width": 8, "data.audio.gl_iter": 8}.items():
        cfg = cfg.override(key, value)
    run_dir = tmp_path_factory.mktemp("voice") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MULTIGAN_CACHE", str(cache))
        last = train_run(cfg, run_dir, progress=False)
    assert last.name == "step-0000024.pt"
    return run_dir


def _assert_clip(path: Path, sample_rate: int, length: int) -> np.ndarray:
    info = sf.info(path)
    assert info.samplerate == sample_rate and info.subtype == "PCM_16" and info.channels == 1, info
    wave, _ = sf.read(path, dtype="float32")
    assert len(wave) == length, (path, len(wave))
    assert np.isfinite(wave).all() and np.abs(wave).max() > 1e-3, f"{path} is silent"
    return wave


def test_training_writes_spectrogram_previews_and_sounds(voice_run):
    previews = sorted(p.name for p in (voice_run / "previews").iterdir())
    assert previews == ["step-0000012.png", "step-0000012.wav", "step-0000024.png", "step-0000024.wav"]
    with Image.open(voice_run / "previews" / "step-0000024.png") as im:
        assert im.format == "PNG" and im.mode == "RGB"
    steps = [json.loads(line)["step"] for line in (voice_run / "log.jsonl").read_text().splitlines()]
    assert steps == [6, 12, 18, 24]


def test_generate_wavs_from_the_checkpoint_alone(voice_run, clips, cache, tmp_path):
    moved = tmp_path / "ckpt.pt"
    shutil.copy(voice_run / "checkpoints" / "latest.pt", moved)
    hidden = clips.with_name(clips.name + "-hidden")
    clips.rename(hidden)  # no dataset while generating
    try:
        result = subprocess.run([sys.executable, "-m", "multigan", "generate", str(moved), "--n", "4", "--out",
                                 str(tmp_path / "gen"), "--seed", "5"], env=_env(tmp_path / "empty-cache"),
                                capture_output=True, text=True, timeout=300)
    finally:
        hidden.rename(clips)
    assert result.returncode == 0, result.stderr
    audio = restore(moved).modality.audio
    waves = [_assert_clip(tmp_path / "gen" / f"sample-{i:04d}.wav", audio.sample_rate, audio.length) for i in range(4)]
    assert not np.allclose(waves[0], waves[1]), "different noise gives the same clip"
    for i in range(4):
        with Image.open(tmp_path / "gen" / f"sample-{i:04d}.png") as im:
            assert im.size == (2 * audio.frames, 2 * audio.n_mels)
    record = json.loads((tmp_path / "gen" / "generation.json").read_text())
    assert record["seed"] == 5 and record["step"] == 24 and record["modality"] == "mel"


def test_generation_is_deterministic(voice_run, tmp_path):
    restored = restore(voice_run / "checkpoints" / "latest.pt")
    generate(restored, 2, tmp_path / "a", seed=1)
    generate(restored, 2, tmp_path / "b", seed=1)
    assert (tmp_path / "a" / "sample-0000.wav").read_bytes() == (tmp_path / "b" / "sample-0000.wav").read_bytes()


def test_mel_statistics_are_cached(voice_run, cache):
    stats = list((cache / "mel-stats").glob("*.json"))
    assert len(stats) == 1
    saved = json.loads(stats[0].read_text())
    assert len(saved["mean"]) == voice_quick().data.audio.n_mels
    assert restore(voice_run / "checkpoints" / "latest.pt").modality.mean.tolist() == pytest.approx(saved["mean"])


def test_vocode_prints_the_vocoder_ceiling(clips, tmp_path):
    result = subprocess.run([sys.executable, "-m", "multigan", "vocode", str(clips), "--out", str(tmp_path / "v"),
                             "--limit", "3", "--set", "gl_iter=16"], env=_env(tmp_path / "cache"),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    last = [line for line in result.stdout.splitlines() if line.startswith("mean of 3")]
    assert last, result.stdout
    sc, lsd = map(float, last[0].split()[-2:])
    assert 0 < sc < 0.5 and 0 < lsd < 20, (sc, lsd)
    written = sorted((tmp_path / "v").glob("*.wav"))
    assert len(written) == 3
    for path in written:
        original, sr = sf.read(clips / path.name.removesuffix(".wav"), dtype="float32")  # IN/x.wav -> OUT/x.wav.wav
        _assert_clip(path, 8000, len(original))


def test_vocode_of_a_missing_path_is_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "multigan", "vocode", str(tmp_path / "nope"), "--out",
                             str(tmp_path / "v")], env=_env(tmp_path / "cache"), capture_output=True, text=True)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "not found" in result.stderr


def test_espeak_script_speaks_digit_clips(tmp_path):
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is not installed: `make test` installs it (make espeak)")
    result = subprocess.run([sys.executable, str(REPO_ROOT / "recipes" / "voice" / "make_digits.py"), "--out",
                             str(tmp_path / "clips"), "--voices", "en-us"], env=_env(tmp_path / "cache"),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    files = sorted((tmp_path / "clips").glob("*.wav"))
    assert len(files) == 60 and {f.name.split("_")[0] for f in files} == {str(d) for d in range(10)}
    wave, sr = sf.read(files[0], dtype="float32")
    assert sr > 0 and 0.2 * sr < len(wave) < 3 * sr and np.abs(wave).max() > 0.01


def test_resume_keeps_the_checkpoints_mel_statistics(voice_run, clips, cache, tmp_path, monkeypatch):
    # Other clips behind --data-root on resume: the run goes on with the statistics it trained with.
    other = tmp_path / "other"
    other.mkdir()
    for path in sorted(clips.glob("*_george_*.wav"))[:12]:
        shutil.copy(path, other / path.name)
    run_dir = tmp_path / "run"
    shutil.copytree(voice_run, run_dir)
    before = torch.load(run_dir / "checkpoints" / "step-0000024.pt", weights_only=True)["modality"]["state"]
    cfg = RunConfig.from_json(torch.load(run_dir / "checkpoints" / "step-0000024.pt", weights_only=True)["config"])
    cfg = cfg.override("data.root", str(other)).override("train.steps", 26)
    monkeypatch.setenv("MULTIGAN_CACHE", str(cache))
    last = train_run(cfg, run_dir, resume=run_dir / "checkpoints" / "step-0000024.pt", progress=False)
    after = torch.load(last, weights_only=True)["modality"]["state"]
    assert torch.equal(before["mean"], after["mean"]) and torch.equal(before["std"], after["std"])


def test_an_endless_griffin_lim_in_a_checkpoint_is_refused():
    from multigan.errors import ConfigError

    with pytest.raises(ConfigError, match="gl_iter"):
        RunConfig().override("data.audio.gl_iter", 10**9)
