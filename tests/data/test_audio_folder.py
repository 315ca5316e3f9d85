from __future__ import annotations

import errno
import logging
import os
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import multigan.audio.io as audio_io
from multigan.data.audio_folder import ClipDataset, find_audio_files, fsdd_split, load_clip_folder
from multigan.errors import ConfigError, DataError

SR = 8000
LENGTH = 4096
# 40 FSDD clips: every digit by four (speaker, take) pairs, two of them in the test takes 0-4.
SUBSET = [f"{digit}_{speaker}_{take}.wav" for digit in range(10)
          for speaker, take in (("george", 1), ("jackson", 30), ("theo", 3), ("yweweler", 17))]


def _tone(seconds: float, sample_rate: int = SR, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return (amplitude * np.sin(2 * np.pi * 330 * t)).astype(np.float32)


class DecodeCounter:
    """Wraps `load_audio` to count the files actually decoded."""

    def __init__(self, monkeypatch):
        self.paths: list[Path] = []
        real = audio_io.load_audio

        def counting(path, sample_rate, **bounds):
            self.paths.append(Path(path))
            return real(path, sample_rate, **bounds)

        monkeypatch.setattr(audio_io, "load_audio", counting)

    def take(self) -> list[Path]:
        paths, self.paths = self.paths, []
        return paths


@pytest.fixture()
def recordings(shared_data) -> Path:
    return shared_data / "fsdd" / "recordings"


@pytest.fixture()
def fsdd_copy(recordings, tmp_path) -> Path:
    """Eight FSDD clips in a folder the test may modify."""
    folder = tmp_path / "fsdd"
    folder.mkdir()
    for name in SUBSET[::5]:
        shutil.copy2(recordings / name, folder / name)
    return folder


def _load(root: Path, cache: Path, **kwargs) -> ClipDataset:
    options = {"sample_rate": SR, "length": LENGTH, "cache_dir": cache, "progress": False} | kwargs
    return load_clip_folder(root, **options)


# Real FSDD -----------------------------------------------------------------
def test_fsdd_subset_with_labels_and_speakers(recordings, tmp_path):
    before = {p.name: p.stat().st_mtime_ns for p in recordings.iterdir()}
    chosen = set(SUBSET)
    dataset = _load(recordings, tmp_path / "cache", select=lambda p: p.name in chosen)
    assert {p.name: p.stat().st_mtime_ns for p in recordings.iterdir()} == before  # nothing written there
    assert len(dataset) == 40
    assert [p.name for p in dataset.paths] == sorted(chosen)
    assert dataset.class_names == [str(d) for d in range(10)]
    digits = [int(p.name.split("_")[0]) for p in dataset.paths]
    assert dataset.labels.dtype == torch.int64 and dataset.labels.tolist() == digits
    assert dataset.speakers == [p.name.split("_")[1] for p in dataset.paths]
    assert set(dataset.speakers) == {"george", "jackson", "theo", "yweweler"}
    for path, wave in zip(dataset.paths, dataset.waveforms):
        assert wave.dtype == torch.float32 and wave.ndim == 1
        assert 0 < len(wave) <= sf.info(path).frames  # trimmed, never longer
        assert torch.isfinite(wave).all() and wave.abs().max() > 0.01
    assert (dataset.sample_rate, dataset.length, dataset.crop) == (SR, LENGTH, "random")


def test_fsdd_split_by_take(recordings, tmp_path):
    files = find_audio_files(recordings)
    assert len(files) == 3000
    test = [p for p in files if fsdd_split("test")(p)]
    train = [p for p in files if fsdd_split("train")(p)]
    assert len(test) == 300 and len(train) == 2700
    assert all(int(p.stem.rsplit("_", 1)[1]) <= 4 for p in test)
    assert all(5 <= int(p.stem.rsplit("_", 1)[1]) <= 49 for p in train)
    assert not set(test) & set(train)
    assert not fsdd_split("test")(Path("speech.wav"))
    with pytest.raises(ValueError):
        fsdd_split("validation")

    chosen = set(SUBSET)
    dataset = _load(recordings, tmp_path / "cache", select=lambda p: p.name in chosen and fsdd_split("test")(p))
    assert len(dataset) == 20
    assert {p.stem.rsplit("_", 1)[1] for p in dataset.paths} == {"1", "3"}


# The cache -----------------------------------------------------------------
def test_second_load_reads_the_cache(fsdd_copy, tmp_path, monkeypatch):
    decoded = DecodeCounter(monkeypatch)
    cache = tmp_path / "cache"
    first = _load(fsdd_copy, cache)
    assert len(decoded.take()) == 8
    assert len(list((cache / "clips").glob("*.npy"))) == 8
    assert not [p for p in (cache / "clips").iterdir() if p.suffix != ".npy"]  # no temporary file left

    second = _load(fsdd_copy, cache)
    assert decoded.take() == []
    assert second.paths == first.paths
    assert all(torch.equal(a, b) for a, b in zip(first.waveforms, second.waveforms))
    assert torch.equal(first.labels, second.labels) and first.speakers == second.speakers


def test_changed_file_or_setting_misses_the_cache(fsdd_copy, tmp_path, monkeypatch):
    decoded = DecodeCounter(monkeypatch)
    cache = tmp_path / "cache"
    first = _load(fsdd_copy, cache)
    decoded.take()

    touched = sorted(fsdd_copy.iterdir())[3]
    stat = touched.stat()
    os.utime(touched, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    again = _load(fsdd_copy, cache)
    assert decoded.take() == [touched]
    assert all(torch.equal(a, b) for a, b in zip(first.waveforms, again.waveforms))

    for change in ({"trim_db": 40.0}, {"trim_db": None}, {"sample_rate": 16000}, {"min_rms": 1e-3}):
        changed = _load(fsdd_copy, cache, **change)
        assert len(decoded.take()) == 8, change
        if change == {"trim_db": 40.0}:  # more counts as silence: clips get shorter
            assert all(len(b) <= len(a) for a, b in zip(first.waveforms, changed.waveforms))
            assert any(len(b) < len(a) for a, b in zip(first.waveforms, changed.waveforms))
        if change == {"trim_db": None}:  # whole files
            assert [len(w) for w in changed.waveforms] == [sf.info(p).frames for p in changed.paths]
    _load(fsdd_copy, cache, trim_db=None)
    assert decoded.take() == []  # each setting has its own entries


def test_damaged_cache_entries_are_decoded_again(fsdd_copy, tmp_path, monkeypatch):
    decoded = DecodeCounter(monkeypatch)
    cache = tmp_path / "cache"
    first = _load(fsdd_copy, cache)
    decoded.take()
    entries = sorted((cache / "clips").glob("*.npy"))
    entries[0].write_bytes(b"not an npy file")
    entries[1].write_bytes(entries[1].read_bytes()[:100])  # cut short
    np.save(entries[2], np.array([{"evil": 1}], dtype=object), allow_pickle=True)  # must never be unpickled
    np.save(entries[3], np.zeros(10, dtype=np.int16))  # wrong dtype
    entries[4].write_bytes(b"")

    again = _load(fsdd_copy, cache)
    assert len(decoded.take()) == 5
    assert all(torch.equal(a, b) for a, b in zip(first.waveforms, again.waveforms))
    _load(fsdd_copy, cache)
    assert decoded.take() == []  # the damaged entries were replaced


def test_unwritable_cache_still_loads(fsdd_copy, tmp_path, caplog):
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder should be\n")
    with caplog.at_level(logging.WARNING, logger="multigan"):
        dataset = _load(fsdd_copy, blocker)
    assert len(dataset) == 8
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "cannot write the clip cache" in warnings[0]


# Bad clips -----------------------------------------------------------------
BAD = {
    "cut-in-header.wav": "No 'data' chunk",
    "empty.wav": "empty file",
    "notes.wav": "Format not recognised",
    "sub/silent.wav": "silent",
    "nan.flac": "non-finite",
}


@pytest.fixture()
def mixed_folder(tmp_path) -> Path:
    root = tmp_path / "mixed"
    (root / "sub").mkdir(parents=True)
    sf.write(root / "good.wav", _tone(0.5), SR, subtype="PCM_16")
    sf.write(root / "sub" / "good.ogg", _tone(0.3), SR)
    sf.write(root / "quiet.WAV", _tone(0.4, amplitude=0.01), SR, subtype="PCM_16")
    stereo = np.stack([_tone(0.5, 44_100), 0.5 * _tone(0.5, 44_100)], axis=1)  # [T, 2]
    sf.write(root / "stereo.flac", stereo, 44_100, subtype="PCM_24")
    full = root / "good.wav"
    data = full.read_bytes()
    (root / "truncated.wav").write_bytes(data[: 44 + 2 * 1500])  # the header says 4000 samples; 1500 are there
    (root / "cut-in-header.wav").write_bytes(data[:30])
    (root / "empty.wav").write_bytes(b"")
    (root / "notes.wav").write_text("this is not audio\n")
    sf.write(root / "sub" / "silent.wav", np.zeros(4000, np.float32), SR, subtype="PCM_16")
    nan = _tone(0.2)
    nan[100] = np.inf
    sf.write(root / "nan.flac", nan.astype(np.float64), SR, format="WAV", subtype="DOUBLE")  # a WAV named .flac
    # Neither counted nor tried: other extensions, hidden files and folders.
    (root / "readme.txt").write_text("ignore me\n")
    (root / ".hidden.wav").write_bytes(b"")
    (root / ".git").mkdir()
    (root / ".git" / "x.wav").write_bytes(b"")
    return root


def test_bad_clips_are_skipped_with_warnings(mixed_folder, tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="multigan"):
        dataset = _load(mixed_folder, tmp_path / "cache")
    names = [p.relative_to(mixed_folder).as_posix() for p in dataset.paths]
    assert names == ["good.wav", "quiet.WAV", "stereo.flac", "sub/good.ogg", "truncated.wav"]
    assert dataset.labels is None and dataset.class_names is None and dataset.speakers is None

    waves = dict(zip(names, dataset.waveforms))
    # The stereo FLAC at 44.1 kHz is loaded: mono, resampled to 8 kHz, the mean of its channels.
    assert abs(len(waves["stereo.flac"]) - 4000) <= 1
    assert waves["stereo.flac"].abs().max() == pytest.approx(0.375, rel=0.02)
    # The truncated WAV gives the 1500 samples that are there, and they are the tone's.
    np.testing.assert_allclose(waves["truncated.wav"].numpy(), _tone(0.5)[:1500], atol=1 / 32768)

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == len(BAD) + 1
    for name, reason in BAD.items():
        hits = [w for w in warnings[:-1] if str(mixed_folder / name) in w]
        assert len(hits) == 1 and reason in hits[0], (name, hits)
    summary = warnings[-1]
    assert summary.startswith(f"skipped {len(BAD)} of {len(BAD) + 5} audio files")
    assert all(f"{name} (" in summary for name in BAD)


def test_bad_clips_are_checked_again_on_a_cached_run(mixed_folder, tmp_path, caplog, monkeypatch):
    _load(mixed_folder, tmp_path / "cache")
    caplog.clear()
    decoded = DecodeCounter(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="multigan"):
        dataset = _load(mixed_folder, tmp_path / "cache")
    assert len(dataset) == 5
    assert sorted(p.relative_to(mixed_folder).as_posix() for p in decoded.take()) == sorted(BAD)
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == len(BAD) + 1


def test_no_usable_clip_is_an_error(mixed_folder, tmp_path):
    for name in ("good.wav", "sub/good.ogg", "quiet.WAV", "stereo.flac", "truncated.wav"):
        (mixed_folder / name).unlink()
    with pytest.raises(DataError, match="none of the 5 audio files"):
        _load(mixed_folder, tmp_path / "cache")
    with pytest.raises(DataError, match="not found"):
        _load(tmp_path / "nowhere", tmp_path / "cache")
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("no audio\n")
    with pytest.raises(DataError, match="no audio files"):
        _load(tmp_path / "texts", tmp_path / "cache")
    with pytest.raises(DataError, match="selected"):
        _load(mixed_folder, tmp_path / "cache", select=lambda p: False)


def test_clips_out_of_bounds_are_skipped_with_reasons(tmp_path, caplog):
    root = tmp_path / "bounds"
    root.mkdir()
    noise = np.random.default_rng(0).uniform(-0.5, 0.5, 250_000).astype(np.float32)
    sf.write(root / "good.wav", _tone(0.5), SR, subtype="PCM_16")
    # 5.4 KB whose header says 1 Hz: it was kept as 45 minutes of resampled noise.
    sf.write(root / "one-hertz.wav", noise[:2700], 1, subtype="PCM_16")
    sf.write(root / "ultrasonic.wav", noise[:3840], 384_000, subtype="PCM_16")
    sf.write(root / "long.wav", noise[:244_000], 4000, subtype="PCM_16")  # 61 s
    sf.write(root / "short.wav", _tone(0.5)[:300], SR, subtype="PCM_16")  # 3 STFT frames
    sf.write(root / "huge.wav", 1e30 * _tone(0.5), SR, subtype="FLOAT")  # kept, scaled to peak 1
    reasons = {
        "one-hertz.wav": "sample rate 1 Hz is outside min_source_rate..max_source_rate (4000..192000 Hz)",
        "ultrasonic.wav": "sample rate 384000 Hz is outside min_source_rate..max_source_rate (4000..192000 Hz)",
        "long.wav": "61.0 s long, over max_seconds (60 s)",
        "short.wav": "too short: 300 samples after trimming at 60 dB, under min_length 512",
    }
    with caplog.at_level(logging.WARNING, logger="multigan"):
        dataset = _load(root, tmp_path / "cache")
    assert [p.name for p in dataset.paths] == ["good.wav", "huge.wav"]
    huge = dataset.waveforms[1]
    assert huge.abs().max() == pytest.approx(1.0, abs=1e-3) and len(huge) >= 3500
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == len(reasons) + 1
    for name, reason in reasons.items():
        assert f"skipping {root / name}: {reason}" in warnings, name
        assert f"{name} ({reason}" in warnings[-1]

    # Tighter bounds, as build.py passes them from data.audio: the same files, other verdicts.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="multigan"):
        dataset = _load(root, tmp_path / "cache", min_source_rate=1, max_seconds=100.0, min_length=200)
    assert [p.name for p in dataset.paths] == ["good.wav", "huge.wav", "long.wav", "short.wav"]
    assert "one-hertz.wav (2,700.0 s long, over max_seconds (100 s))" in caplog.records[-1].getMessage()


def test_bounds_must_make_sense(tmp_path):
    from multigan.config import AudioConfig
    from multigan.errors import ConfigError

    for bounds in ({"min_source_rate": 0}, {"min_source_rate": 48_000, "max_source_rate": 44_100},
                   {"max_seconds": 0}, {"min_length": -1}):
        with pytest.raises(ConfigError):
            _load(tmp_path, tmp_path / "cache", **bounds)
    for settings in ({"min_source_rate": 0}, {"min_source_rate": 48_000, "max_source_rate": 44_100},
                     {"max_seconds": 0.0}, {"min_frames": 0}):
        with pytest.raises(ConfigError):
            AudioConfig(**settings)
    assert AudioConfig().min_length == 512 and AudioConfig(min_frames=1).min_length == 0


def test_full_disk_leaves_the_clip_cache_behind_with_one_warning(fsdd_copy, tmp_path, monkeypatch, caplog):
    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full)
    with caplog.at_level(logging.WARNING, logger="multigan"):
        dataset = _load(fsdd_copy, tmp_path / "cache")
    assert len(dataset) == 8
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "cannot write the clip cache" in warnings[0] and "No space left" in warnings[0]
    assert list((tmp_path / "cache" / "clips").iterdir()) == []  # the temporary file is gone


def test_min_rms_sets_what_counts_as_silent(mixed_folder, tmp_path):
    dataset = _load(mixed_folder, tmp_path / "cache", min_rms=0.05)  # quiet.WAV has RMS 0.007
    assert "quiet.WAV" not in [p.name for p in dataset.paths] and len(dataset) == 4


def test_sub_folders_become_labels(tmp_path):
    for name, count in (("yes", 2), ("no", 3)):
        (tmp_path / "words" / name).mkdir(parents=True)
        for i in range(count):
            sf.write(tmp_path / "words" / name / f"{i}.wav", _tone(0.2 + 0.1 * i), SR, subtype="PCM_16")
    dataset = _load(tmp_path / "words", tmp_path / "cache")
    assert dataset.class_names == ["no", "yes"]
    assert dataset.labels.tolist() == [0, 0, 0, 1, 1]
    assert dataset.speakers is None


# Batches -------------------------------------------------------------------
def test_batches_and_crops(recordings, tmp_path):
    chosen = set(SUBSET)
    dataset = _load(recordings, tmp_path / "cache", select=lambda p: p.name in chosen)
    lengths = torch.tensor([len(w) for w in dataset.waveforms])
    assert (lengths > 2000).any() and (lengths < 2000).any()
    short = ClipDataset(dataset.waveforms, sample_rate=SR, length=2000, paths=dataset.paths)
    indices = list(range(0, 40, 3))

    torch.manual_seed(0)
    batch = short.__getitems__(indices)
    assert batch.shape == (len(indices), 2000) and batch.dtype == torch.float32
    torch.manual_seed(0)
    assert torch.equal(short.__getitems__(indices), batch)
    torch.manual_seed(0)
    assert torch.equal(torch.stack([short[i] for i in indices]), batch)  # same draws, one per clip
    torch.manual_seed(1)
    assert not torch.equal(short.__getitems__(indices), batch)

    center = short.with_crop("center")
    assert center.waveforms is short.waveforms and short.crop == "random" and center.crop == "center"
    assert torch.equal(center.__getitems__(indices), center.__getitems__(indices))
    for row, i in enumerate(indices):
        wave, n = dataset.waveforms[i], len(dataset.waveforms[i])
        if n >= 2000:
            start = (n - 2000) // 2
            assert torch.equal(center[i], wave[start:start + 2000])
            assert any(torch.equal(batch[row], wave[s:s + 2000]) for s in range(n - 2000 + 1))
        else:
            pad = (2000 - n) // 2
            assert torch.equal(center[i][pad:pad + n], wave) and not center[i][:pad].any()
            assert batch[row].count_nonzero() <= n and batch[row].abs().sum() == pytest.approx(wave.abs().sum())
    with pytest.raises(ValueError):
        short.with_crop("middle")

    # As the trainer reads it: a DataLoader with a batch sampler hands over ready [B, length] batches.
    loader = torch.utils.data.DataLoader(center, batch_sampler=[[0, 1, 2], [3, 4, 5]], collate_fn=lambda b: b)
    assert [tuple(b.shape) for b in loader] == [(3, 2000), (3, 2000)]


def test_training_data_places_clips_as_data_audio_crop_says(fsdd_copy, tmp_path, monkeypatch):
    from multigan.config import AudioConfig, DataConfig
    from multigan.registry import load_data

    monkeypatch.setenv("MULTIGAN_CACHE", str(tmp_path / "cache"))
    audio = AudioConfig(frames=32)  # a 0.5 s window at 8 kHz, longer than some clips and shorter than others
    for mode in ("random", "center", "start"):
        dataset, _ = load_data(DataConfig(modality="mel", source="folder", root=str(fsdd_copy),
                                          audio=replace(audio, crop=mode)), progress=False)
        assert dataset.crop == mode
    with pytest.raises(ConfigError, match="data.audio.crop"):
        AudioConfig(crop="middle")
