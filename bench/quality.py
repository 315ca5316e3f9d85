"""Quality of the quick recipes under a fixed budget of steps, on the project's own feature networks.

Trains the mnist-quick, voice-quick and images-64 (on emoji) presets with
their own numbers of steps (or --mnist-steps / --voice-steps / --emoji-steps),
or measures a checkpoint already trained (--mnist-checkpoint ...), then
prints one table per dataset:
FID, KID, classifier score, class coverage, precision, recall, diversity and
distance to the training set of generated samples, next to the real-data
reference (the held-out split against the training split) and, for sounds,
the Griffin-Lim ceiling (held-out clips analysed into the model's log-mel and
turned back into waveforms), and for emoji the generated samples drawn in the
data's category proportions as well as every category in turn. Every set is
measured against the training split, with as many samples as the held-out
split has (10,000 digits; FSDD takes 0-4: 300 clips; the emoji classifier's
held-out 20% of base emoji, with their skin-tone variants), so that the
columns compare like with like.

    PYTHONPATH=. python bench/quality.py --mnist-root ../shared/data --voice-root ../shared/data/fsdd/recordings \
        --emoji-root ../shared/data/emoji

Targets on 2 CPU cores: MNIST classifier score >= 9.6 with precision and
recall >= 0.88 within 5 minutes of training; spoken digits: classifier score
>= 7.0, FID <= 6 and recall >= 0.8 within 15 minutes; emoji: figures within 30
minutes, next to the held-out split's. Prints figures only; asserts nothing.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from multigan.registry import feature_net_path
from multigan.restore import restore
from multigan.run import train_run
from multigan.console import setup_logging
from multigan.data.audio_folder import fsdd_split, load_clip_folder
from multigan.data.cache import default_cache_dir
from multigan.data.mnist import load_mnist
from multigan.metrics.evaluate import Evaluator, FeatureSet, format_table, measure, reference_set
from multigan.metrics.features import load_feature_net
from multigan.data.image_folder import labels_from_table, load_image_folder
from multigan.data.tensors import ImageTensorDataset
from multigan.metrics.features import split_by_group
from multigan.presets import images64, mnist_quick, voice_quick
from machine_load import machine_busy_seconds  # bench/, beside this script


def trained(cfg, out: Path, checkpoint: str | None = None) -> tuple[Path, float, float | None]:
    """Train `cfg` into `out`; (last checkpoint, seconds, share of the CPU other processes used).

    With `checkpoint`, nothing is trained: the seconds are those its run's log
    spans (first to last logged step, so slightly under the whole run).
    """
    if checkpoint:
        path = Path(checkpoint)
        times = [json.loads(line)["time"] for line in (path.parent.parent / "log.jsonl").read_text().splitlines()
                 if line.strip() and "time" in json.loads(line)]
        return path, (max(times) - min(times)) if times else float("nan"), None
    busy0, t0 = machine_busy_seconds(), time.perf_counter()
    cpu0 = time.process_time()
    last = train_run(cfg, out, progress=True)
    seconds = time.perf_counter() - t0
    others = None
    if busy0 is not None:
        import os

        busy = machine_busy_seconds() - busy0 - (time.process_time() - cpu0)
        others = max(busy, 0.0) / (seconds * os.cpu_count())
    return last, seconds, others


def overridden(cfg, items: list[str] | None):
    """The preset with --*-set KEY=VALUE items applied (for ablations)."""
    for item in items or []:
        key, _, value = item.partition("=")
        cfg = cfg.override(key.strip(), value.strip())
    return cfg


def mnist(args, out: Path) -> dict:
    cfg = overridden(mnist_quick().override("data.root", args.mnist_root), args.mnist_set)
    if args.mnist_steps:
        cfg = cfg.override("train.steps", args.mnist_steps)
    last, seconds, others = trained(cfg, out / "mnist", args.mnist_checkpoint)
    G = restore(last)
    extractor = load_feature_net(feature_net_path("image"))
    cache = default_cache_dir()
    train = reference_set(extractor, load_mnist(args.mnist_root, train=True), cache_dir=cache)
    test = reference_set(extractor, load_mnist(args.mnist_root, train=False), cache_dir=cache)
    columns = {
        "generated": Evaluator(G.modality, extractor, train, n=len(test), truncation=args.truncation)(G.G, G.label_mix),
        "real (test split)": measure(test, train),
    }
    return {"steps": G.step, "seconds": seconds, "others_cpu": others, "columns": columns,
            "targets": {"classifier_score": 9.6, "precision": 0.88, "recall": 0.88}}


def voice(args, out: Path) -> dict:
    cfg = overridden(voice_quick().override("data.root", args.voice_root), args.voice_set)
    if args.voice_steps:
        cfg = cfg.override("train.steps", args.voice_steps)
    last, seconds, others = trained(cfg, out / "voice", args.voice_checkpoint)
    G = restore(last)
    extractor = load_feature_net(feature_net_path("mel"))
    audio = G.modality.audio
    load = dict(sample_rate=audio.sample_rate, length=audio.length, trim_db=audio.trim_db, crop="center", progress=False)
    cache = default_cache_dir()
    train = reference_set(extractor, load_clip_folder(args.voice_root, select=fsdd_split("train"), **load), cache_dir=cache)
    test_clips = load_clip_folder(args.voice_root, select=fsdd_split("test"), **load)
    test = reference_set(extractor, test_clips, cache_dir=cache)
    # The vocoder's ceiling: held-out clips -> the model's log-mel -> inverse mel and Griffin-Lim -> features.
    waves = test_clips.__getitems__(range(len(test_clips)))  # [N, length]
    ceiling = FeatureSet.join([extractor.embed_artifacts(G.modality.decode(G.modality.encode(waves[i:i + 100])))
                               for i in range(0, len(waves), 100)])
    columns = {
        "generated": Evaluator(G.modality, extractor, train, n=len(test), truncation=args.truncation)(G.G, G.label_mix),
        "real after Griffin-Lim": measure(ceiling, train),
        "real (test split)": measure(test, train),
    }
    return {"steps": G.step, "seconds": seconds, "others_cpu": others, "columns": columns,
            "targets": {"classifier_score": 7.0, "fid": 6.0, "recall": 0.8}}


def emoji(args, out: Path) -> dict:
    root = Path(args.emoji_root)
    cfg = images64().override("name", "images-64-emoji").override("data.root", str(root / "png"))
    cfg = overridden(cfg.override("data.labels", str(root / "emoji.json")), args.emoji_set)
    if args.emoji_steps:
        cfg = cfg.override("train.steps", args.emoji_steps)
    last, seconds, others = trained(cfg, out / "emoji", args.emoji_checkpoint)
    G = restore(last)
    extractor = load_feature_net(feature_net_path("image", shape=(3, 64, 64)))
    data = load_image_folder(root / "png", channels=3, height=64, width=64, background=(255, 255, 255), progress=False)
    # The emoji classifier's own split: 20% of base emoji held out, each with its skin-tone variants.
    base = labels_from_table(root / "emoji.json", label_field="name")
    held = split_by_group([base[p.name] for p in data.paths], 0.2, 0)
    cache = default_cache_dir()
    train = reference_set(extractor, ImageTensorDataset(data.images[~held]), cache_dir=cache)
    test = reference_set(extractor, ImageTensorDataset(data.images[held]), cache_dir=cache)
    evaluator = Evaluator(G.modality, extractor, train, n=len(test), truncation=args.truncation)
    columns = {
        # G draws its classes in the proportions it was trained with (people & body, with their skin-tone
        # variants, are 59% of emoji); every category in turn is how earlier runs were measured.
        "generated": evaluator(G.G, G.label_mix),
        "generated, every class in turn": evaluator(G.G),
        "real (held-out split)": measure(test, train),
    }
    return {"steps": G.step, "seconds": seconds, "others_cpu": others, "columns": columns, "targets": {}}


# A figure meets its target when it is at least the target, or at most it for these.
_LOWER_IS_BETTER = {"fid", "kid"}


def verdict(r: dict, budget_s: int) -> str:
    """One line: each target with the figure reached, and whether all were met within the budget."""
    got = r["columns"]["generated"]
    parts, met = [], r["seconds"] <= budget_s
    for key, target in r["targets"].items():
        ok = got[key] <= target if key in _LOWER_IS_BETTER else got[key] >= target
        met &= ok
        parts.append(f"{key} {got[key]:.3g} ({'<=' if key in _LOWER_IS_BETTER else '>='} {target}: {'yes' if ok else 'no'})")
    if not parts:
        return f"{r['seconds']:.0f} s of training (budget {budget_s // 60} min): figures only"
    return (f"targets within {budget_s // 60} min: " + ", ".join(parts)
            + f"; {r['seconds']:.0f} s -> {'met' if met else 'NOT met'}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mnist-root", default="../shared/data", help="folder holding MNIST/raw")
    p.add_argument("--voice-root", default="../shared/data/fsdd/recordings", help="FSDD recordings")
    p.add_argument("--emoji-root", default="../shared/data/emoji", help="the emoji folder: emoji.json and png/")
    p.add_argument("--only", choices=("mnist", "voice", "emoji"), action="append", help="run only these (repeatable)")
    for name, preset in (("mnist", "mnist-quick"), ("voice", "voice-quick"), ("emoji", "images-64")):
        p.add_argument(f"--{name}-steps", type=int, help=f"default: the {preset} preset's")
        p.add_argument(f"--{name}-set", action="append", metavar="KEY=VALUE", help=f"change a setting of the {name} run")
        p.add_argument(f"--{name}-checkpoint", metavar="CKPT", help=f"measure this checkpoint instead of training {preset}")
    p.add_argument("--truncation", type=float, metavar="PSI",
                   help="measure samples drawn with the truncation trick (noise beyond +-PSI redrawn), as "
                        "`multigan generate --truncation PSI` writes them (default: none)")
    p.add_argument("--out", help="folder for the runs (default: a temporary folder)")
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args()
    setup_logging()
    torch.set_num_threads(args.threads)
    budgets = {"mnist": 5 * 60, "voice": 15 * 60, "emoji": 30 * 60}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        results = {name: run(args, out) for name, run in (("mnist", mnist), ("voice", voice), ("emoji", emoji))
                   if not args.only or name in args.only}
        for name, r in results.items():
            others = "" if r["others_cpu"] is None else f"; other processes used {100 * r['others_cpu']:.0f}% of the CPU"
            print(f"\n## {name}: {r['steps']} steps in {r['seconds']:.0f} s of training ({args.threads} threads{others})")
            print(format_table(r["columns"]))
            print(verdict(r, budgets[name]))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
