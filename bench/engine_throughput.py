"""Throughput and peak memory of the engine against a bare PyTorch DCGAN loop.

Both train the same unconditional DCGAN (the mnist-quick preset's nets, 1x28x28) from the
same initial weights, at the same batch size, for the same number of steps,
on the same in-memory MNIST, in one process. Runs alternate (bare, engine,
bare, engine, ...) so that a change in machine load hits both alike.

The engine run is one whole `train()` call with the preset's settings: EMA of
G, logging (with gradient norms) every `log_every` steps, and the final
preview and checkpoint that every run writes. Only the periodic previews and
checkpoints are pushed past the end of the run. The bare loop is the
standard PyTorch DCGAN step: Adam, non-saturating loss, one G(z) per step
shared by the D and G steps.

Prints figures only; it asserts nothing about time.

    PYTHONPATH=. python bench/engine_throughput.py --steps 200 --rounds 3
    PYTHONPATH=. python bench/engine_throughput.py --device cuda --batch-size 64 --variants fp32,bf16,bf16+compile
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import dataclasses
import gc
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from multigan.config import DEVICES, NetConfig, RunConfig
from multigan.data.mnist import load_mnist
from multigan.engine.distributed import pick_device
from multigan.engine.trainer import train
from multigan.modalities.image import ImageModality
from multigan.nets import dcgan
from multigan.presets import mnist_quick
from multigan.runtime import keep_freed_memory
from machine_load import machine_busy_seconds  # bench/, beside this script

SHAPE = (1, 28, 28)
NEVER = 10**9  # an interval no run reaches


# The two loops ------------------------------------------------------------
def fresh_nets(cfg: NetConfig, seed: int) -> tuple[nn.Module, nn.Module]:
    """G and D with the same initial weights on every call."""
    torch.manual_seed(seed)
    return dcgan.build(cfg, SHAPE)


def bare_loop(G: nn.Module, D: nn.Module, images: Tensor, steps: int, batch_size: int, seed: int) -> None:
    """The standard PyTorch DCGAN loop. images: [N, 1, 28, 28] uint8, on the training device."""
    device = images.device
    G, D = G.to(device), D.to(device)
    opt_G = torch.optim.Adam(G.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_D = torch.optim.Adam(D.parameters(), lr=2e-4, betas=(0.5, 0.999))
    torch.manual_seed(seed)
    per_epoch = len(images) // batch_size
    for step in range(steps):
        k = step % per_epoch
        if k == 0:
            perm = torch.randperm(len(images), device=device)
        real = images[perm[k * batch_size:(k + 1) * batch_size]].float().div_(127.5).sub_(1.0)  # [B, 1, 28, 28]
        fake = G(torch.randn(batch_size, G.z_dim, device=device))
        # D: -log D(x) - log(1 - D(G(z)))
        D.requires_grad_(True)
        opt_D.zero_grad(set_to_none=True)
        loss_D = F.softplus(-D(real)).mean() + F.softplus(D(fake.detach())).mean()
        loss_D.backward()
        opt_D.step()
        # G: -log D(G(z)). D's weight gradients would be thrown away, so skip them (the engine does too).
        D.requires_grad_(False)
        opt_G.zero_grad(set_to_none=True)
        loss_G = F.softplus(-D(fake)).mean()
        loss_G.backward()
        opt_G.step()


def engine_config(steps: int, batch_size: int, device: str, variant: str = "fp32") -> RunConfig:
    """The mnist-quick settings, unconditional like the bare loop, with periodic previews and checkpoints
    past the end of the run. `variant`: a precision, optionally with "+compile" (e.g. "bf16+compile")."""
    precision, _, compiled = variant.partition("+")
    cfg = mnist_quick().override("model.n_classes", 0)
    return dataclasses.replace(cfg, train=dataclasses.replace(
        cfg.train, steps=steps, batch_size=batch_size, device=device, precision=precision,
        compile=compiled == "compile", preview_every=NEVER, checkpoint_every=NEVER,  # log_every stays at the preset's
    ))


def engine_run(cfg: RunConfig, dataset, steady: list[float] | None = None) -> None:
    """One train() call; appends the steady img/s of its log (windows after the first two) to `steady`."""
    G, D = fresh_nets(cfg.model, cfg.train.seed)
    with tempfile.TemporaryDirectory(prefix="multigan-bench-") as run_dir:
        train(cfg, ImageModality(*SHAPE), G, D, dataset, run_dir, progress=False)
        if steady is not None:
            rates = [json.loads(line)["img_per_s"] for line in (Path(run_dir) / "log.jsonl").read_text().splitlines()]
            steady.append(statistics.median(rates[2:-1] or rates))


# Measuring ----------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c") if sys.platform.startswith("linux") else None
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def _release_freed_memory() -> None:
    """Hand freed heap pages back to the OS so each run's RSS baseline starts alike."""
    gc.collect()
    with contextlib.suppress(AttributeError):
        if (libc := _libc()) is not None:
            libc.malloc_trim(0)


