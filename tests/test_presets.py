"""Every preset is valid, round-trips, and builds nets for its sample shape."""
from __future__ import annotations

import pytest
import torch

from multigan.config import RunConfig
from multigan.presets import PRESETS
from multigan.registry import build_nets


def _shape(cfg: RunConfig) -> tuple[int, int, int]:
    if cfg.data.audio is not None:
        return 1, cfg.data.audio.n_mels, cfg.data.audio.frames
    return cfg.data.channels, cfg.data.height, cfg.data.width


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_round_trips_and_builds(name):
    cfg = PRESETS[name]()
    assert cfg.name == name, "a run's name says which preset it trains"
    assert RunConfig.from_json(cfg.to_json()) == cfg
    model = cfg.override("model.n_classes", max(cfg.model.n_classes, 0)).model
    G, D = build_nets(model, _shape(cfg))
    z = torch.randn(2, model.z_dim)
    x = G(z) if not model.n_classes else G(z, torch.zeros(2, dtype=torch.long))
    assert x.shape == (2, *_shape(cfg))


def test_the_16k_voice_preset_covers_about_a_second_at_16k():
    audio = PRESETS["voice-16k"]().data.audio
    assert audio.sample_rate == 16000 and audio.n_mels == 128 and audio.frames == 128
    assert 0.9 <= audio.length / audio.sample_rate <= 1.1
