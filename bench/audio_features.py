"""Clips per second for log-mel feature extraction on FSDD: cold versus cached.

Cold: `load_clip_folder` with an empty clip cache decodes every file,
resamples it to `--sample-rate` (FSDD is 8 kHz, so 16000 shows the cost of
resampling), trims it and writes the cache; then the log-mel of every clip
is computed in batches of fixed-length centre crops. Cached: the same with
the clips read back from the cache. Each is timed `--repeats` times (a new
empty cache for every cold run) and the best time of each step is printed,
which is the least disturbed by other jobs on the machine. Libraries are imported and
warmed up before timing, so "cold" measures per-clip work, not imports; the
files themselves sit in the OS page cache after the first run.

Prints figures only; it asserts nothing about time.

    PYTHONPATH=. python bench/audio_features.py --clips 500 --sample-rate 16000
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from multigan.audio.io import load_audio, trim_silence
from multigan.audio.spectral import log_mel
from multigan.data.audio_folder import ClipDataset, find_audio_files, load_clip_folder

FSDD = Path(__file__).resolve().parents[2] / "shared" / "data" / "fsdd" / "recordings"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=FSDD, help="folder of FSDD recordings (default: %(default)s)")
    p.add_argument("--clips", type=int, default=500, help="clips to load, spread over the folder (default: %(default)s)")
    p.add_argument("--sample-rate", type=int, default=8000, help="target rate in Hz (default: %(default)s)")
    p.add_argument("--trim-db", type=float, default=60.0, help="silence trim threshold in dB (default: %(default)s)")
    p.add_argument("--n-mels", type=int, default=64, help="mel bands (default: %(default)s)")
    p.add_argument("--frames", type=int, default=64, help="STFT frames per crop (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=64, help="clips per log-mel batch (default: %(default)s)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each kind; the best is shown (default: %(default)s)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    return p.parse_args()


def all_log_mels(dataset: ClipDataset, n_fft: int, hop_length: int, n_mels: int, batch_size: int) -> int:
    """Log-mel of every clip's centre crop, batch by batch; returns the number of frames computed."""
    center = dataset.with_crop("center")
    frames = 0
    for start in range(0, len(center), batch_size):
        wave = center.__getitems__(range(start, min(start + batch_size, len(center))))  # [B, length]
        mel = log_mel(wave, dataset.sample_rate, n_fft, hop_length, n_mels)  # [B, n_mels, frames]
        frames += mel.shape[0] * mel.shape[-1]
    return frames


def timed_run(root: Path, cache: Path, select, args, n_fft: int, hop_length: int, length: int) -> tuple[float, float, int]:
    """(load seconds, log-mel seconds, clips loaded)."""
    t0 = time.perf_counter()
    dataset = load_clip_folder(root, sample_rate=args.sample_rate, length=length, trim_db=args.trim_db, crop="center",
                               cache_dir=cache, progress=False, select=select)
    t1 = time.perf_counter()
    all_log_mels(dataset, n_fft, hop_length, args.n_mels, args.batch_size)
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, len(dataset)


def main() -> None:
    args = parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    # The analysis covers the same durations at any rate: 64 ms windows, 16 ms hop (512 and 128 at 8 kHz).
    n_fft, hop_length = round(0.064 * args.sample_rate), round(0.016 * args.sample_rate)
    length = (args.frames - 1) * hop_length

    files = find_audio_files(args.data)
    if not files:
        raise SystemExit(f"no audio files under {args.data}")
    step = max(1, len(files) // args.clips)
    chosen = set(files[::step][: args.clips])

    def select(path: Path) -> bool:
        return path in chosen

    # Warm up: librosa imports its effects and filters lazily, soxr and torch set up on first use.
    warm = load_audio(next(iter(chosen)), args.sample_rate)
    trim_silence(warm, args.trim_db)
    log_mel(torch.from_numpy(np.resize(warm, length))[None], args.sample_rate, n_fft, hop_length, args.n_mels)

    cold, cached = [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="multigan-bench-") as cache:
            cold.append(timed_run(args.data, Path(cache), select, args, n_fft, hop_length, length))
            cached.append(timed_run(args.data, Path(cache), select, args, n_fft, hop_length, length))

    clips = cold[0][2]
    print(f"{clips} FSDD clips from {args.data}, {args.sample_rate} Hz, trim {args.trim_db:g} dB; log-mel n_fft={n_fft} "
          f"hop={hop_length} n_mels={args.n_mels} on {length}-sample centre crops, batch {args.batch_size}; "
          f"torch threads {torch.get_num_threads()}; best of {args.repeats}")
    print()
    print(f"{'':8} {'load s':>8} {'log-mel s':>10} {'total s':>8} {'clips/s':>9}")
    load, total = {}, {}
    for name, runs in (("cold", cold), ("cached", cached)):
        # Best of each column: the log-mel work is the same in both rows and only adds noise from other jobs.
        load[name], mel_s = min(r[0] for r in runs), min(r[1] for r in runs)
        total[name] = load[name] + mel_s
        print(f"{name:8} {load[name]:8.3f} {mel_s:10.3f} {total[name]:8.3f} {clips / total[name]:9.0f}")
    print()
    print(f"speed-up of the cache: {load['cold'] / load['cached']:.1f}x on loading, "
          f"{total['cold'] / total['cached']:.1f}x with the log-mel")


if __name__ == "__main__":
    main()
