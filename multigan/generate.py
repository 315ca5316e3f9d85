"""Sampling a trained generator into files."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from multigan.errors import ConfigError

if TYPE_CHECKING:
    from multigan.restore import Restored


def labels_for(G: nn.Module, n: int, label: int | None = None) -> Tensor | None:
    """Labels [n] for a class-conditional G (`label`, or every class in turn); None for an unconditional one."""
    n_classes = getattr(G, "n_classes", 0)
    if not n_classes:
        if label is not None:
            raise ConfigError("this generator is not class-conditional: it takes no label")
        return None
    if label is not None:
        if not 0 <= label < n_classes:
            raise ConfigError(f"label must be in 0..{n_classes - 1}, got {label}")
        return torch.full((n,), label, dtype=torch.long)
    return torch.arange(n) % n_classes


@torch.no_grad()
def synthesize(G: nn.Module, z: Tensor, y: Tensor | None = None, batch_size: int = 64) -> Tensor:
    """G's samples [N, *shape] on the CPU for z [N, z_dim] (and labels y [N]), in batches on G's device."""
    device = next(G.parameters()).device
    parts = []
    for i in range(0, len(z), batch_size):
        args = [z[i:i + batch_size].to(device)] + ([] if y is None else [y[i:i + batch_size].to(device)])
        parts.append(G(*args).float().cpu())
    return torch.cat(parts)


@torch.no_grad()
def generate(restored: Restored, n: int, out_dir: str | Path, *, seed: int = 0, batch_size: int = 64,
             device: str | torch.device = "cpu", prefix: str = "sample", label: int | None = None) -> list[Path]:
    """Write `n` samples as the adapter's files plus `generation.json` (seed, checkpoint, step, labels)."""
    G = restored.G.to(device)
    y = labels_for(G, n, label)  # checked before anything is written
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    z = torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(seed))  # drawn on the CPU: same samples on every device
    x = synthesize(G, z, y, batch_size)
    paths = restored.modality.save(restored.modality.decode(x), out_dir, prefix=prefix)
    record = {
        "checkpoint": str(restored.path.resolve()),
        "step": restored.step,
        "seed": seed,
        "n": n,
        "modality": restored.modality.name,
        "labels": None if y is None else y.tolist(),
        "files": [p.name for p in paths],
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    record_path = out_dir / "generation.json"
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    return paths + [record_path]
