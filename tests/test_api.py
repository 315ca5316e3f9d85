"""The Python interface: `import multigan` and its four functions, and samples shown in a notebook."""
from __future__ import annotations

import base64
import importlib
import io
import re
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import torch
from PIL import Image

import multigan
from multigan.config import AudioConfig, DataConfig, NetConfig, RunConfig
from multigan.generate import Samples
from multigan.modalities.mel import MelModality
from multigan.nets import dcgan
from multigan.restore import Restored

REPO_ROOT = Path(__file__).resolve().parents[1]
AUDIO = AudioConfig(sample_rate=8000, n_fft=256, hop_length=64, n_mels=32, frames=24, gl_iter=4)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_import_is_cheap_and_names_the_four_functions():
    probe = "import multigan, sys; print('torch' in sys.modules, sorted(multigan.__all__))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert out.stdout.split(None, 1) == ["False", "['evaluate', 'generate', 'restore', 'train']\n"], out.stderr
    for name in multigan.__all__:
        assert callable(getattr(multigan, name)) and getattr(multigan, name).__doc__


def test_functions_survive_importing_the_submodules_of_the_same_name():
    generate_module = importlib.import_module("multigan.generate")
    restore_module = importlib.import_module("multigan.restore")
    assert callable(multigan.generate) and callable(multigan.restore)
    assert multigan.generate is not generate_module and hasattr(generate_module, "synthesize")
    assert hasattr(restore_module, "Restored")


def _mel_restored(tmp_path: Path) -> Restored:
    """A conditional DCGAN generator on 32x24 mel spectrograms, untrained."""
    modality = MelModality(AUDIO, torch.full((32,), -30.0), torch.full((32,), 10.0))
    cfg = RunConfig(data=DataConfig(source="folder"), model=NetConfig(z_dim=8, g_width=8, d_width=8, n_classes=3))
    torch.manual_seed(0)
    G, _ = dcgan.build(cfg.model, modality.shape)
    return Restored(cfg, modality, G.eval(), 7, tmp_path / "fake.pt")


def test_sound_samples_play_in_a_notebook_and_save(tmp_path):
    samples = multigan.generate(_mel_restored(tmp_path), 4, seed=2)
    assert isinstance(samples, Samples) and len(samples) == 4
    assert samples.labels.tolist() == [0, 1, 2, 0]
    page = samples._repr_html_()
    clips = re.findall(r'<audio controls src="data:audio/wav;base64,([A-Za-z0-9+/=]+)"', page)
    assert len(clips) == 4
    audio, sr = sf.read(io.BytesIO(base64.b64decode(clips[0])))
    assert sr == AUDIO.sample_rate and len(audio) == AUDIO.length
    assert "sample-0001.wav · class 1" in page and "data:image/png;base64," in page
    with Image.open(io.BytesIO(samples._repr_png_())) as im:
        assert im.format == "PNG"
    paths = samples.save(tmp_path / "out")
    assert sorted(p.name for p in paths if p.suffix == ".wav") == [f"sample-{i:04d}.wav" for i in range(4)]
    assert (tmp_path / "out" / "generation.json").is_file()


def test_image_samples_show_as_a_grid(tmp_path):
    from multigan.modalities.image import ImageModality

    cfg = RunConfig(data=DataConfig(source="folder", channels=1, height=16, width=16),
                    model=NetConfig(z_dim=8, g_width=8, d_width=8))
    G, _ = dcgan.build(cfg.model, (1, 16, 16))
    restored = Restored(cfg, ImageModality(1, 16, 16), G.eval(), 3, tmp_path / "fake.pt")
    samples = multigan.generate(restored, 9, truncation=0.5)
    with Image.open(io.BytesIO(samples._repr_png_())) as im:
        assert im.size == (3 * 18 + 2, 3 * 18 + 2)
    assert "<audio" not in samples._repr_html_() and "data:image/png;base64," in samples._repr_html_()
    walk = multigan.generate(restored, 2, interpolate=5)
    with Image.open(io.BytesIO(walk._repr_png_())) as im:
        assert im.size == (5 * 18 + 2, 2 * 18 + 2)
    assert "2 walks of 5 steps" in repr(walk)


def test_train_names_a_recipe_or_fails_in_one_line(tmp_path):
    with pytest.raises(multigan.errors.ConfigError, match="not a recipe") as err:
        multigan.train("no-such-recipe", tmp_path / "run")
    assert "\n" not in str(err.value)
