"""Training speed on the CPU, on a quiet machine and beside one busy process, per thread setting.

Trains the voice-quick DCGAN (1x64x64, unconditional, batch 64) on random
uint8 images held in memory: the nets and the cost of a step are what
matter here, not the data. Each setting runs in a fresh subprocess, so its
environment variables reach the OpenMP runtime before torch loads it,
twice: once on the quiet machine, once beside a busy process that the
benchmark starts before the run and kills after it (`python -c "while True:
pass"`, or a process busy `--hog-duty` of every 100 ms, like a browser).

Settings (`--configs`):
  defaults   torch's own choice: one thread per core, libgomp's spin-waiting
  omp1       OMP_NUM_THREADS=1
  passive    OMP_WAIT_POLICY=PASSIVE: idle OpenMP threads sleep at once instead of spinning
  policy     multigan.runtime.configure_cpu_threads(): threads fitted to the cores
             other processes leave free, rechecked every 2 s

The step is the standard DCGAN step (Adam, non-saturating loss, one G(z) per
step shared by the D and G steps), with `CpuThreads.after_step()` after each
step as the trainer calls it. Each run times `--steps` steps after
`--warmup` untimed ones by the wall clock; the settings alternate within a
round, so a change in the machine's other load hits them alike. Prints
img/s quiet and loaded, their ratio (a fair share of 2 cores beside one
busy process costs about 2x), and how many cores other processes kept busy
during each run: about 0 in quiet runs when the machine really was quiet.

Prints figures only; it asserts nothing about time.

    PYTHONPATH=. python bench/cpu_contention.py
    PYTHONPATH=. python bench/cpu_contention.py --rounds 3 --hog-duty 0.3
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHAPE = (1, 64, 64)
# Variables that change torch's threads or OpenMP's waiting: cleared so "defaults" means defaults.
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_PROC_BIND", "OMP_PLACES")
CONFIGS: dict[str, tuple[dict[str, str], bool]] = {  # name -> (environment of the run, use the thread policy)
    "defaults": ({}, False),
    "omp1": ({"OMP_NUM_THREADS": "1"}, False),
    "passive": ({"OMP_WAIT_POLICY": "PASSIVE"}, False),
    "policy": ({}, True),
}


# The child: one run --------------------------------------------------------
def child(spec: dict) -> None:
    """Train `spec["steps"]` timed steps after `spec["warmup"]`; prints one JSON line of figures."""
    import torch
    import torch.nn.functional as F

    from multigan.data.tensors import ImageTensorDataset
    from multigan.modalities.image import ImageModality
    from multigan.presets import voice_quick
    from multigan.registry import build_nets
    from multigan.runtime import busy_seconds, configure_cpu_threads, keep_freed_memory

    keep_freed_memory()  # as train() does on the CPU
    threads = configure_cpu_threads() if spec["policy"] else None
    cfg = voice_quick().override("model.n_classes", 0)
    torch.manual_seed(0)
    G, D = build_nets(cfg.model, SHAPE)
    opt_G = torch.optim.Adam(G.parameters(), lr=cfg.optim.lr_g, betas=cfg.optim.betas)
    opt_D = torch.optim.Adam(D.parameters(), lr=cfg.optim.lr_d, betas=cfg.optim.betas)
    B = spec["batch_size"]
    data = ImageTensorDataset(torch.randint(0, 256, (16 * B,) + SHAPE, dtype=torch.uint8))
    modality = ImageModality(*SHAPE)

    def step(k: int) -> None:
        real = modality.encode(data.__getitems__(range((k % 16) * B, (k % 16 + 1) * B)))  # [B, 1, 64, 64]
        fake = G(torch.randn(B, G.z_dim))
        D.requires_grad_(True)
        opt_D.zero_grad(set_to_none=True)
        (F.softplus(-D(real)).mean() + F.softplus(D(fake.detach())).mean()).backward()
        opt_D.step()
        D.requires_grad_(False)
        opt_G.zero_grad(set_to_none=True)
        F.softplus(-D(fake)).mean().backward()
        opt_G.step()
        if threads is not None:
            threads.after_step()

    for k in range(spec["warmup"]):
        step(k)
    cpus = set(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else set(range(os.cpu_count() or 1))
    busy0, own0, t0 = busy_seconds(cpus), time.process_time(), time.perf_counter()
    for k in range(spec["steps"]):
        step(k)
    seconds = time.perf_counter() - t0
    busy1, own1 = busy_seconds(cpus), time.process_time()
    others = None if busy0 is None or busy1 is None else max(0.0, busy1 - busy0 - (own1 - own0)) / seconds
    print(json.dumps({
        "img_s": spec["steps"] * B / seconds, "own_cores": (own1 - own0) / seconds, "others": others,
        "threads": torch.get_num_threads(),
        "changes": [] if threads is None else [(round(t, 1), n) for t, _, n in threads.changes],
    }))


# The parent: alternating runs ----------------------------------------------
HOG = """
import time
duty = {duty}
while True:
    end = time.perf_counter() + 0.1 * duty
    while time.perf_counter() < end:
        pass
    time.sleep(0.1 * (1 - duty))
