from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import multigan.audio.io as audio_io
from multigan.audio.io import fix_length, load_audio, trim_silence, write_wav
from multigan.errors import DataError

FSDD_CLIP = Path("fsdd/recordings/7_jackson_12.wav")


def _tone(seconds: float, sample_rate: int, freq: float = 440.0, amplitude: float = 0.5) -> np.ndarray:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))


# Loading -----------------------------------------------------------------
def test_loads_fsdd_clip_at_its_rate_and_resampled(shared_data):
    path = shared_data / FSDD_CLIP
    info = sf.info(path)
    assert (info.samplerate, info.channels, info.subtype) == (8000, 1, "PCM_16")
    wave = load_audio(path, 8000)
    assert wave.dtype == np.float32 and wave.shape == (info.frames,)
    reference, _ = sf.read(path, dtype="float32")
    np.testing.assert_array_equal(wave, reference)  # no resampling at the file's own rate

    wave16 = load_audio(path, 16000)
    assert wave16.dtype == np.float32 and wave16.ndim == 1
    assert abs(len(wave16) - 2 * len(wave)) <= 1
    assert np.isfinite(wave16).all()
    assert _rms(wave16) == pytest.approx(_rms(wave), rel=0.05)


def test_stereo_flac_becomes_mono_at_the_target_rate(tmp_path):
    left = _tone(1.0, 44_100, amplitude=0.8)
    stereo = np.stack([left, 0.5 * left], axis=1)  # [T, 2]; their mean is a tone of amplitude 0.6
    path = tmp_path / "stereo.flac"
    sf.write(path, stereo, 44_100, subtype="PCM_16")
    wave = load_audio(path, 16000)
    assert wave.dtype == np.float32 and wave.ndim == 1
    assert abs(len(wave) - 16000) <= 1
    middle = wave[1000:-1000]  # away from the resampler's edges
    assert _rms(middle) == pytest.approx(0.6 / 2**0.5, rel=0.01)
    assert np.abs(middle).max() == pytest.approx(0.6, rel=0.01)


@pytest.mark.parametrize("suffix", [".ogg", ".mp3"])
def test_compressed_formats_load(tmp_path, suffix):
    path = tmp_path / f"tone{suffix}"
    tone = _tone(1.0, 8000)
    sf.write(path, tone, 8000)
    wave = load_audio(path, 8000)
    assert wave.dtype == np.float32 and abs(len(wave) - 8000) <= 1200  # MP3 adds encoder delay
    assert np.isfinite(wave).all()
    assert _rms(wave) == pytest.approx(_rms(tone), rel=0.1)


def test_falls_back_to_librosa_when_soundfile_fails(shared_data, monkeypatch):
    path = shared_data / FSDD_CLIP
    expected = load_audio(path, 8000)

    def broken_read(*args, **kwargs):
        raise sf.LibsndfileError(0, prefix="simulated: ")

    monkeypatch.setattr(audio_io, "_read_mono", broken_read)  # fails while decoding, as soundfile would
    np.testing.assert_allclose(load_audio(path, 8000), expected, atol=1e-6)


def _bad_files(folder: Path) -> dict[str, Path]:
    good = folder / "good.wav"
    sf.write(good, _tone(0.5, 8000), 8000, subtype="PCM_16")
    data = good.read_bytes()
    nan = _tone(0.1, 8000)
    nan[10] = np.nan
    files = {
        "zero bytes": folder / "empty.wav",
        "text": folder / "notes.wav",
        "cut in header": folder / "header.wav",
        "no samples": folder / "no-data.wav",
        "non-finite": folder / "nan.wav",
        "missing": folder / "missing.wav",
        "folder": folder / "folder.wav",
    }
    files["zero bytes"].write_bytes(b"")
    files["text"].write_text("this is not audio\n")
    files["cut in header"].write_bytes(data[:30])
    files["no samples"].write_bytes(data[:44])  # a complete header with an empty data chunk
    sf.write(files["non-finite"], nan, 8000, subtype="FLOAT")
    files["folder"].mkdir()
    return files


def test_bad_files_raise_data_error_only(tmp_path):
    for kind, path in _bad_files(tmp_path).items():
        with pytest.raises(DataError) as error:
            load_audio(path, 16000)
        message = str(error.value)
        assert str(path) in message and "\n" not in message, kind


