"""Speed and quality of multigan's batched Griffin-Lim against librosa.griffinlim.

One-second FSDD clips (8 kHz; shorter ones zero-padded, longer ones
cropped), n_fft 256, hop 64, the same number of iterations for every row.
Every method gets the whole batch [clips, F, frames] in one call (librosa
accepts batched arrays too), in float32, in one process; the rounds run the
methods one after another, so a change in machine load hits them all alike.
The like-for-like rows start both from zero phase (librosa's init=None): the
same algorithm from the same start, so their quality matches and only the
time differs. The other rows show the random phase (librosa's default) and
the phase-gradient initial phase. torchaudio.transforms.GriffinLim is a row
when torchaudio is importable (note: it pads by reflection, not zeros).

Prints figures only; it asserts nothing about time.

    PYTHONPATH=. python bench/griffin_lim.py --clips 64 --n-iter 32 --repeats 5
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import librosa
import numpy as np
import soundfile as sf
import torch

from multigan.audio.griffin_lim import griffin_lim
from multigan.audio.spectral import magnitude, spectral_convergence
from machine_load import machine_busy_seconds  # bench/, beside this script

SR, N_FFT, HOP = 8000, 256, 64
RECORDINGS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fsdd" / "recordings"


def load_clips(folder: Path, n: int, samples: int) -> torch.Tensor:
    """n recordings spread evenly over the sorted folder, cropped or zero-padded to `samples`: [n, samples] float32."""
    paths = sorted(folder.glob("*.wav"))
    if len(paths) < n:
        raise SystemExit(f"need {n} .wav files in {folder}, found {len(paths)}")
    waves = torch.zeros(n, samples)
    for i, path in enumerate(paths[::len(paths) // n][:n]):
        y, sr = sf.read(path, dtype="float32")
        if sr != SR:
            raise SystemExit(f"{path}: {sr} Hz, expected {SR}")
        y = y[:samples]
        waves[i, :len(y)] = torch.from_numpy(y)
    return waves


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description="Seconds and mean spectral convergence of multigan's batched fast Griffin-Lim against "
                    "librosa.griffinlim (and torchaudio's GriffinLim if installed) on one-second FSDD clips.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--clips", type=int, default=64, help="clips in the batch")
    p.add_argument("--n-iter", type=int, default=32, help="Griffin-Lim iterations for every row")
    p.add_argument("--repeats", type=int, default=5, help="timed rounds; times are medians over rounds")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu", help="device for the torch rows")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (None keeps torch's choice)")
    p.add_argument("--data", type=Path, default=RECORDINGS, help="folder of 8 kHz FSDD .wav files")
    args = p.parse_args(argv)
    for name in ("clips", "n_iter", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be >= 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda: CUDA is not available")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    waves = load_clips(args.data, args.clips, SR)  # [clips, T]
    T = waves.shape[-1]
    S = magnitude(waves, N_FFT, HOP)  # [clips, F, frames] float32, the target of every row
    S_np, S_dev = S.numpy(), S.to(device)
    n_iter, half = args.n_iter, max(1, args.n_iter // 2)

    def ours(init: str, iters: int) -> Callable[[], torch.Tensor]:
        def run() -> torch.Tensor:
            gen = torch.Generator(device=device).manual_seed(0) if init == "random" else None
            return griffin_lim(S_dev, N_FFT, HOP, iters, init=init, length=T, generator=gen)
        return run

    # (method, initial phase, iterations, run)
    rows: list[tuple[str, str, int, Callable[[], object]]] = [
        ("librosa.griffinlim", "zeros", n_iter,
         lambda: librosa.griffinlim(S_np, n_iter=n_iter, hop_length=HOP, n_fft=N_FFT, init=None, length=T)),
        ("multigan griffin_lim", "zeros", n_iter, ours("zeros", n_iter)),
        ("librosa.griffinlim", "random", n_iter,
         lambda: librosa.griffinlim(S_np, n_iter=n_iter, hop_length=HOP, n_fft=N_FFT, random_state=0, length=T)),
        ("multigan griffin_lim", "random", n_iter, ours("random", n_iter)),
        ("multigan griffin_lim", "pghi", n_iter, ours("pghi", n_iter)),
        ("multigan griffin_lim", "pghi", half, ours("pghi", half)),
    ]
    try:
        import torchaudio
        ta = torchaudio.transforms.GriffinLim(n_fft=N_FFT, n_iter=n_iter, hop_length=HOP, power=1.0, momentum=0.99,
                                              length=T, rand_init=False).to(device)
        rows.append(("torchaudio GriffinLim", "zeros", n_iter, lambda: ta(S_dev)))
        torchaudio_note = f"torchaudio {torchaudio.__version__}: rand_init=False (zero phase), its reflect padding"
    except ImportError:
        torchaudio_note = "torchaudio is not installed: its row is skipped"

    def timed(run: Callable[[], object]) -> tuple[float, float | None, object]:
        """Seconds, the share of the machine's CPU that other processes used meanwhile, and run's result."""
        if device.type == "cuda":
            torch.cuda.synchronize()
        busy, own, start = machine_busy_seconds(), time.process_time(), time.perf_counter()
        out = run()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        busy_after, own_after = machine_busy_seconds(), time.process_time()
        others = None if busy is None or busy_after is None else \
            max(0.0, (busy_after - busy) - (own_after - own)) / (seconds * (os.cpu_count() or 1))
        return seconds, others, out

    # Warm-up: librosa's numba kernels compile on first use, torch sets up its FFT plans.
    librosa.griffinlim(S_np[:2], n_iter=2, hop_length=HOP, n_fft=N_FFT, init=None, length=T)
    for _, _, _, run in rows:
        run()

    print(f"{args.clips} clips x {T / SR:.1f} s at {SR} Hz from {args.data}; n_fft {N_FFT}, hop {HOP}, float32, "
          f"batch [{', '.join(map(str, S.shape))}]")
    print(f"torch {torch.__version__} on {device}, {torch.get_num_threads()} torch threads; librosa {librosa.__version__} "
          f"(numpy FFT, one thread)")
    print(torchaudio_note)
    times: list[list[float]] = [[] for _ in rows]
    loads: list[list[float]] = [[] for _ in rows]
    outputs: list[object] = [None] * len(rows)
    for _ in range(args.repeats):
        for i, (_, _, _, run) in enumerate(rows):
            seconds, others, outputs[i] = timed(run)
            times[i].append(seconds)
            if others is not None:
                loads[i].append(others)

    target = S.double()
    base = statistics.median(times[0])
    print()
    print(f"{'method':<22}  {'init':<6}  {'n_iter':>6}  {'seconds':>8}  {'mean SC':>8}  {'speed vs librosa zeros':>22}  "
          f"{'other load':>10}")
    busiest = 0.0
    for (name, init, iters, _), t, load, wave in zip(rows, times, loads, outputs):
        wave = torch.as_tensor(wave).to("cpu", torch.float64)
        sc = spectral_convergence(target, magnitude(wave, N_FFT, HOP)).mean().item()
        seconds = statistics.median(t)
        others = f"{100 * statistics.median(load):.0f}%" if load else "n/a"
        busiest = max([busiest] + load)
        print(f"{name:<22}  {init:<6}  {iters:>6}  {seconds:>8.3f}  {sc:>8.4f}  {base / seconds:>21.1f}x  {others:>10}")
    print()
    print(f"seconds: median of {args.repeats} rounds for the whole batch; mean SC: ||S - |STFT(x)| || / ||S|| per clip, "
          f"mean over clips (lower is better); other load: median share of the machine's CPU that other processes used")
    print(f"like for like (zero phase, {n_iter} iterations): multigan is {base / statistics.median(times[1]):.1f}x librosa's "
          f"speed (target >= 8x)")
    if busiest > 0.1 and torch.get_num_threads() > 1 and device.type == "cpu":
        print(f"note: other processes took up to {100 * busiest:.0f}% of the CPU; torch's {torch.get_num_threads()} threads "
              f"then wait for each other and its rows slow down many times over: re-run when the machine is quiet, "
              f"or with --threads 1")


if __name__ == "__main__":
    main()
