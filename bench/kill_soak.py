"""Kill/resume soak: `kill -9` a training at random moments, resume it each time, compare with a straight run.

A straight run trains N steps in one go. The soaked run is started, killed
with SIGKILL at a random moment once it trains, checked (every checkpoint in its folder
must load) and resumed with `--resume`, again and again, until it reaches N
steps. Its final weights, optimiser states and RNG states must be bitwise
equal to the straight run's; its log must hold one line per logged step.
Checkpoints are written every other step, so many kills land inside a write.

Prints figures; the exit status is 1 if any promise failed.

    PYTHONPATH=. python bench/kill_soak.py --kills 20
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from multigan.config import DataConfig, NetConfig, RunConfig, TrainConfig
from multigan.engine.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint

REPO = Path(__file__).resolve().parents[1]
KEYS = ("G", "D", "G_ema", "opt_G", "opt_D", "scaler_G", "scaler_D", "noise", "rng")


def settings(path: Path, images: Path, steps: int) -> Path:
    cfg = RunConfig(
        name="kill-soak",
        data=DataConfig(source="folder", root=str(images), channels=1, height=16, width=16),
        model=NetConfig(z_dim=8, g_width=8, d_width=8),
        train=TrainConfig(steps=steps, batch_size=16, device="cpu", ema_rampup=10, n_preview=8, log_every=2,
                          preview_every=50, checkpoint_every=2, keep_checkpoints=3),
    )
    path.write_text(cfg.to_json())
    return path


def equal(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(equal(x, y) for x, y in zip(a, b))
    return a == b


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=20, help="SIGKILLs to deliver (at least)")
    p.add_argument("--steps", type=int, default=1200, help="steps of the run")
    p.add_argument("--max-delay", type=float, default=1.0,
                   help="a kill comes 0..this many seconds after the restarted run logs its first step")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    rng = random.Random(args.seed)
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")

    with tempfile.TemporaryDirectory(prefix="multigan-soak-") as tmp:
        tmp = Path(tmp)
        images = tmp / "images"
        images.mkdir()
        g = torch.Generator().manual_seed(0)
        for i in range(64):
            Image.fromarray(torch.randint(0, 256, (16, 16), dtype=torch.uint8, generator=g).numpy()).save(images / f"{i:02d}.png")
        cfg = settings(tmp / "settings.json", images, args.steps)
        train = [sys.executable, "-m", "multigan", "-q", "train", str(cfg), "--no-progress"]

        t0 = time.perf_counter()
        subprocess.run(train + ["--out", str(tmp / "straight")], env=env, check=True)
        straight_s = time.perf_counter() - t0
        straight = load_checkpoint(latest_checkpoint(tmp / "straight"))

        out, ckpts = tmp / "soaked", tmp / "soaked" / "checkpoints"
        kills = in_write = loaded = temps_left = restarts = 0
        problems: list[str] = []
        while True:
            resume = ["--resume"] if list_checkpoints(ckpts) else []
            proc = subprocess.Popen(train + ["--out", str(out)] + resume, env=env, stderr=subprocess.PIPE, text=True)
            restarts += 1
            if kills < args.kills:
                # Kill while it trains: after its first new log line (startup takes seconds), at a random moment.
                log = out / "log.jsonl"
                seen = len(log.read_text().splitlines()) if log.exists() else 0
                deadline = time.monotonic() + 120
                while proc.poll() is None and time.monotonic() < deadline and \
                        (len(log.read_text().splitlines()) if log.exists() else 0) <= seen:
                    time.sleep(0.01)
                try:
                    proc.wait(timeout=rng.uniform(0.0, args.max_delay))
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                    kills += 1
                    temps = [q for q in ckpts.glob(".*.tmp")] if ckpts.is_dir() else []
                    in_write += bool(temps)
                    temps_left += len(temps)
                    for path in list_checkpoints(ckpts) + ([ckpts / "latest.pt"] if (ckpts / "latest.pt").exists() else []):
                        try:
                            load_checkpoint(path)
                            loaded += 1
                        except Exception as e:  # noqa: BLE001 - any failure is a broken promise
                            problems.append(f"kill {kills}: {path.name} does not load: {e}")
                    continue
            code = proc.wait()
            if code != 0:
                problems.append(f"a resumed run exited {code}: {proc.stderr.read()[-500:]}")
                break
            if load_checkpoint(latest_checkpoint(out))["step"] >= args.steps:
                break
        soaked = load_checkpoint(latest_checkpoint(out))
        for key in KEYS:
            if not equal(straight[key], soaked[key]):
                problems.append(f"{key} differs from the straight run")
        steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
        if steps != sorted(set(steps)):
            problems.append("log.jsonl holds a step twice or out of order")
        leftovers = [q.name for q in ckpts.glob(".*.tmp")]

    print(f"kill/resume soak: {args.steps} steps, checkpoint every 2 steps, torch {torch.__version__}")
    print(f"  straight run           {straight_s:.1f} s")
    print(f"  SIGKILLs               {kills} ({in_write} left a temporary file: killed inside a write)")
    print(f"  starts                 {restarts}")
    print(f"  checkpoints loaded     {loaded} after kills, all loadable: {not any('does not load' in p for p in problems)}")
    print(f"  temp files after kills {temps_left}; left at the end: {len(leftovers)} (removed at each start)")
    print(f"  bitwise equal          {all(equal(straight[k], soaked[k]) for k in KEYS)} ({', '.join(KEYS)})")
    print(f"  log lines              {len(steps)}, one per logged step: {steps == sorted(set(steps))}")
    for problem in problems:
        print(f"  PROBLEM: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