def test_truncated_wav_gives_the_samples_that_are_there(tmp_path):
    tone = _tone(0.5, 8000)
    full = tmp_path / "full.wav"
    sf.write(full, tone, 8000, subtype="PCM_16")
    cut = tmp_path / "cut.wav"
    cut.write_bytes(full.read_bytes()[: 44 + 2 * 1000 + 1])  # the header says 4000 samples; 1000 and a half are there
    wave = load_audio(cut, 8000)
    assert len(wave) == 1000
    np.testing.assert_allclose(wave, tone[:1000], atol=1 / 32768)


@pytest.mark.parametrize("rate, seconds, bounds, reason", [
    (1, 2000, {}, "sample rate 1 Hz is outside min_source_rate..max_source_rate (4000..192000 Hz)"),
    (384_000, 0.01, {}, "sample rate 384000 Hz is outside"),
    (4000, 61, {}, "61.0 s long, over max_seconds (60 s)"),
    (8000, 0.5, {"max_seconds": 0.25}, "0.5 s long, over max_seconds (0.25 s)"),
    (8000, 0.5, {"min_source_rate": 11_025}, "sample rate 8000 Hz is outside"),
])
def test_source_out_of_bounds_is_refused_from_its_header(tmp_path, monkeypatch, rate, seconds, bounds, reason):
    # A 4 KB WAV whose header says 1 Hz was resampled to 16 million samples (a 200 KB one: GBs).
    path = tmp_path / "clip.wav"
    sf.write(path, np.random.default_rng(0).uniform(-0.5, 0.5, int(rate * seconds)), rate, subtype="PCM_16")

    def no_decoding(*args):
        raise AssertionError("decoded a file its header rules out")

    monkeypatch.setattr(audio_io, "_read_mono", no_decoding)
    with pytest.raises(DataError) as error:
        load_audio(path, 8000, **bounds)
    assert str(error.value).startswith(f"cannot use {path}: {reason}")


def test_float_file_past_full_scale_is_scaled_to_peak_one(tmp_path):
    # It used to pass through as 1e30, whose log-mel overflows: "nothing left after trimming".
    tone = _tone(0.5, 8000)
    huge = tmp_path / "huge.wav"
    sf.write(huge, 2e30 * tone, 8000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(huge, 8000), tone / 0.5, rtol=1e-6, atol=1e-7)
    unscaled_pcm = tmp_path / "int16-values.wav"  # a common slip: int16 values written as float
    sf.write(unscaled_pcm, np.rint(32767 * tone), 8000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(unscaled_pcm, 8000), tone / 0.5, atol=1e-4)
    within = tmp_path / "within.wav"  # a float file within [-1, 1] keeps its level
    sf.write(within, tone, 8000, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(within, 8000), tone)

    beyond = tmp_path / "beyond-float32.wav"
    sf.write(beyond, 1e300 * tone.astype(np.float64), 8000, subtype="DOUBLE")
    with pytest.raises(DataError, match="non-finite or out-of-range samples"):
        load_audio(beyond, 8000)


def test_many_channels_are_averaged_block_by_block(tmp_path, monkeypatch):
    channels = np.stack([_tone(0.5, 8000, freq=f) for f in (220, 330, 440, 550, 660, 770)], axis=1)  # [4000, 6]
    path = tmp_path / "six.wav"
    sf.write(path, channels, 8000, subtype="FLOAT")
    monkeypatch.setattr(audio_io, "BLOCK_FRAMES", 1500)  # three blocks, the last one short
    np.testing.assert_allclose(load_audio(path, 8000), channels.mean(axis=1), atol=1e-7)


# Trimming ----------------------------------------------------------------
def test_trim_removes_silence_and_faint_noise_around_a_tone():
    sr = 8000
    noise = np.random.default_rng(0).normal(0, 1e-4, sr).astype(np.float32)  # -77 dB below the tone's RMS
    tone = _tone(0.5, sr)
    wave = np.concatenate([np.zeros(sr, np.float32), noise, tone, noise, np.zeros(sr, np.float32)])
    trimmed = trim_silence(wave, 60.0)
    assert len(tone) <= len(trimmed) <= len(tone) + 2 * 2048  # cuts fall on 512-sample hops
    # The whole tone is kept, in one piece.
    offset = int(np.flatnonzero(np.abs(trimmed) > 0.01)[0] - np.flatnonzero(np.abs(tone) > 0.01)[0])
    np.testing.assert_array_equal(trimmed[offset:offset + len(tone)], tone)
    assert offset <= 2048 and len(trimmed) - offset - len(tone) <= 2048
    assert trim_silence(wave, None) is wave


