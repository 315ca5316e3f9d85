"""Quality of the quick recipes under a fixed budget of steps, on the project's own feature networks.

Trains the mnist-quick and voice-quick presets with their own numbers of
steps (or --mnist-steps / --voice-steps), then prints one table per dataset:
FID, KID, classifier score, class coverage, precision, recall, diversity and
distance to the training set of generated samples, next to the real-data
reference (the held-out split against the training split) and, for sounds,
the Griffin-Lim ceiling (held-out clips analysed into the model's log-mel and
turned back into waveforms). Every set is measured against the training
split, with as many samples as the held-out split has (10,000 digits; FSDD
takes 0-4: 300 clips), so that the columns compare like with like.

    PYTHONPATH=. python bench/quality.py --mnist-root ../shared/data --voice-root ../shared/data/fsdd/recordings

Targets on 2 CPU cores: MNIST classifier score >= 9.0 within 5 minutes of
training; spoken digits >= 60% of the Griffin-Lim ceiling's score within 15
minutes. Prints figures only; asserts nothing.
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
from multigan.presets import mnist_quick, voice_quick
from machine_load import machine_busy_seconds  # bench/, beside this script


def trained(cfg, out: Path) -> tuple[Path, float, float | None]:
    """Train `cfg` into `out`; (last checkpoint, seconds, share of the CPU other processes used)."""
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
    last, seconds, others = trained(cfg, out / "mnist")
    G = restore(last)
    extractor = load_feature_net(feature_net_path("image"))
    cache = default_cache_dir()
    train = reference_set(extractor, load_mnist(args.mnist_root, train=True), cache_dir=cache)
    test = reference_set(extractor, load_mnist(args.mnist_root, train=False), cache_dir=cache)
    columns = {
        "generated": Evaluator(G.modality, extractor, train, n=len(test))(G.G),
        "real (test split)": measure(test, train),
    }
    return {"steps": cfg.train.steps, "seconds": seconds, "others_cpu": others, "columns": columns,
            "score": columns["generated"]["classifier_score"], "target": 9.0}


def voice(args, out: Path) -> dict:
    cfg = overridden(voice_quick().override("data.root", args.voice_root), args.voice_set)
    if args.voice_steps:
        cfg = cfg.override("train.steps", args.voice_steps)
    last, seconds, others = trained(cfg, out / "voice")
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
        "generated": Evaluator(G.modality, extractor, train, n=len(test))(G.G),
        "real after Griffin-Lim": measure(ceiling, train),
        "real (test split)": measure(test, train),
    }
    ceiling_score = columns["real after Griffin-Lim"]["classifier_score"]
    return {"steps": cfg.train.steps, "seconds": seconds, "others_cpu": others, "columns": columns,
            "score": columns["generated"]["classifier_score"], "target": 0.6 * ceiling_score}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mnist-root", default="../shared/data", help="folder holding MNIST/raw")
    p.add_argument("--voice-root", default="../shared/data/fsdd/recordings", help="FSDD recordings")
    p.add_argument("--only", choices=("mnist", "voice"), help="run one of the two")
    p.add_argument("--mnist-steps", type=int, help="default: the mnist-quick preset's")
    p.add_argument("--voice-steps", type=int, help="default: the voice-quick preset's")
    p.add_argument("--mnist-set", action="append", metavar="KEY=VALUE", help="change a setting of the MNIST run")
    p.add_argument("--voice-set", action="append", metavar="KEY=VALUE", help="change a setting of the voice run")
    p.add_argument("--out", help="folder for the runs (default: a temporary folder)")
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args()
    setup_logging()
    torch.set_num_threads(args.threads)
    budgets = {"mnist": 5 * 60, "voice": 15 * 60}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        results = {name: run(args, out) for name, run in (("mnist", mnist), ("voice", voice))
                   if args.only in (None, name)}
        for name, r in results.items():
            print(f"\n## {name}: {r['steps']} steps in {r['seconds']:.0f} s of training "
                  f"({args.threads} threads; other processes used {100 * (r['others_cpu'] or 0):.0f}% of the CPU)")
            print(format_table(r["columns"]))
            met = r["score"] >= r["target"] and r["seconds"] <= budgets[name]
            print(f"target: classifier score >= {r['target']:.2f} within {budgets[name] // 60} min: "
                  f"{r['score']:.2f} in {r['seconds']:.0f} s -> {'met' if met else 'NOT met'}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
