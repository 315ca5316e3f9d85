"""The `multigan` command line: builds settings and calls the library.

Heavy libraries (torch, torchvision, librosa) are imported inside the
commands, so `multigan --help` answers at once.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from multigan.console import setup_logging
from multigan.errors import ConfigError, MultiganError

class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line in one line."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None


def _writable_dir(path: Path) -> Path:
    """Create `path` if needed and check that files can be written in it."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".multigan-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise MultiganError(f"cannot write to {path}: {e.strerror or e}") from None
    return path


def _existing_file(path: str, what: str) -> Path:
    p = Path(path)
    if not p.exists():
        raise MultiganError(f"{what} not found: {p}")
    return p


# Commands -----------------------------------------------------------------
def _base_config(target: str):
    from multigan.config import RunConfig
    from multigan.presets import PRESETS

    if target in PRESETS:
        return PRESETS[target]()
    if target.endswith(".json") or Path(target).exists():
        return RunConfig.load(target)
    raise ConfigError(f"{target!r} is neither a recipe ({', '.join(PRESETS)}) nor a settings file")


def _apply_flags(cfg, args):
    """Command-line flags, then --set KEY=VALUE items, over the base settings."""
    flags = {
        "train.steps": args.steps, "train.batch_size": args.batch_size, "train.device": args.device,
        "train.seed": args.seed, "data.root": args.data_root, "train.amp": True if args.amp else None,
    }
    for key, value in flags.items():
        if value is not None:
            cfg = cfg.override(key, value)
    for item in args.set or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        cfg = cfg.override(key.strip(), value.strip())
    return cfg


def cmd_train(args) -> int:
    cfg = _base_config(args.target)
    out = Path(args.out or Path("runs") / cfg.name)
    resume = None
    if args.resume is not None:
        from multigan.config import RunConfig
        from multigan.engine.checkpoint import latest_checkpoint, load_checkpoint

        resume = latest_checkpoint(out) if args.resume == "latest" else _existing_file(args.resume, "checkpoint")
        cfg = RunConfig.from_json(load_checkpoint(resume)["config"])  # the checkpoint's settings, then the flags
    cfg = _apply_flags(cfg, args)
    if args.dry_run:
        print(cfg.to_json())
        print(f"# output folder: {out}" + (f"; resuming from {resume}" if resume else ""), file=sys.stderr)
        return 0
    _writable_dir(out)

    from multigan.build import train_run

    last = train_run(cfg, out, resume=resume, progress=not args.no_progress)
    print(f"checkpoint: {last}")
    print(f"previews:   {out / 'previews'}")
    print(f"log:        {out / 'log.jsonl'}")
    return 0


def cmd_generate(args) -> int:
    path = _existing_file(args.checkpoint, "checkpoint")
    out = _writable_dir(Path(args.out))
    from multigan.build import restore
    from multigan.engine.trainer import pick_device
    from multigan.generate import generate

    device = pick_device(args.device)
    restored = restore(path, device=device)
    paths = generate(restored, args.n, out, seed=args.seed, device=device)
    print(f"wrote {len(paths)} files to {out} (step {restored.step}, seed {args.seed})")
    return 0


def cmd_info(args) -> int:
    path = _existing_file(args.checkpoint, "checkpoint")
    from multigan.build import restore

    r = restore(path)
    n_params = sum(p.numel() for p in r.G.parameters())
    info = {
        "checkpoint": str(r.path),
        "step": r.step,
        "of_steps": r.config.train.steps,
        "modality": r.modality.name,
        "sample_shape": list(r.modality.shape),
        "generator": f"{r.config.model.family}, {n_params:,} parameters",
        "loss": r.config.loss.kind,
        "settings": r.config.to_dict(),
    }
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            if key != "settings":
                print(f"{key:>13}: {value}")
        print("     settings:")
        print("\n".join("  " + line for line in r.config.to_json().splitlines()))
    return 0


# Parser -------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    from multigan.presets import PRESETS

    parser = _Parser(prog="multigan", description="Train GANs on images and sounds, and write samples from checkpoints.")
    parser.add_argument("--version", action="version", version=f"multigan {_version()}")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    t = sub.add_parser("train", help="train a GAN from a recipe name or a settings file",
                       description="Train a GAN. TARGET is a recipe name or a JSON settings file "
                                   "(as written to RUN/config.json).",
                       epilog="recipes: " + ", ".join(PRESETS) + ". Example: multigan train mnist-quick --steps 500 --out runs/try")
    t.add_argument("target", metavar="TARGET", help="recipe name or settings file (.json)")
    t.add_argument("--steps", type=_positive_int, help="generator steps to train in all")
    t.add_argument("--batch-size", type=_positive_int)
    t.add_argument("--out", metavar="DIR", help="run folder (default: runs/NAME)")
    t.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), help="default: auto (cuda, mps, cpu)")
    t.add_argument("--seed", type=_int)
    t.add_argument("--data-root", metavar="PATH", help="dataset folder (for MNIST: a folder holding MNIST/raw)")
    t.add_argument("--amp", action="store_true", default=None, help="mixed precision (CUDA only)")
    t.add_argument("--resume", nargs="?", const="latest", metavar="CKPT",
                   help="continue from a checkpoint (default: the latest in the run folder)")
    t.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="change any setting, e.g. --set loss.kind=hinge --set optim.lr_d=1e-4 (repeatable)")
    t.add_argument("--dry-run", action="store_true", help="print the resolved settings and stop")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)

    g = sub.add_parser("generate", help="write samples (PNG) from a checkpoint alone",
                       description="Write N samples from a checkpoint's EMA generator, an overview grid, "
                                   "and generation.json (seed, checkpoint, step). Needs no dataset.")
    g.add_argument("checkpoint", metavar="CHECKPOINT", help="a .pt checkpoint, or a run folder (its latest checkpoint)")
    g.add_argument("--n", type=_positive_int, default=16, help="number of samples (default 16)")
    g.add_argument("--out", required=True, metavar="DIR", help="output folder")
    g.add_argument("--seed", type=_int, default=0, help="noise seed (default 0)")
    g.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto")
    g.set_defaults(func=cmd_generate)

    i = sub.add_parser("info", help="describe a checkpoint", description="Print what a checkpoint holds.")
    i.add_argument("checkpoint", metavar="CHECKPOINT")
    i.add_argument("--json", action="store_true", help="print JSON")
    i.set_defaults(func=cmd_info)
    return parser


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("multigan")
    except PackageNotFoundError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.quiet)
    try:
        return args.func(args)
    except MultiganError as e:
        print(f"multigan {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"multigan {args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `multigan info X | head`: the reader left, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:  # disk full, permission denied while writing, ...
        where = f": {e.filename}" if getattr(e, "filename", None) else ""
        print(f"multigan {args.command}: error: {e.strerror or e}{where}", file=sys.stderr)
        return 1
