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

from multigan.config import DEVICES
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


def _train_flags(args) -> dict:
    """The settings `train`'s own flags stand for (None: not given)."""
    return {
        "train.steps": args.steps, "train.batch_size": args.batch_size, "train.device": args.device,
        "train.seed": args.seed, "data.root": args.data_root,
        "train.precision": args.precision or ("fp16" if args.amp else None),
        "train.compile": True if args.compile else None, "eval.every": args.eval_every,
    }


def _with_flags(cfg, flags: dict):
    """`cfg` with each setting of `flags` that was given (not None)."""
    for key, value in flags.items():
        if value is not None:
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


def cmd_train(args) -> int:
    from multigan.folders import default_run_folder

    cfg = _base_config(args.target)
    out = Path(args.out or default_run_folder(cfg.name))
    resume = None
    if args.resume is not None:
        from multigan.run import start_settings

        cfg, resume = start_settings(cfg, out, args.resume)
    cfg = _with_flags(cfg, _train_flags(args))
    for key, value in _set_items(args.set):
        cfg = cfg.override(key, value)
    cfg = cfg.with_absolute_paths()  # as the run will store them
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
    from multigan.engine.data import class_title
    from multigan.generate import check_scale, check_truncation, class_index, default_out, generate, labels_for

    check_truncation(args.truncation)  # bad options fail before the checkpoint loads
    check_scale(args.scale)
    if args.interpolate is not None and args.interpolate < 2:
        raise ConfigError(f"--interpolate needs at least 2 steps, got {args.interpolate}")
    device = pick_device(args.device)
    restored = restore(path, device=device)
    label = class_index(args.label, restored.class_names, getattr(restored.G, "n_classes", 0))
    labels_for(restored.G, 1, label)  # a bad label fails before the folder is made
    out = _writable_dir(Path(args.out) if args.out else default_out(restored.path))
    walks = 1 if getattr(restored.G, "n_classes", 0) else 4  # a conditional walk is drawn for every class
    n = args.n or (walks if args.interpolate else 16)
    paths = generate(restored, n, out, seed=args.seed, device=device, label=label, truncation=args.truncation,
                     interpolate_steps=args.interpolate or 0, scale=args.scale)
    what = f"{n} walks of {args.interpolate} steps" if args.interpolate else f"{n} samples"
    if label is not None:
        title = class_title(label, restored.class_names)
        what += f" of class {label}" + ("" if title == f"class {label}" else f" ({title})")
    print(f"wrote {what} as {len(paths)} files to {out} (step {restored.step}, seed {args.seed})")
    return 0


def cmd_info(args) -> int:
    path = _existing_file(args.checkpoint, "checkpoint")
    from multigan.restore import describe

    info = describe(path)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for key, value in info.items():
            if key != "settings":
                print(f"{key:>13}: {value}")
        print("     settings:")
        print("\n".join("  " + line for line in json.dumps(info["settings"], indent=2).splitlines()))
    return 0


def cmd_settings(args) -> int:
    from multigan.config import settings_table

    rows = settings_table(_base_config(args.target) if args.target else None)
    values = [json.dumps(row.value) for row in rows]
    key_w, type_w = max(len(r.key) for r in rows), max(len(r.type) for r in rows)
    value_w = min(max(len(v) for v in values), 24)  # long values (loss.weights) push their help along
    for row, value in zip(rows, values):
        print(f"{row.key:<{key_w}}  {row.type:<{type_w}}  {value:<{value_w}}  {row.help}")
    return 0


