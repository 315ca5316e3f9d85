"""Sampling a trained generator into files."""
from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from multigan.build import Restored


@torch.no_grad()
def generate(restored: Restored, n: int, out_dir: str | Path, *, seed: int = 0, batch_size: int = 64,
             device: str | torch.device = "cpu", prefix: str = "sample") -> list[Path]:
    """Write `n` samples as the adapter's files plus `generation.json` (seed, checkpoint, step)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    G = restored.G.to(device)
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, G.z_dim, generator=gen)  # drawn on the CPU: same samples on every device
    x = torch.cat([G(z[i:i + batch_size].to(device)).float().cpu() for i in range(0, n, batch_size)])
    paths = restored.modality.save(restored.modality.decode(x), out_dir, prefix=prefix)
    record = {
        "checkpoint": str(restored.path.resolve()),
        "step": restored.step,
        "seed": seed,
        "n": n,
        "modality": restored.modality.name,
        "files": [p.name for p in paths],
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    record_path = out_dir / "generation.json"
    record_path.write_text(json.dumps(record, indent=2) + "\n")
    return paths + [record_path]