def _rss_bytes() -> int | None:
    try:
        import psutil

        return psutil.Process().memory_info().rss
    except ImportError:
        pass
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return None


class PeakRSS:
    """Peak resident memory of this process during a `with` block, in bytes.

    Linux keeps the exact high-water mark (VmHWM), which writing 5 to
    /proc/self/clear_refs resets; where that is refused, a thread samples
    the RSS every `interval` seconds.
    """

    def __init__(self, interval: float = 0.002):
        self.interval = interval
        self.peak: int | None = None

    @staticmethod
    def _reset_hwm() -> bool:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            return True
        except OSError:
            return False

    @staticmethod
    def _hwm() -> int:
        with open("/proc/self/status") as f:
            line = next(line for line in f if line.startswith("VmHWM:"))
        return int(line.split()[1]) * 1024  # "VmHWM:  123456 kB"

    def _sample(self) -> None:
        while not self._done.wait(self.interval):
            self.peak = max(self.peak, _rss_bytes() or 0)

    def __enter__(self) -> PeakRSS:
        self.peak = _rss_bytes()
        self._use_hwm = self._reset_hwm()
        self._done = threading.Event()
        self._thread = None
        if not self._use_hwm and self.peak is not None:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._use_hwm:
            self.peak = self._hwm()
        elif self._thread is not None:
            self._done.set()
            self._thread.join()
            self.peak = max(self.peak, _rss_bytes() or 0)


def _minor_faults() -> int | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


@dataclasses.dataclass
class Measurement:
    seconds: float
    peak: float | None  # bytes above the memory in use before the run
    others: float | None  # share of the machine's CPU capacity that other processes used meanwhile
    faults: int | None  # minor page faults of this process


def measure(run: Callable[[], None], device: torch.device) -> Measurement:
    """Wall time, peak memory increase and the machine's other load during one call of `run`."""
    _release_freed_memory()
    _sync(device)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
    else:
        before = _rss_bytes()
    busy0, own0, faults0 = machine_busy_seconds(), time.process_time(), _minor_faults()
    with contextlib.nullcontext() if cuda else PeakRSS() as rss:
        t0 = time.perf_counter()
        run()
        _sync(device)
        seconds = time.perf_counter() - t0
    busy1, own1, faults1 = machine_busy_seconds(), time.process_time(), _minor_faults()
    if cuda:
        peak = torch.cuda.max_memory_allocated(device) - before
    else:
        peak = None if before is None or rss.peak is None else rss.peak - before
    others = None
    if busy0 is not None and busy1 is not None:
        others = max(0.0, (busy1 - busy0) - (own1 - own0)) / (seconds * (os.cpu_count() or 1))
    faults = None if faults0 is None or faults1 is None else faults1 - faults0
    return Measurement(seconds, peak, others, faults)


def memory_method(device: torch.device) -> str:
    if device.type == "cuda":
        return "torch.cuda.max_memory_allocated above the allocation before the run"
    if device.type == "mps":
        return "process RSS (MPS allocations are not counted)"
    method = "kernel high-water mark" if PeakRSS._reset_hwm() else "sampled every 2 ms"
    return f"peak RSS above the RSS before the run ({method})"