def cmd_evaluate(args) -> int:
    path = _existing_file(args.checkpoint, "checkpoint")
    from multigan.generate import check_truncation

    check_truncation(args.truncation)  # before the checkpoint and the data load
    if args.n < 10:
        raise MultiganError(f"--n must be at least 10 samples, got {args.n}")
    from multigan.run import evaluate_checkpoint, evaluation_path
    from multigan.engine.distributed import pick_device
    from multigan.metrics.evaluate import format_table, metric_labels

    device = pick_device(args.device)
    inception = None
    if args.inception or args.inception_weights:  # checked before the long part: no weights fails at once
        from multigan.metrics.inception import load_inception
        from multigan.restore import restore

        restored = restore(path, device=device)
        if restored.modality.name != "image":
            raise ConfigError(f"--inception measures images; this checkpoint's samples are {restored.modality.name}")
        inception = load_inception(args.inception_weights, device)
    result = evaluate_checkpoint(path, n=args.n, data_root=args.data_root, features=args.features or "",
                                 device=device, seed=args.seed, progress=not args.quiet, truncation=args.truncation)
    if inception is not None:
        import dataclasses

        from multigan.data.cache import default_cache_dir
        from multigan.metrics.inception import evaluate_inception
        from multigan.registry import load_data

        data = restored.config.data
        dataset, _ = load_data(data if args.data_root is None else dataclasses.replace(data, root=args.data_root),
                               progress=not args.quiet)
        result.update(evaluate_inception(inception, restored.G, restored.modality, dataset, n=args.n, seed=args.seed,
                                         cache_dir=default_cache_dir(), truncation=args.truncation,
                                         label_mix=restored.label_mix))
    result["labels"] = metric_labels(result)  # the table's words for each metric key
    out = evaluation_path(path, args.out)
    _writable_dir(out.parent)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{result['checkpoint']} (step {result['step']}): {result['n']} samples against "
          f"{result['reference_items']:,} items of {result['reference_data']}"
          + (f", noise truncated at +-{args.truncation:g}" if args.truncation is not None else "")
          + {"data": ", classes in the training data's proportions", "in turn": ", every class in turn"}.get(result["label_draw"], ""))
    print(format_table({"generated": result}))
    print(f"classifier-feature figures: on {Path(result['features']).name}, comparable between runs measured on it, "
          f"not with published Inception FIDs" + ("" if inception else " (--inception gives those)"))
    print(f"figures: {out}")
    return 0


def cmd_report(args) -> int:
    from multigan.report import write_report

    page = write_report(args.run_dir, args.out)
    print(f"report: {page}")
    print(f"open:   {page.resolve().as_uri()}")
    return 0


def cmd_vocode(args) -> int:
    """Real clips through log-mel and back with Griffin-Lim: the vocoder's ceiling (multigan.vocode)."""
    source = _existing_file(args.input, "input")
    from multigan.config import AudioConfig, replace_setting
    from multigan.vocode import vocode_clips

    if args.checkpoint:
        from multigan.restore import restore

        audio = getattr(restore(_existing_file(args.checkpoint, "checkpoint")).modality, "audio", None)
        if audio is None:
            raise ConfigError(f"{args.checkpoint} is not an audio checkpoint")
    else:
        audio = AudioConfig()
    for key, value in _set_items(args.set):
        audio = replace_setting(audio, key, value)
    out = Path(args.out)  # made by the first clip written: a bad setting or no clips leaves no folder
    clips = vocode_clips(source, out, audio, limit=args.limit, progress=not args.quiet)
    width = max(len(c.name) for c in clips)
    print(f"{'clip':<{width}}  spectral convergence  log-spectral distance (dB)")
    for c in clips if len(clips) <= 20 else clips[:10]:
        print(f"{c.name:<{width}}  {c.spectral_convergence:20.4f}  {c.log_spectral_distance:26.2f}")
    if len(clips) > 20:
        print(f"... {len(clips) - 10} more")
    mean_sc = sum(c.spectral_convergence for c in clips) / len(clips)
    mean_lsd = sum(c.log_spectral_distance for c in clips) / len(clips)
    print(f"{'mean of ' + str(len(clips)):<{width}}  {mean_sc:20.4f}  {mean_lsd:26.2f}")
    print(f"wrote {len(clips)} WAV files to {out}, each named <clip>.wav ({audio.n_mels} mels, n_fft {audio.n_fft}, "
          f"hop {audio.hop_length}, {audio.gl_iter} Griffin-Lim iterations)")
    return 0


def recipe_parser(presets: dict, description: str, *, needs_data: bool) -> argparse.ArgumentParser:
    """The command line of a recipe script (`recipe_main`)."""
    p = _Parser(description=description)
    first = next(iter(presets))
    p.add_argument("--preset", choices=presets, default=first, help=f"the settings to start from (default: {first})")
    p.add_argument("--data-root", required=needs_data, metavar="PATH",
                   help="the dataset folder" + ("" if needs_data else " (default: the preset's)"))
    p.add_argument("--out", metavar="DIR", help="run folder (default: runs/NAME, NAME the run's name)")
    p.add_argument("--steps", type=_positive_int, help="generator steps to train in all (default: the preset's)")
    p.add_argument("--device", choices=DEVICES, help="default: the preset's, auto (cuda, mps, cpu)")
    p.add_argument("--resume", nargs="?", const="latest", metavar="CKPT",
                   help="continue from a checkpoint, with its settings (default: the latest in the run folder)")
    p.add_argument("--eval-every", type=_positive_int, metavar="N",
                   help="measure the samples every N steps (metrics.jsonl) and keep checkpoints/best.pt (default: off)")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors on stderr")
    return p


