"""The DCGAN training step in NCHW (contiguous) against NHWC (`train.channels_last`).

For each preset's nets (conditional on 10 classes, the preset's widths and
sample shape) it runs the same training step: a D step on a real and a
generated batch, then a G step, with the engine's optimisers at the
preset's settings, non-saturating loss. The two memory formats alternate in
one process, from the same initial weights and on the same batches (random
tensors: the time of a step does not depend on what the pixels hold), and
each round prints images/s for both and their ratio. Prints figures only; it asserts nothing about time.

    PYTHONPATH=. python bench/memory_format.py --threads 1
    PYTHONPATH=. python bench/memory_format.py --device cuda --precision bf16
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time

import torch
import torch.nn.functional as F

from multigan.engine.distributed import pick_device
from multigan.engine.optim import make_optimizer
from multigan.presets import PRESETS
from multigan.registry import build_nets
from machine_load import machine_busy_seconds  # bench/, beside this script

# The shape each preset trains on with its default data (voice: 64 mels x 64 frames).
SHAPES = {"mnist-quick": (1, 28, 28), "voice-quick": (1, 64, 64), "images-64": (3, 64, 64)}
N_CLASSES = 10


def timed_steps(preset: str, fmt: torch.memory_format, device: torch.device, steps: int, warmup: int,
                batch_size: int, seed: int, precision: str = "fp32") -> float:
    """Images per second of `steps` training steps after `warmup` untimed ones."""
    cfg = PRESETS[preset]()
    net_cfg = dataclasses.replace(cfg.model, n_classes=N_CLASSES)
    torch.manual_seed(seed)
    G, D = build_nets(net_cfg, SHAPES[preset])
    G, D = G.to(device, memory_format=fmt), D.to(device, memory_format=fmt)
    fused = device.type == "cuda"  # as the trainer builds them
    opt_G = make_optimizer(G.parameters(), cfg.optim, cfg.optim.lr_g, fused=fused)
    opt_D = make_optimizer(D.parameters(), cfg.optim, cfg.optim.lr_d, fused=fused)
    real = torch.randn(batch_size, *SHAPES[preset], device=device).contiguous(memory_format=fmt)  # [B, C, H, W]
    y = torch.randint(N_CLASSES, (batch_size,), device=device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            fake = G(torch.randn(batch_size, G.z_dim, device=device), y)
            loss_D = F.softplus(-D(real, y)).float().mean() + F.softplus(D(fake.detach(), y)).float().mean()
        opt_D.zero_grad(set_to_none=True)
        loss_D.backward()
        opt_D.step()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss_G = F.softplus(-D(fake, y)).float().mean()
        opt_G.zero_grad(set_to_none=True)
        loss_G.backward()
        opt_G.step()

    for _ in range(warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps * batch_size / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Images/s of the DCGAN training step in NCHW against NHWC (channels_last), "
                                            "alternating in one process", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--presets", default=",".join(SHAPES), help=f"comma-separated, from {', '.join(SHAPES)}")
    p.add_argument("--steps", type=int, default=40, help="timed steps per run")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before each run")
    p.add_argument("--rounds", type=int, default=3, help="rounds of (NCHW run, NHWC run); the ratio is the median")
    p.add_argument("--batch-size", type=int, default=64, help="samples per step")
    p.add_argument("--device", default="auto", help="cpu, cuda or auto")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="bf16: the step under autocast, as train.precision=bf16")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (None keeps torch's choice)")
    args = p.parse_args(argv)
    presets = [s.strip() for s in args.presets.split(",") if s.strip()]
    for name in presets:
        if name not in SHAPES:
            p.error(f"unknown preset {name!r}: choose from {', '.join(SHAPES)}")
    for name in ("steps", "rounds", "batch_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.threads is not None:
        if args.threads < 1:
            p.error("--threads must be >= 1")
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    print(f"device {device}, torch {torch.__version__}, {args.precision}, {torch.get_num_threads()} threads, batch {args.batch_size}, "
          f"{args.steps} timed steps after {args.warmup} warm-up steps")
    print(f"{'preset':<12} {'round':>5} {'NCHW img/s':>11} {'NHWC img/s':>11} {'NHWC/NCHW':>10} {'other load':>10}")
    for name in presets:
        ratios = []
        for r in range(args.rounds):
            busy0, t0 = machine_busy_seconds(), time.perf_counter()
            cpu0 = time.process_time()
            nchw = timed_steps(name, torch.contiguous_format, device, args.steps, args.warmup, args.batch_size, seed=r, precision=args.precision)
            nhwc = timed_steps(name, torch.channels_last, device, args.steps, args.warmup, args.batch_size, seed=r, precision=args.precision)
            other = "n/a"
            if busy0 is not None:
                wall = time.perf_counter() - t0
                busy = machine_busy_seconds() - busy0 - (time.process_time() - cpu0)
                other = f"{max(busy, 0.0) / (wall * os.cpu_count()):.0%}"
            ratios.append(nhwc / nchw)
            print(f"{name:<12} {r:>5} {nchw:>11.1f} {nhwc:>11.1f} {nhwc / nchw:>10.3f} {other:>10}", flush=True)
        print(f"{name:<12} {'median':>5} {'':>11} {'':>11} {statistics.median(ratios):>10.3f}")


if __name__ == "__main__":
    main()
