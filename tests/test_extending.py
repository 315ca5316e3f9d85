"""A new modality written outside the package trains through the unchanged engine.

This is the example of docs/extending.md: 2D points on a ring of 8 Gaussians,
an MLP generator and discriminator, and `multigan.engine.trainer.train`.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from torch import Tensor, nn

from multigan.config import OptimConfig, RunConfig, TrainConfig
from multigan.engine import checkpoint as ckpt
from multigan.engine.trainer import train
from multigan.errors import DataError
from multigan.engine.protocol import Modality

ENGINE = Path(__file__).resolve().parents[1] / "multigan" / "engine"
RADIUS = 2.0


# The adapter -------------------------------------------------------------
class PointsModality:
    """Points in the plane. Model space is the point divided by `scale`, so it fits in [-1, 1]."""

    name = "points"

    def __init__(self, scale: float):
        self.scale = float(scale)

    @property
    def shape(self) -> tuple[int, ...]:
        return (2,)

    def encode(self, batch: Tensor) -> Tensor:
        if batch.ndim != 2 or batch.shape[1] != 2:
            raise DataError(f"points must be [B, 2], got {list(batch.shape)}")
        return (batch.float() / self.scale).clamp(-1, 1)  # [B, 2]

    def decode(self, x: Tensor) -> np.ndarray:
        return (x.detach().float().cpu() * self.scale).numpy()  # [B, 2] in data units

    def save(self, artifacts: np.ndarray, out_dir: Path, prefix: str = "sample") -> list[Path]:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = []
        for i, (x, y) in enumerate(artifacts):
            path = out_dir / f"{prefix}-{i:04d}.csv"
            path.write_text(f"x,y\n{x:.6f},{y:.6f}\n")
            paths.append(path)
        paths.append(self._scatter(artifacts, out_dir / f"{prefix}-scatter.png"))
        return paths

    def preview(self, x: Tensor, stem: Path) -> Path:
        return self._scatter(self.decode(x), Path(stem).with_suffix(".png"))

    def state_dict(self) -> dict[str, Any]:
        return {"scale": self.scale}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> PointsModality:
        return cls(state["scale"])

    def _scatter(self, points: np.ndarray, path: Path, size: int = 128) -> Path:
        image = Image.new("L", (size, size), 255)
        draw = ImageDraw.Draw(image)
        pixels = (points / self.scale + 1) / 2 * (size - 1)  # [-scale, scale] -> [0, size - 1]
        for px, py in pixels:
            draw.ellipse([px - 1, size - 1 - py - 1, px + 1, size - 1 - py + 1], fill=0)
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, format="PNG")
        return path


# Data and networks -------------------------------------------------------
class RingOfGaussians(torch.utils.data.Dataset):
    """n points around 8 centres on a circle of radius RADIUS, std 0.05."""

    def __init__(self, n: int, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        angle = torch.randint(0, 8, (n,), generator=g) * (2 * math.pi / 8)
        centres = RADIUS * torch.stack([angle.cos(), angle.sin()], dim=1)
        self.points = centres + 0.05 * torch.randn(n, 2, generator=g)  # [n, 2]

    def __len__(self) -> int:
        return len(self.points)

    def __getitem__(self, i: int) -> Tensor:
        return self.points[i]


class MLPGenerator(nn.Module):
    def __init__(self, z_dim: int = 4, width: int = 64):
        super().__init__()
        self.z_dim = z_dim  # the engine draws z [B, z_dim]
        self.net = nn.Sequential(nn.Linear(z_dim, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                                 nn.Linear(width, 2), nn.Tanh())

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)  # [B, 2] in [-1, 1]


class MLPDiscriminator(nn.Module):
    def __init__(self, width: int = 64):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, width), nn.LeakyReLU(0.2), nn.Linear(width, width), nn.LeakyReLU(0.2),
                                 nn.Linear(width, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x).squeeze(1)  # [B]: one score per example


def _settings(steps: int) -> RunConfig:
    return RunConfig(
        name="ring",
        optim=OptimConfig(lr_g=1e-3, lr_d=1e-3, betas=(0.5, 0.99)),
        train=TrainConfig(steps=steps, batch_size=128, device="cpu", ema_decay=0.9, ema_rampup=10,
                          log_every=10, preview_every=25, checkpoint_every=25, n_preview=256),
    )


def _ring_distance(points: np.ndarray) -> float:
    """Mean distance of points [N, 2] to the circle the data lies on."""
    return float(np.abs(np.linalg.norm(points, axis=1) - RADIUS).mean())


def _sample(G: nn.Module, adapter: PointsModality, n: int = 512) -> np.ndarray:
    with torch.no_grad():
        return adapter.decode(G.eval()(torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(7))))


# Tests -------------------------------------------------------------------
@pytest.fixture(scope="module")
def ring_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("ring") / "run"
    torch.manual_seed(0)
    G, D = MLPGenerator(), MLPDiscriminator()
    adapter = PointsModality(scale=2.5)
    before = _ring_distance(_sample(G, adapter))
    last = train(_settings(50), adapter, G, D, RingOfGaussians(2048), run_dir, progress=False)
    return run_dir, last, before


def test_toy_adapter_satisfies_the_protocol(tmp_path):
    adapter = PointsModality(scale=2.5)
    assert isinstance(adapter, Modality)
    points = RingOfGaussians(6).points
    x = adapter.encode(points)
    assert x.shape == (6, 2) and x.abs().max() <= 1
    assert np.allclose(adapter.decode(x), points.numpy(), atol=1e-6)
    paths = adapter.save(adapter.decode(x), tmp_path)
    assert len(paths) == 7 and all(p.is_file() for p in paths)
    with pytest.raises(DataError):
        adapter.encode(torch.zeros(6, 3))
    rebuilt = PointsModality.from_state(adapter.state_dict())
    assert torch.equal(rebuilt.encode(points), x)


def test_trains_through_the_engine(ring_run):
    run_dir, last, _ = ring_run
    assert last == run_dir / "checkpoints" / "step-0000050.pt"
    assert (run_dir / "checkpoints" / "latest.pt").is_file()
    previews = sorted((run_dir / "previews").glob("*.png"))
    assert [p.name for p in previews] == ["step-0000025.png", "step-0000050.png"]
    with Image.open(previews[-1]) as im:
        assert im.format == "PNG" and im.size == (128, 128)
        assert np.ptp(np.asarray(im)) > 0, "the scatter plot is empty"

    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [10, 20, 30, 40, 50]
    for r in records:
        for key in ("d_adv", "g_adv", "D_total", "G_total", "d_real", "d_fake"):
            assert math.isfinite(r[key]), (key, r)

    state = ckpt.load_checkpoint(last)
    assert state["step"] == 50
    assert state["modality"] == {"name": "points", "shape": [2], "state": {"scale": 2.5}}


def test_samples_move_toward_the_ring(ring_run):
    run_dir, last, before = ring_run
    state = ckpt.load_checkpoint(last)
    adapter = PointsModality.from_state(state["modality"]["state"])
    G = MLPGenerator()
    G.load_state_dict(state["G_ema"])
    after = _ring_distance(_sample(G, adapter))
    assert after < 0.6 * before, f"mean distance to the ring {after:.3f} after training, {before:.3f} before"


def test_resumes_from_the_checkpoint(ring_run, tmp_path):
    run_dir, last, _ = ring_run
    # Resume into a copy, so the other tests see the 50-step run.
    copy = tmp_path / "run"
    (copy / "checkpoints").mkdir(parents=True)
    (copy / "checkpoints" / "step-0000050.pt").write_bytes(last.read_bytes())
    torch.manual_seed(123)  # fresh networks: the checkpoint must supply every weight
    resumed = train(_settings(60), PointsModality(scale=2.5), MLPGenerator(), MLPDiscriminator(),
                    RingOfGaussians(2048), copy, resume=copy / "checkpoints" / "step-0000050.pt", progress=False)
    assert resumed.name == "step-0000060.pt"
    assert ckpt.load_checkpoint(resumed)["step"] == 60
    assert [json.loads(line)["step"] for line in (copy / "log.jsonl").read_text().splitlines()] == [60]


@pytest.mark.parametrize("path", sorted(ENGINE.glob("*.py")), ids=lambda p: p.name)
def test_engine_does_not_name_a_modality(path):
    text = path.read_text()
    hits = [(n, line.strip()) for n, line in enumerate(text.splitlines(), 1)
            if re.search(r"image|mel|audio|png|wav", line, re.I)]
    assert not hits, f"{path.name} mentions a modality: " + "; ".join(f"line {n}: {line}" for n, line in hits)


def test_the_documented_example_runs(tmp_path, monkeypatch):
    doc = (ENGINE.parents[1] / "docs" / "extending.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", doc, re.S)
    assert len(blocks) == 3, "docs/extending.md: adapter, training, registry"
    adapter_code, training_code, registry_code = blocks
    assert "MODALITIES" in registry_code and "DATA" in registry_code
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {}
    exec(compile(adapter_code, "extending.md:adapter", "exec"), namespace)
    assert isinstance(namespace["PointsModality"](scale=2.5), Modality)
    # The same run, shorter: the ring fixture above already checks that training works.
    short = training_code.replace("steps=100,", "steps=10,").replace("step-0000100", "step-0000010")
    assert short != training_code
    exec(compile(short, "extending.md:training", "exec"), namespace)
    assert namespace["last"] == Path("runs/ring/checkpoints/step-0000010.pt")
    state = ckpt.load_checkpoint(namespace["last"])
    assert state["modality"] == {"name": "points", "shape": [2], "state": {"scale": 2.5}}
    assert (tmp_path / "runs" / "ring" / "previews" / "step-0000010.png").is_file()
    G = namespace["MLPGenerator"]()
    G.load_state_dict(state["G_ema"])
