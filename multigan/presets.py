"""Named settings that `multigan train NAME` and the recipes start from."""
from __future__ import annotations

from collections.abc import Callable

from multigan.config import DataConfig, NetConfig, RunConfig, TrainConfig


def mnist_quick() -> RunConfig:
    """DCGAN on MNIST that draws recognisable digits in a few minutes on 2 CPU cores."""
    return RunConfig(
        name="mnist-quick",
        data=DataConfig(modality="image", source="mnist", channels=1, height=28, width=28),
        model=NetConfig(z_dim=64, g_width=48, d_width=48),
        train=TrainConfig(steps=2500, batch_size=64, ema_decay=0.995, ema_rampup=50,
                          log_every=25, preview_every=250, checkpoint_every=500),
    )


def mnist() -> RunConfig:
    """A longer, wider MNIST run (about an hour on 2 CPU cores)."""
    return RunConfig(
        name="mnist",
        data=DataConfig(modality="image", source="mnist", channels=1, height=28, width=28),
        model=NetConfig(z_dim=100, g_width=64, d_width=64),
        train=TrainConfig(steps=30000, batch_size=64, ema_decay=0.999, ema_rampup=500,
                          log_every=50, preview_every=1000, checkpoint_every=2000),
    )


PRESETS: dict[str, Callable[[], RunConfig]] = {
    "mnist-quick": mnist_quick,
    "mnist": mnist,
}
