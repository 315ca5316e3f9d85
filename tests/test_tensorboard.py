"""TensorBoard event files (train.tensorboard): read back with TensorBoard's own reader after tiny runs.

Image runs use 64 random 1x16x16 images as in test_trainer.py; mel runs use
synthetic tones at 16 mel bins x 16 frames, so both take a second or two.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from multigan.config import AudioConfig, DataConfig, NetConfig, RunConfig, TrainConfig
from multigan.data.tensors import ImageTensorDataset
from multigan import tensorboard
from multigan.engine.trainer import train
from multigan.errors import ConfigError
from multigan.modalities.image import ImageModality
from multigan.modalities.mel import MelModality
from multigan.nets import dcgan

SHAPE = (1, 16, 16)
IMAGES = ImageTensorDataset(torch.randint(0, 256, (64,) + SHAPE, dtype=torch.uint8, generator=torch.Generator().manual_seed(0)))
AUDIO = AudioConfig(sample_rate=8000, n_fft=128, hop_length=64, n_mels=16, frames=16, gl_iter=2)

pytestmark = pytest.mark.usefixtures("one_thread")


class Waves(torch.utils.data.Dataset):
    """Tones of random pitch, [N, length] floats."""

    def __init__(self, n: int, length: int):
        g = torch.Generator().manual_seed(0)
        t = torch.arange(length) / AUDIO.sample_rate
        pitch = 200 + 1800 * torch.rand(n, 1, generator=g)
        self.waves = 0.5 * torch.sin(2 * torch.pi * pitch * t)

    def __len__(self) -> int:
        return len(self.waves)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.waves[i]


class Figures:
    """A stand-in evaluator."""

    def __call__(self, G, label_mix=None) -> dict[str, float]:
        return {"fid": 12.5, "kid": 0.25, "diversity_ratio": 0.9, "n": 10}


def _cfg(**settings) -> RunConfig:
    train_settings = dict(steps=4, batch_size=8, device="cpu", ema_rampup=2, log_every=2, preview_every=2,
                          checkpoint_every=1000, n_preview=8, tensorboard=True)
    train_settings.update(settings)
    return RunConfig(model=NetConfig(z_dim=8, g_width=8, d_width=8), train=TrainConfig(**train_settings),
                     data=DataConfig(source="folder", channels=1, height=16, width=16))


def _run(cfg: RunConfig, modality, dataset, run_dir: Path, evaluate=None) -> Path:
    torch.manual_seed(0)
    G, D = dcgan.build(cfg.model, SHAPE)
    if evaluate is not None:
        cfg = cfg.override("eval.every", 2)
    return train(cfg, modality, G, D, dataset, run_dir, progress=False, evaluate=evaluate)


def _events(run_dir: Path) -> EventAccumulator:
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0, "images": 0, "audio": 0})
    events.Reload()
    return events


def test_an_image_run_writes_scalars_and_preview_images(tmp_path):
    _run(_cfg(), ImageModality(*SHAPE), IMAGES, tmp_path, evaluate=Figures())
    events = _events(tmp_path)
    tags = events.Tags()
    for name in ("d_adv", "g_adv", "d_real", "d_fake", "grad_norm_D", "grad_norm_G", "D_total", "G_total", "img_per_s"):
        assert [e.step for e in events.Scalars(f"train/{name}")] == [2, 4], name
    assert "train/step" not in tags["scalars"] and "train/time" not in tags["scalars"]
    assert [(e.step, e.value) for e in events.Scalars("eval/fid")] == [(2, 12.5), (4, 12.5)]
    assert [e.value for e in events.Scalars("eval/diversity_ratio")] == pytest.approx([0.9, 0.9])
    # The same figures as log.jsonl.
    logged = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [e.value for e in events.Scalars("train/d_adv")] == pytest.approx([r["d_adv"] for r in logged])

    assert tags["images"] == ["preview/image"] and tags["audio"] == []
    images = events.Images("preview/image")
    assert [e.step for e in images] == [2, 4]
    assert (images[0].width, images[0].height) == (3 * 16 + 4 * 2, 3 * 16 + 4 * 2)  # 8 samples, 3 a row, 2 px gaps
    assert images[0].encoded_image_string.startswith(b"\x89PNG")


def test_a_mel_run_writes_preview_audio(tmp_path):
    dataset = Waves(32, AUDIO.length)
    modality = MelModality.fit(AUDIO, list(dataset.waves))
    assert modality.shape == SHAPE
    _run(_cfg(steps=2), modality, dataset, tmp_path)
    events = _events(tmp_path)
    assert "train/d_adv" in events.Tags()["scalars"]
    assert events.Tags()["images"] == ["preview/image"]
    audio = events.Audio("preview/audio")
    assert [e.step for e in audio] == [2]
    gap = AUDIO.sample_rate // 4
    assert audio[0].sample_rate == AUDIO.sample_rate
    assert audio[0].length_frames == 8 * (AUDIO.length + gap)  # the first 8 samples in a row, as in the WAV preview
    assert audio[0].encoded_audio_string.startswith(b"RIFF")


def test_tensorboard_is_off_by_default(tmp_path):
    assert TrainConfig().tensorboard is False
    _run(_cfg(tensorboard=False, steps=2), ImageModality(*SHAPE), IMAGES, tmp_path)
    assert (tmp_path / "log.jsonl").is_file() and not (tmp_path / "tensorboard").exists()


def test_without_tensorboard_installed_the_run_stops_at_once_with_one_line(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # import tensorboard now raises ImportError
    read = []

    class Untouched(torch.utils.data.Dataset):
        def __len__(self):
            read.append("len")
            return 64

        def __getitem__(self, i):
            read.append(i)
            return IMAGES[i]

    with pytest.raises(ConfigError) as caught:
        _run(_cfg(), ImageModality(*SHAPE), Untouched(), tmp_path / "run")
    message = str(caught.value)
    assert "pip install 'multigan[tensorboard]'" in message and "\n" not in message
    assert read == [] and not (tmp_path / "run").exists()


def test_adapters_give_media_in_the_documented_form():
    x = torch.rand(5, *SHAPE) * 2 - 1
    (kind, grid), = ImageModality(*SHAPE).media(x)
    assert kind == "image" and grid.dtype == torch.float32 and grid.shape[0] == 3
    assert 0 <= grid.min() and grid.max() <= 1

    modality = MelModality.fit(AUDIO, list(Waves(4, AUDIO.length).waves))
    (image, spectrograms), (audio, wave, rate) = modality.media(x)
    assert (image, audio, rate) == ("image", "audio", AUDIO.sample_rate)
    assert spectrograms.shape[0] == 3 and 0 <= spectrograms.min() and spectrograms.max() <= 1
    assert wave.shape == (5 * (AUDIO.length + AUDIO.sample_rate // 4),) and wave.abs().max() <= 1


def test_a_board_without_a_folder_writes_nothing(tmp_path):
    board = tensorboard.Board(None)
    board.scalars("train", 1, {"d_adv": 1.0})
    board.media(1, [("image", torch.zeros(3, 4, 4))])
    board.close()
    assert not board.active and list(tmp_path.iterdir()) == []
