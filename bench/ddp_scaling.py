"""Images per second of `train()` on 1 rank and on N ranks (DistributedDataParallel), same global batch.

Trains the mnist-quick DCGAN nets, unconditional (1x28x28, global batch 64;
each of N ranks takes 64/N), on the in-memory MNIST training digits from
../shared/data (or random uint8 images with --synthetic), from the same
initial weights. Ranks are processes started by `torch.multiprocessing.spawn`
from this one, as torchrun's workers would be: RANK, WORLD_SIZE,
LOCAL_RANK and MASTER_ADDR/PORT in their environment, then
`multigan.engine.distributed.setup()` and one `train()` call. The 1-rank run
is a spawned process too, so both run alike. On the CPU the ranks use Gloo
and `--threads` threads each (OMP_NUM_THREADS and torch.set_num_threads,
default 1, as torchrun sets it); with `--device cuda` they use NCCL, one GPU
per rank.

Speed is the trainer's own wall clock: the log's `img_per_s` over the
`--steps` steps after `--warmup` untimed ones (the log window is the
warm-up, so the first window is left out). Runs alternate (1 rank, N ranks,
1 rank, ...), so a change in machine load hits both. Prints img/s per run,
the medians, and the scaling efficiency, (img/s on N ranks) / (N x img/s
on 1 rank). Every run also shows the share of the machine's CPU that other
processes used meanwhile. Prints figures only; it asserts nothing about time.

    PYTHONPATH=. python bench/ddp_scaling.py
    PYTHONPATH=. python bench/ddp_scaling.py --device cuda --nproc 4 --batch-size 256
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import shlex
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.multiprocessing as mp

from machine_load import machine_busy_seconds  # bench/, beside this script

SHAPE = (1, 28, 28)
NEVER = 10**9  # an interval no run reaches
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dataset(synthetic: bool):
    from multigan.data.mnist import load_mnist
    from multigan.data.tensors import ImageTensorDataset

    if synthetic:
        return ImageTensorDataset(torch.randint(0, 256, (60_000,) + SHAPE, dtype=torch.uint8,
                                                generator=torch.Generator().manual_seed(0)))
    return load_mnist(SHARED_DATA if SHARED_DATA.is_dir() else None)


def _rank(rank: int, world_size: int, port: int, spec: dict) -> None:
    """One rank: join the world, train, leave. Rank 0 writes RUN/log.jsonl."""
    from multigan.config import RunConfig
    from multigan.engine import distributed
    from multigan.engine.trainer import train
    from multigan.modalities.image import ImageModality
    from multigan.registry import build_nets

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(spec["threads"])
    distributed.setup(spec["device"], timeout_s=120)
    try:
        cfg = RunConfig.from_json(spec["config"])
        dataset = _dataset(spec["synthetic"])
        torch.manual_seed(1234)  # the same initial weights on every rank (DDP broadcasts rank 0's anyway)
        G, D = build_nets(cfg.model, SHAPE)
        train(cfg, ImageModality(*SHAPE), G, D, dataset, spec["run_dir"], progress=False)
    finally:
        distributed.shutdown()


def timed_rate(log_path: Path, warmup: int) -> tuple[float, int]:
    """img/s over the log windows after step `warmup`, and how many steps they cover."""
    records = [json.loads(line) for line in log_path.read_text().splitlines()]
    steps = [b["step"] - a["step"] for a, b in zip(records, records[1:]) if a["step"] >= warmup]
    timed = [r for r in records if r["step"] > warmup]
    seconds_per_image = sum(n / r["img_per_s"] for n, r in zip(steps, timed))  # x batch: the windows' seconds
    return sum(steps) / seconds_per_image, sum(steps)


def run(world_size: int, args: argparse.Namespace, config_json: str) -> dict:
    with tempfile.TemporaryDirectory(prefix="multigan-ddp-") as tmp:
        spec = {"threads": args.threads, "device": args.device, "synthetic": args.synthetic,
                "config": config_json, "run_dir": str(Path(tmp) / "run")}
        busy0, t0, cpu0 = machine_busy_seconds(), time.perf_counter(), _tree_cpu()
        mp.spawn(_rank, args=(world_size, _free_port(), spec), nprocs=world_size, join=True)
        wall, busy1, cpu1 = time.perf_counter() - t0, machine_busy_seconds(), _tree_cpu()
        img_s, steps = timed_rate(Path(spec["run_dir"]) / "log.jsonl", args.warmup)
    others = None
    if busy0 is not None and busy1 is not None:
        others = max(0.0, (busy1 - busy0) - (cpu1 - cpu0)) / (wall * (os.cpu_count() or 1))
    return {"img_s": img_s, "steps": steps, "wall": wall, "others": others}


def _tree_cpu() -> float:
    """CPU seconds of this process and its finished children."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="img/s of multigan's train() on 1 rank and on N DistributedDataParallel ranks (spawned processes, "
                    "Gloo on the CPU, NCCL on CUDA), same global batch, mnist-quick nets; prints the scaling efficiency.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--nproc", type=int, default=2, help="ranks of the distributed runs")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="cpu: Gloo; cuda: NCCL, one GPU per rank")
    p.add_argument("--steps", type=int, default=60, help="timed training steps per run (rounded up to whole log windows)")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps before them; also the log window")
    p.add_argument("--batch-size", type=int, default=64, help="global batch: each rank takes batch/nproc")
    p.add_argument("--rounds", type=int, default=2, help="rounds of (1 rank, N ranks); figures are medians over rounds")
    p.add_argument("--threads", type=int, default=1, help="CPU threads per rank (OMP_NUM_THREADS, torch.set_num_threads)")
    p.add_argument("--synthetic", action="store_true", help="random uint8 images instead of MNIST")
    args = p.parse_args(argv)
    for name in ("nproc", "steps", "warmup", "batch_size", "rounds", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.nproc < 2:
        p.error("--nproc must be >= 2: the 1-rank run is always there to compare with")
    if args.batch_size % args.nproc:
        p.error(f"--batch-size {args.batch_size} must split evenly over --nproc {args.nproc}")
    if args.device == "cuda":
        if not torch.cuda.is_available():
            p.error("--device cuda: CUDA is not available")
        if args.nproc > torch.cuda.device_count():
            p.error(f"--nproc {args.nproc} needs as many GPUs; this machine has {torch.cuda.device_count()} (NCCL takes one per rank)")
    args.steps = math.ceil(args.steps / args.warmup) * args.warmup
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from multigan.presets import mnist_quick

    cfg = mnist_quick().override("model.n_classes", 0)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(
        cfg.train, steps=args.warmup + args.steps, batch_size=args.batch_size, device=args.device,
        log_every=args.warmup, preview_every=NEVER, checkpoint_every=NEVER, n_preview=16))
    # Set before the ranks start, so their OpenMP runtime reads it when they import torch.
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(args.threads)

    n_images = len(_dataset(args.synthetic))  # fills the MNIST cache once, before the ranks read it
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"command: {shlex.join([Path(sys.executable).name] + sys.argv)}")
    where = (f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}, NCCL" if args.device == "cuda"
             else f"CPU, Gloo, {args.threads} thread(s) per rank")
    print(f"machine: {os.cpu_count()} CPUs ({cpus} usable), torch {torch.__version__}; {where}; "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"mnist-quick DCGAN, unconditional, {n_images:,} {'random images' if args.synthetic else 'MNIST digits'} 1x28x28, "
          f"global batch {args.batch_size}, {args.steps} timed steps after {args.warmup}, {args.rounds} rounds; "
          f"ranks started by torch.multiprocessing.spawn")
    print("other load: share of the machine's CPU that other processes used during the run (ranks' start-up included)")
    print()
    print(f"{'round':>5}  {'ranks':>5}  {'img/s':>7}  {'ms/step':>7}  {'other load':>10}")
    rates: dict[int, list[float]] = {1: [], args.nproc: []}
    busy = False
    for r in range(1, args.rounds + 1):
        for world_size in (1, args.nproc):
            m = run(world_size, args, cfg.to_json())
            rates[world_size].append(m["img_s"])
            busy = busy or (m["others"] or 0) > 0.10
            others = "n/a" if m["others"] is None else f"{100 * m['others']:.0f}%"
            print(f"{r:>5}  {world_size:>5}  {m['img_s']:>7.1f}  {1e3 * args.batch_size / m['img_s']:>7.1f}  {others:>10}",
                  flush=True)
    one, many = statistics.median(rates[1]), statistics.median(rates[args.nproc])
    print()
    print(f"median over {args.rounds} round(s): 1 rank {one:.1f} img/s, {args.nproc} ranks {many:.1f} img/s")
    print(f"scaling efficiency = {many:.1f} / ({args.nproc} x {one:.1f}) = {many / (args.nproc * one):.2f}")
    if busy:
        print("note: other processes used more than 10% of the CPU during some runs: the machine was not quiet")


if __name__ == "__main__":
    main()