def recipe_main(presets: dict, description: str, *, n_samples: int, needs_data: bool,
                argv: list[str] | None = None) -> int:
    """A recipe script: pick a preset, train (or resume, as `multigan train --resume`), write samples."""
    p = recipe_parser(presets, description, needs_data=needs_data)
    args = p.parse_args(argv)
    setup_logging(args.quiet)
    try:
        from multigan.folders import default_run_folder
        from multigan.run import start_settings, train_and_sample

        cfg = presets[args.preset]()
        out = Path(args.out or default_run_folder(cfg.name))
        cfg, resume = start_settings(cfg, out, args.resume)  # as `train --resume`: the checkpoint's, then the flags
        cfg = _with_flags(cfg, {"data.root": args.data_root, "train.steps": args.steps, "train.device": args.device,
                                "eval.every": args.eval_every})
        last, paths = train_and_sample(cfg, out, n_samples=n_samples, resume=resume)
    except MultiganError as e:
        print(f"{p.prog}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f"{p.prog}: interrupted; continue with --resume", file=sys.stderr)
        return 128 + (getattr(e, "signum", None) or 2)
    if last is None:  # a rank other than 0 under torchrun: rank 0 wrote and reports
        return 0
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
    t.add_argument("--steps", type=_positive_int, help="generator steps to train in all (default: the recipe's)")
    t.add_argument("--batch-size", type=_positive_int, help="examples per step (default: the recipe's)")
    t.add_argument("--out", metavar="DIR", help="run folder (default: runs/NAME)")
    t.add_argument("--device", choices=DEVICES, help="default: the recipe's, auto (cuda, mps, cpu)")
    t.add_argument("--seed", type=_int, help="seed of the weights, noise and data order (default: the recipe's)")
    t.add_argument("--data-root", metavar="PATH",
                   help="dataset folder, stored absolute (default: the recipe's; for MNIST: a folder holding MNIST/raw)")
    t.add_argument("--precision", choices=("fp32", "bf16", "fp16"),
                   help="autocast precision (default: the settings', fp32): bf16 on CUDA or CPU, fp16 on CUDA")
    t.add_argument("--amp", action="store_true", default=None, help="the same as --precision fp16")
    t.add_argument("--compile", action="store_true", default=None, help="torch.compile G and D (slow to start, faster steps)")
    t.add_argument("--dist-backend", choices=("auto", "nccl", "gloo"), default="auto",
                   help="under torchrun: the process group's backend (default auto: nccl on CUDA, gloo on CPUs)")
    t.add_argument("--eval-every", type=_positive_int, metavar="N",
                   help="measure FID, KID, classifier score... every N steps and keep checkpoints/best.pt (default: off)")
    t.add_argument("--resume", nargs="?", const="latest", metavar="CKPT",
                   help="continue from a checkpoint, with its settings and then these flags "
                        "(default: the latest in the run folder)")
    t.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="change any setting, e.g. --set loss.kind=hinge --set optim.lr_d=1e-4 (repeatable; "
                        "`multigan settings` lists them)")
    t.add_argument("--dry-run", action="store_true", help="print the resolved settings and stop")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=cmd_train)

    g = sub.add_parser("generate", help="write samples (PNG, or WAV for audio) from a checkpoint alone",
                       description="Write N samples from a checkpoint's EMA generator, an overview grid, "
                                   "and generation.json (seed, checkpoint, step). Needs no dataset.")
    g.add_argument("checkpoint", metavar="CHECKPOINT", help="a .pt checkpoint, or a run folder (its latest checkpoint)")
    g.add_argument("--n", type=_positive_int, help="number of samples (default 16), or of walks with --interpolate "
                                                    "(default 4; 1 for a conditional checkpoint)")
    g.add_argument("--out", metavar="DIR", help="output folder (default: RUN/generated, RUN being the checkpoint's "
                                                "run folder; `multigan report RUN` shows samples written anywhere)")
    g.add_argument("--seed", type=_int, default=0, help="noise seed (default 0)")
    g.add_argument("--label", metavar="K|NAME",
                   help="class-conditional checkpoints: draw only class K, or the class of that name (a sub-folder, "
                        "a labels-table value; `multigan info` lists them) (default: every class in turn)")
    g.add_argument("--interpolate", type=_int, metavar="K",
                   help="write latent walks of K steps between random noise points (slerp) instead: a grid with a "
                        "row per walk, and for sounds one WAV; conditional checkpoints show each walk for every class")
    g.add_argument("--truncation", type=float, metavar="PSI",
                   help="truncation trick: noise values beyond +-PSI are redrawn (PSI > 0; smaller: more typical, "
                        "less varied samples)")
    g.add_argument("--scale", type=_positive_int, default=1, metavar="N",
                   help="enlarge grid pictures N times, nearest neighbour (default 1)")
    g.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto", help="default: auto (cuda, mps, cpu)")
    g.set_defaults(func=cmd_generate)

    v = sub.add_parser("vocode", help="send real clips through log-mel and Griffin-Lim, print the error",
                       description="Analyse real clips into log-mel and turn them back into WAVs with inverse mel "
                                   "and Griffin-Lim, printing spectral convergence and log-spectral distance: the "
                                   "ceiling any generated clip can reach with this vocoder.")
    v.add_argument("input", metavar="IN", help="an audio file or a folder of them")
    v.add_argument("--out", required=True, metavar="DIR", help="output folder for the WAVs")
    v.add_argument("--checkpoint", metavar="CKPT",
                   help="take the audio settings from an audio checkpoint (default: data.audio's defaults)")
    v.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="change an audio setting, e.g. --set gl_iter=64 --set n_mels=80 (repeatable)")
    v.add_argument("--limit", type=_positive_int, help="at most this many clips (default: all)")
    v.set_defaults(func=cmd_vocode)

    i = sub.add_parser("info", help="describe a checkpoint", description="Print what a checkpoint holds.")
    i.add_argument("checkpoint", metavar="CHECKPOINT", help="a .pt checkpoint, or a run folder (its latest checkpoint)")
    i.add_argument("--json", action="store_true", help="print JSON")
    i.set_defaults(func=cmd_info)

    s = sub.add_parser("settings", help="list every setting: its key, type, value and meaning",
                       description="List every setting that --set and settings files take: dotted key, type, "
                                   "value and one line of help. The values are the defaults, or TARGET's.")
    s.add_argument("target", nargs="?", metavar="TARGET",
                   help="a recipe name or a settings file whose values to show (default: the defaults)")
    s.set_defaults(func=cmd_settings)

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
    e.add_argument("--truncation", type=float, metavar="PSI",
                   help="measure samples drawn as `generate --truncation PSI` draws them (noise beyond +-PSI redrawn; "
                        "default: no truncation). The classifier and Inception figures both use it")
    e.add_argument("--device", choices=("auto", "cpu", "cuda", "mps"), default="auto", help="default: auto (cuda, mps, cpu)")
    e.add_argument("--inception", action="store_true",
                   help="also Inception FID, KID and IS of images, through torch-fidelity (pip install "
                        "'multigan[inception]'): comparable with published figures on the same reference set")
    e.add_argument("--inception-weights", metavar="FILE",
                   help="torch-fidelity's Inception weights file, weights-inception-2015-12-05-6726825d.pth (implies "
                        "--inception; default: $MULTIGAN_INCEPTION_WEIGHTS, else torch's hub cache or a download)")
    e.set_defaults(func=cmd_evaluate)

    r = sub.add_parser("report", help="write a static HTML page of a run: curves, previews, samples, audio players",
                       description="Write an HTML page of a run folder: loss, score and metric curves, health events, "
                                   "preview grids over time, samples with audio players. It opens from the file "
                                   "system: no server, no network.")
    r.add_argument("run_dir", metavar="RUN_DIR", help="a run folder written by `multigan train`")
    r.add_argument("--out", metavar="DIR", help="folder for index.html and its plots (default: RUN_DIR/report)")
    r.set_defaults(func=cmd_report)
    for command in sub.choices.values():
        # Also after the command (`multigan train -q ...`). SUPPRESS: when not given there, the
        # value from before the command stands instead of being reset to False.
        command.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                             help="only warnings and errors on stderr")
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