"""


def run(name: str, loaded: bool, args: argparse.Namespace) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARS}
    variables, policy = CONFIGS[name]
    env.update(variables)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    spec = {"steps": args.steps, "warmup": args.warmup, "batch_size": args.batch_size, "policy": policy}
    hog = None
    if loaded:
        hog_code = "while True: pass" if args.hog_duty >= 1 else HOG.format(duty=args.hog_duty)
        hog = subprocess.Popen([sys.executable, "-c", hog_code], env={k: v for k, v in env.items() if k != "PYTHONPATH"})
    try:
        out = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], env=env, check=True,
                             stdout=subprocess.PIPE, text=True, timeout=args.timeout)
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    return json.loads(out.stdout.strip().splitlines()[-1])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="img/s of voice-quick DCGAN training on the CPU, quiet and beside one busy process, for torch's "
                    "default threads, OMP_NUM_THREADS=1, OpenMP's passive waiting and multigan's thread policy; "
                    "each run in a fresh subprocess.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--steps", type=int, default=15, help="timed training steps per run")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps before them (the policy's first window)")
    p.add_argument("--batch-size", type=int, default=64, help="images per step")
    p.add_argument("--rounds", type=int, default=1, help="rounds over all settings; figures are medians over rounds")
    p.add_argument("--configs", default="defaults,omp1,policy", help=f"comma-separated, from {', '.join(CONFIGS)}")
    p.add_argument("--hog-duty", type=float, default=1.0, help="share of every 100 ms the busy process spins; 1: always")
    p.add_argument("--timeout", type=float, default=600, help="seconds before a run is given up")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    if unknown := [c for c in args.configs if c not in CONFIGS]:
        p.error(f"unknown settings {unknown}; known: {', '.join(CONFIGS)}")
    for name in ("steps", "warmup", "batch_size", "rounds"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if not 0 < args.hog_duty <= 1:
        p.error("--hog-duty must be in (0, 1]")
    return args


def _cores(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child is not None:
        child(json.loads(args.child))
        return
    import torch

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    openmp = next((line.strip() for line in torch.__config__.parallel_info().splitlines() if "OpenMP" in line), "no OpenMP")
    print(f"command: {shlex.join([Path(sys.executable).name] + sys.argv)}")
    print(f"machine: {os.cpu_count()} CPUs ({cpus} usable), torch {torch.__version__} ({openmp}), "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"voice-quick DCGAN 1x64x64, batch {args.batch_size}, {args.steps} timed steps after {args.warmup}, "
          f"busy process: {'always spinning' if args.hog_duty >= 1 else f'spinning {args.hog_duty:.0%} of every 100 ms'}")
    print("others: cores that other processes kept busy during the timed steps (the busy process included)")
    print("threads: torch's threads at the end of the run; the policy's changes as threads@seconds since its start")
    print()
    print(f"{'round':>5}  {'setting':<9}  {'machine':<7}  {'img/s':>6}  {'own cores':>9}  {'others':>6}  threads")
    results: dict[tuple[str, bool], list[dict]] = {}
    for r in range(1, args.rounds + 1):
        for name in args.configs:
            for loaded in (False, True):
                m = run(name, loaded, args)
                results.setdefault((name, loaded), []).append(m)
                threads = " ".join([str(m["threads"])] + [f"{n}@{t:g}s" for t, n in m["changes"]][:6])
                print(f"{r:>5}  {name:<9}  {'loaded' if loaded else 'quiet':<7}  {m['img_s']:>6.1f}  "
                      f"{m['own_cores']:>9.2f}  {_cores(m['others']):>6}  {threads}", flush=True)
    print()
    print(f"median over {args.rounds} round(s)")
    print(f"  {'setting':<9}  {'quiet img/s':>11}  {'loaded img/s':>12}  {'quiet/loaded':>12}  {'quiet vs ' + args.configs[0]:>17}")
    base = statistics.median(m["img_s"] for m in results[(args.configs[0], False)])
    for name in args.configs:
        quiet = statistics.median(m["img_s"] for m in results[(name, False)])
        loaded = statistics.median(m["img_s"] for m in results[(name, True)])
        print(f"  {name:<9}  {quiet:>11.1f}  {loaded:>12.1f}  {quiet / loaded:>11.2f}x  {quiet / base:>16.2f}x")
    noisy = [m["others"] for (_, loaded), ms in results.items() if not loaded for m in ms if (m["others"] or 0) > 0.15]
    if noisy:
        print(f"note: other processes kept up to {max(noisy):.2f} cores busy during quiet runs: the machine was not quiet")


if __name__ == "__main__":
    main()