# Main ---------------------------------------------------------------------
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Images per second and peak memory of multigan's train() against a bare PyTorch "
                    "DCGAN loop: same nets (mnist-quick preset), same initial weights, same batch size, "
                    "same steps, same in-memory MNIST, alternating runs in one process.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--steps", type=int, default=200, help="timed training steps per run")
    p.add_argument("--batch-size", type=int, default=64, help="images per step")
    p.add_argument("--rounds", type=int, default=3, help="rounds of (bare run, engine run); figures are medians over rounds")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps each loop runs before every timed run")
    p.add_argument("--device", choices=DEVICES, default="auto", help="training device")
    p.add_argument("--variants", default=None,
                   help="engine variants to run beside the bare fp32 loop, comma-separated: a precision (fp32, bf16, "
                        "fp16), optionally +compile (default: fp32 on a CPU; fp32,bf16,bf16+compile on CUDA)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch.set_num_threads (None keeps torch's choice)")
    p.add_argument("--max-other-load", type=float, default=0.10,
                   help="repeat a round (at most --rounds extra times) when other processes used more than this share "
                        "of the machine's CPU during one of its runs; 1 keeps every round")
    args = p.parse_args(argv)
    for name in ("steps", "batch_size", "rounds"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.warmup < 1:
        p.error("--warmup must be >= 1")
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be >= 1")
    if not 0 <= args.max_other_load <= 1:
        p.error("--max-other-load must be in [0, 1]")
    return args


def load_digits():
    shared = Path(__file__).resolve().parents[1].parent / "shared" / "data"
    return load_mnist(shared if shared.is_dir() else None)


def _mib(n: float | None) -> str:
    return "n/a" if n is None else f"{n / 2**20:+.1f}"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    # train() does this on the CPU; doing it first gives both loops the same allocator.
    pinned = keep_freed_memory()
    device = pick_device(args.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # train() turns it on; the bare loop gets it too

    dataset = load_digits()
    images = dataset.images.to(device)  # the bare loop indexes the digits where it trains
    cfg = engine_config(args.steps, args.batch_size, device.type)
    seed = cfg.train.seed

    def bare() -> None:
        bare_loop(*fresh_nets(cfg.model, seed), images, args.steps, args.batch_size, seed)

    def bare_warmup() -> None:
        bare_loop(*fresh_nets(cfg.model, seed), images, args.warmup, args.batch_size, seed)

    variants = (args.variants or ("fp32,bf16,bf16+compile" if device.type == "cuda" else "fp32")).split(",")
    steady: dict[str, list[float]] = {}
    loops = {"bare": (bare_warmup, bare)}
    for v in variants:
        name = "engine" if v == "fp32" else f"engine-{v}"
        vcfg, vwarm = (engine_config(n, args.batch_size, device.type, v) for n in (args.steps, args.warmup))
        steady[name] = []
        loops[name] = (lambda c=vwarm: engine_run(c, dataset), lambda c=vcfg, out=steady[name]: engine_run(c, dataset, out))

    n_img = args.steps * args.batch_size
    print(f"DCGAN ({cfg.name} nets: z {cfg.model.z_dim}, widths G {cfg.model.g_width} D {cfg.model.d_width}) "
          f"on {len(dataset):,} MNIST digits {'x'.join(map(str, SHAPE))}")
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch_size}, "
          f"{args.steps} timed steps after {args.warmup} warm-up steps, {args.rounds} rounds")
    print(f"engine: log every {cfg.train.log_every} steps, EMA {cfg.train.ema_decay}, final preview "
          f"({cfg.train.n_preview} images) and checkpoint included")
    print(f"peak memory: {memory_method(device)}")
    print("other load: share of the machine's CPU capacity that other processes used during the run")
    print(f"faults/step: minor page faults per step; malloc {'keeps freed memory, as train() sets it' if pinned else 'at its defaults (no glibc)'}")
    print()
    print(f"{'round':>5}  {'loop':<20}  {'seconds':>8}  {'img/s':>7}  {'ms/step':>7}  {'peak MiB':>8}  {'other load':>10}  "
          f"{'faults/step':>11}  {'engine/bare':>11}")

    # One round = one bare run then one engine run. A round in which other
    # processes took more than --max-other-load of the CPU is shown, starred,
    # and repeated (at most --rounds extra times); medians use the clean rounds.
    clean: list[dict[str, Measurement]] = []
    noisy: list[dict[str, Measurement]] = []
    attempt = 0
    while len(clean) < args.rounds and attempt < 2 * args.rounds:
        attempt += 1
        result: dict[str, Measurement] = {}
        is_noisy = False
        for name, (warmup, timed) in loops.items():
            warmup()
            result[name] = m = measure(timed, device)
            is_noisy = is_noisy or (m.others or 0.0) > args.max_other_load
            ratio = f"{result['bare'].seconds / m.seconds:.3f}{' *' if is_noisy else '  '}" if name != "bare" else ""
            others = "n/a" if m.others is None else f"{100 * m.others:.0f}%"
            faults = "n/a" if m.faults is None else f"{m.faults / args.steps:.0f}"
            print(f"{attempt:>5}  {name:<20}  {m.seconds:>8.2f}  {n_img / m.seconds:>7.0f}  {1e3 * m.seconds / args.steps:>7.1f}  "
                  f"{_mib(m.peak):>8}  {others:>10}  {faults:>11}  {ratio:>11}", flush=True)
        (noisy if is_noisy else clean).append(result)

    print()
    if noisy:
        print(f"* other processes took more than {100 * args.max_other_load:.0f}% of the CPU: round left out of the medians")
    used = clean or noisy
    print(f"median over {len(used)} {'clean' if clean else 'NOISY'} round(s)")
    bare_rate = statistics.median([n_img / r["bare"].seconds for r in used])
    for name in loops:
        rate = statistics.median([n_img / r[name].seconds for r in used])
        peaks = [r[name].peak for r in used if r[name].peak is not None]
        peak = statistics.median(peaks) if peaks else None
        line = f"  {name:<20}  {rate:>7.0f} img/s  {1e3 * args.batch_size / rate:>6.1f} ms/step  peak {_mib(peak)} MiB"
        if name != "bare":
            # Steady: the engine's own img/s over its log windows, past warm-up (and compilation).
            line += f"  x{rate / bare_rate:.3f} of bare; steady {statistics.median(steady[name]):.0f} img/s, " \
                    f"x{statistics.median(steady[name]) / bare_rate:.3f}"
        print(line)
    if "engine" in loops:
        per_round = statistics.median([r["bare"].seconds / r["engine"].seconds for r in used])
        print(f"  engine/bare (fp32, whole runs)  {per_round:.3f} (median of per-round ratios; target >= 0.97)")
    if not clean:
        print("note: every round ran beside other work on this machine; re-run when it is quiet")


if __name__ == "__main__":
    main()
