"""The `multigan` command line: builds settings and calls the library.

Heavy libraries (torch, torchvision, librosa) are imported inside the
commands, so `multigan --help` answers at once.
"""
from __future__ import annotations

import argparse
import json
import os
import re
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
        "train.seed": args.seed, "data.root": args.data_root,
        "train.precision": args.precision or ("fp16" if args.amp else None),
        "train.compile": True if args.compile else None, "eval.every": args.eval_every,
    }
    for key, value in flags.items():
        if value is not None:
            cfg = cfg.override(key, value)
    for key, value in _set_items(args.set):
        cfg = cfg.override(key, value)
    return cfg


def _set_items(items: list[str] | None) -> list[tuple[str, str]]:
    """--set KEY=VALUE items as (key, value) pairs."""
    pairs = []
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set expects KEY=VALUE, got {item!r}")
        pairs.append((key.strip(), value.strip()))
    return pairs


def run_folder_name(name: str) -> str:
    """A run's name as one folder name under runs/: never a path (`../x`, `/abs`), never hidden or empty."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-")
    return safe or "run"


def cmd_train(args) -> int:
    cfg = _base_config(args.target)
    out = Path(args.out or Path("runs") / run_folder_name(cfg.name))
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

    from multigan.engine import distributed
    from multigan.run import train_run

    # Under torchrun: join the other ranks first (world size 1 otherwise).
    world = distributed.setup(cfg.train.device, backend=args.dist_backend,
                              timeout_s=float(os.environ.get("MULTIGAN_DIST_TIMEOUT", "300")))
    try:
        last = train_run(cfg, out, resume=resume, progress=not args.no_progress)
    finally:
        distributed.shutdown()
    if world.is_main:
        print(f"checkpoint: {last}")
        print(f"previews:   {out / 'previews'}")
        print(f"log:        {out / 'log.jsonl'}")
    return 0


def cmd_generate(args) -> int:
    path = _existing_file(args.checkpoint, "checkpoint")
    from multigan.restore import restore
    from multigan.engine.distributed import pick_device
    from multigan.generate import generate, labels_for

    device = pick_device(args.device)
    restored = restore(path, device=device)
    labels_for(restored.G, args.n, args.label)  # a bad label fails before the folder is made
    out = _writable_dir(Path(args.out))
    paths = generate(restored, args.n, out, seed=args.seed, device=device, label=args.label)
    print(f"wrote {len(paths)} files to {out} (step {restored.step}, seed {args.seed})")
    return 0


def cmd_info(args) -> int:
    path = _existing_file(args.checkpoint, "checkpoint")
    from multigan.restore import restore

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


def cmd_evaluate(args) -> int:
    path = _existing_file(args.checkpoint, "checkpoint")
    if args.n < 10:
        raise MultiganError(f"--n must be at least 10 samples, got {args.n}")
    from multigan.run import evaluate_checkpoint
    from multigan.engine.distributed import pick_device
    from multigan.metrics.evaluate import format_table

    result = evaluate_checkpoint(path, n=args.n, data_root=args.data_root, features=args.features or "",
                                 device=pick_device(args.device), seed=args.seed, progress=not args.quiet)
    if args.out:
        out = Path(args.out)
    elif path.is_dir():
        out = path / "evaluation.json"
    elif path.parent.name == "checkpoints":
        out = path.parent.parent / "evaluation.json"
    else:
        out = path.with_name(f"{path.stem}-evaluation.json")
    _writable_dir(out.parent)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{result['checkpoint']} (step {result['step']}): {result['n']} samples against "
          f"{result['reference_items']:,} items of {result['reference_data']}")
    print(format_table({"generated": result}))
    print(f"figures: {out}")
    return 0


def cmd_report(args) -> int:
    from multigan.report import write_report

    page = write_report(args.run_dir, args.out)
    print(f"report: {page}")
    print(f"open:   {page.resolve().as_uri()}")
    return 0


def cmd_vocode(args) -> int:
    """Real clips through log-mel and back with Griffin-Lim: the vocoder's ceiling.

    Each clip is written to OUT under its path relative to IN with ".wav" added
    (IN/a/x.wav -> OUT/a/x.wav.wav, IN/y.flac -> OUT/y.flac.wav): distinct
    inputs never share an output, whatever their folders and extensions.
    """
    source = _existing_file(args.input, "input")
    out = _writable_dir(Path(args.out))
    import torch

    from multigan.audio.io import load_audio, write_wav
    from multigan.audio.spectral import log_spectral_distance, magnitude, spectral_convergence
    from multigan.audio.vocoder import mel_db_to_wave
    from multigan.modalities.mel import analyze
    from multigan.config import AudioConfig, replace_setting
    from multigan.data.audio_folder import find_audio_files

    if args.checkpoint:
        from multigan.restore import restore

        audio = getattr(restore(_existing_file(args.checkpoint, "checkpoint")).modality, "audio", None)
        if audio is None:
            raise ConfigError(f"{args.checkpoint} is not an audio checkpoint")
    else:
        audio = AudioConfig()
    for key, value in _set_items(args.set):
        audio = replace_setting(audio, key, value)
    files = [source] if source.is_file() else find_audio_files(source)
    if not files:
        raise MultiganError(f"no audio files under {source}")
    files = files[: args.limit] if args.limit else files
    a = audio
    rows = []
    from tqdm import tqdm

    for path in tqdm(files, desc="vocoding", unit="clip", disable=len(files) < 4):
        name = path.name if path == source else path.relative_to(source).as_posix()
        wave = torch.from_numpy(load_audio(path, a.sample_rate, min_source_rate=a.min_source_rate,
                                           max_source_rate=a.max_source_rate, max_seconds=a.max_seconds))  # [T]
        db = analyze(wave, a)
        rebuilt = mel_db_to_wave(db, sample_rate=a.sample_rate, n_fft=a.n_fft, hop_length=a.hop_length, fmin=a.fmin,
                                 fmax=a.fmax, htk=a.htk, n_iter=a.gl_iter, momentum=a.gl_momentum, init=a.gl_init,
                                 length=len(wave), generator=torch.Generator().manual_seed(0))
        ref = magnitude(wave, a.n_fft, a.hop_length)
        est = magnitude(rebuilt, a.n_fft, a.hop_length)
        sc, lsd = float(spectral_convergence(ref, est)), float(log_spectral_distance(ref, est))
        write_wav(out / f"{name}.wav", rebuilt, a.sample_rate)
        rows.append((name, sc, lsd))
    width = max(len(r[0]) for r in rows)
    print(f"{'clip':<{width}}  spectral convergence  log-spectral distance (dB)")
    for name, sc, lsd in rows if len(rows) <= 20 else rows[:10]:
        print(f"{name:<{width}}  {sc:20.4f}  {lsd:26.2f}")
    if len(rows) > 20:
        print(f"... {len(rows) - 10} more")
    mean_sc = sum(r[1] for r in rows) / len(rows)
    mean_lsd = sum(r[2] for r in rows) / len(rows)
    print(f"{'mean of ' + str(len(rows)):<{width}}  {mean_sc:20.4f}  {mean_lsd:26.2f}")
    print(f"wrote {len(rows)} WAV files to {out}, each named <clip>.wav ({a.n_mels} mels, n_fft {a.n_fft}, "
          f"hop {a.hop_length}, {a.gl_iter} Griffin-Lim iterations)")
    return 0


def recipe_main(presets: dict, description: str, *, default_out: str, n_samples: int, needs_data: bool,
                argv: list[str] | None = None) -> int:
    """The command line of a recipe script: pick a preset, train, write samples from the last checkpoint."""
    p = _Parser(description=description)
    p.add_argument("--preset", choices=presets, default=next(iter(presets)))
    p.add_argument("--data-root", required=needs_data, metavar="PATH", help="the dataset folder")
    p.add_argument("--out", metavar="DIR", help=f"run folder (default: {default_out}-PRESET)")
    p.add_argument("--steps", type=_positive_int, help="override the preset's number of steps")
    p.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"))
    p.add_argument("--resume", action="store_true", help="continue from the run folder's latest checkpoint")
    p.add_argument("--eval-every", type=_positive_int, metavar="N",
                   help="measure the samples every N steps (metrics.jsonl) and keep checkpoints/best.pt")
    args = p.parse_args(argv)
    setup_logging()
    try:
        from multigan.restore import restore
        from multigan.run import train_run
        from multigan.engine.checkpoint import latest_checkpoint
        from multigan.generate import generate

        cfg = presets[args.preset]()
        flags = {"data.root": args.data_root, "train.steps": args.steps, "train.device": args.device,
                 "eval.every": args.eval_every}
        for key, value in flags.items():
            if value is not None:
                cfg = cfg.override(key, value)
        out = Path(args.out or f"{default_out}-{args.preset}")
        if cfg.data.audio is not None:
            a = cfg.data.audio
            print(f"{cfg.name}: clips resampled to {a.sample_rate} Hz, {a.n_mels} mels x {a.frames} frames "
                  f"({a.length / a.sample_rate:.2f} s); WAVs are written at {a.sample_rate} Hz", file=sys.stderr)
        last = train_run(cfg, out, resume=latest_checkpoint(out) if args.resume else None)
        paths = generate(restore(last), n_samples, out / "samples", seed=0)
    except MultiganError as e:
        print(f"{p.prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f"{p.prog}: interrupted; continue with --resume", file=sys.stderr)
        return 128 + (getattr(e, "signum", None) or 2)
    grid = next(p for p in paths if p.name.endswith("-grid.png"))
    print(f"checkpoint: {last}\nsamples:    {grid} (and {len(paths) - 1} more files beside it)\n"
          f"previews:   {out / 'previews'}")
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
    t.add_argument("--precision", choices=("fp32", "bf16", "fp16"),
                   help="autocast precision (default: the settings', fp32): bf16 on CUDA or CPU, fp16 on CUDA")
    t.add_argument("--amp", action="store_true", default=None, help="the same as --precision fp16")
    t.add_argument("--compile", action="store_true", default=None, help="torch.compile G and D (slow to start, faster steps)")
    t.add_argument("--dist-backend", choices=("auto", "nccl", "gloo"), default="auto",
                   help="under torchrun: the process group's backend (auto: nccl on CUDA, gloo on CPUs)")
    t.add_argument("--eval-every", type=_positive_int, metavar="N",
                   help="measure FID, KID, classifier score... every N steps and keep checkpoints/best.pt (off by default)")
    t.add_argument("--resume", nargs="?", const="latest", metavar="CKPT",
                   help="continue from a checkpoint (default: the latest in the run folder)")
    t.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="change any setting, e.g. --set loss.kind=hinge --set optim.lr_d=1e-4 (repeatable)")
    t.add_argument("--dry-run", action="store_true", help="print the resolved settings and stop")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)

    g = sub.add_parser("generate", help="write samples (PNG, or WAV for audio) from a checkpoint alone",
                       description="Write N samples from a checkpoint's EMA generator, an overview grid, "
                                   "and generation.json (seed, checkpoint, step). Needs no dataset.")
    g.add_argument("checkpoint", metavar="CHECKPOINT", help="a .pt checkpoint, or a run folder (its latest checkpoint)")
    g.add_argument("--n", type=_positive_int, default=16, help="number of samples (default 16)")
    g.add_argument("--out", required=True, metavar="DIR", help="output folder")
    g.add_argument("--seed", type=_int, default=0, help="noise seed (default 0)")
    g.add_argument("--label", type=_int, metavar="K",
                   help="class-conditional checkpoints: draw only class K (default: every class in turn)")
    g.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto")
    g.set_defaults(func=cmd_generate)

    v = sub.add_parser("vocode", help="send real clips through log-mel and Griffin-Lim, print the error",
                       description="Analyse real clips into log-mel and turn them back into WAVs with inverse mel "
                                   "and Griffin-Lim, printing spectral convergence and log-spectral distance: the "
                                   "ceiling any generated clip can reach with this vocoder.")
    v.add_argument("input", metavar="IN", help="an audio file or a folder of them")
    v.add_argument("--out", required=True, metavar="DIR", help="output folder for the WAVs")
    v.add_argument("--checkpoint", metavar="CKPT", help="take the audio settings from an audio checkpoint")
    v.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="change an audio setting, e.g. --set gl_iter=64 --set n_mels=80 (repeatable)")
    v.add_argument("--limit", type=_positive_int, help="at most this many clips")
    v.set_defaults(func=cmd_vocode)

    i = sub.add_parser("info", help="describe a checkpoint", description="Print what a checkpoint holds.")
    i.add_argument("checkpoint", metavar="CHECKPOINT")
    i.add_argument("--json", action="store_true", help="print JSON")
    i.set_defaults(func=cmd_info)

    e = sub.add_parser("evaluate", help="measure a checkpoint: FID, KID, classifier score, coverage, precision, recall",
                       description="Generate N samples from a checkpoint's EMA generator and measure them against the "
                                   "data it was trained on, on the features of a small classifier shipped with multigan "
                                   "(digits for MNIST, spoken digits for voice clips; sounds are measured after "
                                   "Griffin-Lim). Prints a table and writes the figures as JSON.")
    e.add_argument("checkpoint", metavar="CHECKPOINT", help="a .pt checkpoint, or a run folder (its latest checkpoint)")
    e.add_argument("--n", type=_positive_int, default=2000, help="number of generated samples (default 2000)")
    e.add_argument("--data-root", metavar="PATH", help="the reference data (default: the folder the run trained on)")
    e.add_argument("--features", metavar="FILE", help="a feature network file (default: the one shipped in multigan/assets/)")
    e.add_argument("--out", metavar="FILE", help="JSON file (default: RUN/evaluation.json)")
    e.add_argument("--seed", type=_int, default=0, help="noise seed (default 0)")
    e.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto")
    e.set_defaults(func=cmd_evaluate)

    r = sub.add_parser("report", help="write a static HTML page of a run: curves, previews, samples, audio players",
                       description="Write an HTML page of a run folder: loss, score and metric curves, health events, "
                                   "preview grids over time, samples with audio players. It opens from the file "
                                   "system: no server, no network.")
    r.add_argument("run_dir", metavar="RUN_DIR", help="a run folder written by `multigan train`")
    r.add_argument("--out", metavar="DIR", help="folder for index.html and its plots (default: RUN_DIR/report)")
    r.set_defaults(func=cmd_report)
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
    except KeyboardInterrupt as e:  # the trainer saved and said where (engine.maintenance.Stopped)
        print(f"multigan {args.command}: interrupted", file=sys.stderr)
        return 128 + (getattr(e, "signum", None) or 2)
    except BrokenPipeError:  # e.g. `multigan info X | head`: the reader left, which is fine
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:  # disk full, permission denied while writing, ...
        where = f": {e.filename}" if getattr(e, "filename", None) else ""
        print(f"multigan {args.command}: error: {e.strerror or e}{where}", file=sys.stderr)
        return 1
