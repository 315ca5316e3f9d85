"""What the adapters write for generated samples: labelled spectrogram overviews, walks, scaled grids."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from multigan.config import AudioConfig
from multigan.modalities.image import ImageModality
from multigan.modalities.mel import MelModality, mel_ticks

AUDIO = AudioConfig(sample_rate=8000, n_fft=256, hop_length=64, n_mels=32, frames=24, gl_iter=4)


@pytest.fixture(scope="module")
def mel():
    return MelModality(AUDIO, torch.full((AUDIO.n_mels,), -30.0), torch.full((AUDIO.n_mels,), 10.0))


def _artifacts(mel, n):
    x = torch.rand(n, *mel.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    return mel.decode(x)


def test_mel_ticks_are_round_frequencies_in_order_on_the_mel_axis():
    hz, at = mel_ticks(AUDIO)
    assert hz == [100, 250, 500, 1000, 2000]  # within 0..4000 Hz, the centres of 32 mel bins
    assert all(0 < a < AUDIO.n_mels for a in at) and at == sorted(at)
    gaps = np.diff(at)
    assert gaps[-1] < 2 * gaps[-2]  # mel: an octave up high takes about as many bins as one lower down
    htk_hz, htk_at = mel_ticks(AudioConfig(**{**AUDIO.__dict__, "htk": True}))
    assert htk_hz == hz and htk_at != at


def test_overview_has_axes_labels_and_a_colour_scale(mel, tmp_path):
    art = _artifacts(mel, 4)
    plain = mel.save(art, tmp_path / "plain")
    labelled = mel.save(art, tmp_path / "labelled", labels=torch.tensor([3, 1, 4, 1]))
    with Image.open(plain[-1]) as a, Image.open(labelled[-1]) as b:
        # far larger than the 2x2 tiles of 64x48 px: a figure with ticks, axis names and a colour bar
        assert a.size[0] > 2 * 2 * 48 + 200 and a.size == b.size
        assert np.asarray(a.convert("RGB")).std() > 0
    assert plain[-1].read_bytes() != labelled[-1].read_bytes()  # the class titles
    names = ["zero", "one", "two", "three", "four"]
    named = mel.save(art, tmp_path / "named", labels=torch.tensor([3, 1, 4, 1]), class_names=names)
    assert named[-1].read_bytes() != labelled[-1].read_bytes()  # titled "three", not "class 3"
    with Image.open(plain[1]) as single:
        assert single.size == (2 * AUDIO.frames, 2 * AUDIO.n_mels)  # the per-sample PNGs stay plain
    with Image.open(mel.save(art, tmp_path / "big", scale=2)[-1]) as big, Image.open(plain[-1]) as small:
        assert big.size == (2 * small.size[0], 2 * small.size[1])


def test_mel_walks_make_one_grid_and_one_wav(mel, tmp_path):
    rows, steps = 2, 3
    art = _artifacts(mel, rows * steps)
    grid, wav = mel.save_walks(art, steps, tmp_path, prefix="w")
    assert (grid.name, wav.name) == ("w-grid.png", "w.wav")
    with Image.open(grid) as im:
        assert im.size == (steps * (2 * AUDIO.frames + 2) + 2, rows * (2 * AUDIO.n_mels + 2) + 2)
    audio, sr = sf.read(wav)
    sr8 = AUDIO.sample_rate
    expected = rows * steps * AUDIO.length + (rows * (steps - 1)) * (sr8 // 8) + (rows - 1) * (sr8 // 2)
    assert sr == sr8 and len(audio) == expected


def test_image_walks_put_a_walk_on_each_row(tmp_path):
    images = torch.randint(0, 256, (8, 1, 10, 12), dtype=torch.uint8)
    (grid,) = ImageModality(1, 10, 12).save_walks(images, 4, tmp_path, scale=2)
    with Image.open(grid) as im:
        assert im.size == (2 * (4 * 14 + 2), 2 * (2 * 12 + 2))
        pixels = np.asarray(im)
    assert (pixels[2 * 2:2 * 12, 2 * 2:2 * 14][::2, ::2] == images[0, 0].numpy()).all()