# Fixed length ------------------------------------------------------------
def test_center_crop_and_pad():
    x = torch.arange(1, 11, dtype=torch.float32)  # 10 samples
    assert torch.equal(fix_length(x, 4), torch.tensor([4.0, 5, 6, 7]))  # the middle: offset (10 - 4) // 2
    assert torch.equal(fix_length(x, 10), x)
    padded = fix_length(x, 15)
    assert padded.shape == (15,)
    assert torch.equal(padded[2:12], x) and not padded[:2].any() and not padded[12:].any()


def test_start_crop_and_pad():
    x = torch.arange(1, 11, dtype=torch.float32)
    assert torch.equal(fix_length(x, 3, "start"), torch.tensor([1.0, 2, 3]))
    padded = fix_length(x, 13, "start")
    assert torch.equal(padded[:10], x) and not padded[10:].any()


def test_batched_input_keeps_leading_axes():
    x = torch.randn(2, 3, 50)
    assert fix_length(x, 20).shape == (2, 3, 20)
    assert torch.equal(fix_length(x, 20), x[..., 15:35])
    padded = fix_length(x, 60, "start")
    assert padded.shape == (2, 3, 60) and torch.equal(padded[..., :50], x) and not padded[..., 50:].any()


def test_random_crop_is_reproducible_and_varies():
    x = torch.arange(1000, dtype=torch.float32)

    def offsets(seed: int) -> list[int]:
        torch.manual_seed(seed)
        return [int(fix_length(x, 100, "random")[0]) for _ in range(20)]

    assert offsets(0) == offsets(0)
    assert offsets(0) != offsets(1)
    assert len(set(offsets(0))) > 10
    for seed in range(3):
        torch.manual_seed(seed)
        crop = fix_length(x, 100, "random")
        assert torch.equal(crop, torch.arange(crop[0], crop[0] + 100))  # contiguous, in range
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(fix_length(x, 10, "random", g1), fix_length(x, 10, "random", g2))


def test_random_pad_places_the_whole_clip_in_zeros():
    x = torch.ones(10)
    starts = set()
    torch.manual_seed(0)
    for _ in range(50):
        y = fix_length(x, 16, "random")
        nonzero = torch.nonzero(y).flatten()
        assert y.sum() == 10 and nonzero[-1] - nonzero[0] == 9
        starts.add(int(nonzero[0]))
    assert starts == set(range(7))


def test_bad_mode_or_length():
    with pytest.raises(ValueError):
        fix_length(torch.zeros(5), 3, "middle")
    with pytest.raises(ValueError):
        fix_length(torch.zeros(5), 0)


# Writing -----------------------------------------------------------------
@pytest.mark.parametrize("as_torch, shape", [(False, (1200,)), (True, (1, 1200))])
def test_write_wav_round_trip(tmp_path, as_torch, shape):
    wave = np.random.default_rng(0).uniform(-1, 1, 1200).astype(np.float32)
    wave[:4] = [1.0, -1.0, 3.0, -3.0]  # the last two are clipped
    data = torch.from_numpy(wave).reshape(shape) if as_torch else wave.reshape(shape)
    path = write_wav(tmp_path / "new" / "folder" / "x.wav", data, 16000)
    assert path == tmp_path / "new" / "folder" / "x.wav"
    info = sf.info(path)
    assert (info.format, info.subtype, info.samplerate, info.channels, info.frames) == ("WAV", "PCM_16", 16000, 1, 1200)
    back, _ = sf.read(path, dtype="float32")
    expected = np.clip(wave, -1, 1)
    assert np.abs(back - expected).max() <= 1 / 32768
    np.testing.assert_allclose(load_audio(path, 16000), back)


def test_write_wav_rejects_multichannel(tmp_path):
    with pytest.raises(DataError):
        write_wav(tmp_path / "x.wav", np.zeros((2, 100), np.float32), 8000)
