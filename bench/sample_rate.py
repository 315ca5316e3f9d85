"""What 8 kHz costs a voice run, and what 16 kHz costs instead.

The 8 kHz presets keep only the band below 4 kHz. This prints, for each
spoken digit, the share of its energy above 4 kHz (what resampling to
8 kHz removes) in clips that espeak-ng speaks at its own rate (22,050 Hz)
and that are resampled to 16 kHz as voice-16k loads them, averaged over
several voices, and the share of its sounding frames whose energy lies
mostly above 4 kHz (its /s/, /z/, /th/: the time that 8 kHz turns to near
silence). Then the price of 16 kHz: the floating-point operations of one
training step's forward passes (G on a batch, D on a real and a generated
batch, counted by torch's FlopCounterMode, a multiply-add as two, so
independent of the machine's load) and the parameters of voice-quick's nets (64 mels x 64 frames) against
voice-16k's (128 x 128). Prints figures only; it asserts nothing.

    PYTHONPATH=. python bench/sample_rate.py

espeak-ng is a formant synthesiser: its fricatives are noise shaped by
rule, so the shares say which words lean on the high band, not how much a
given human voice puts there. FSDD is recorded at 8 kHz, so on FSDD the
16 kHz preset has nothing above 4 kHz to learn.
"""
from __future__ import annotations

import argparse
import dataclasses
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from multigan.audio.io import load_audio, trim_silence
from multigan.audio.spectral import magnitude
from multigan.presets import PRESETS
from multigan.registry import build_nets

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
VOICES = ["en-us", "en-gb", "en-us+m3", "en-gb+f2", "en-us+f4"]
RATE = 16000
CUT_HZ = 4000


def high_band_share(wave: np.ndarray, rate: int, cut_hz: float) -> float:
    """The fraction of the clip's energy at frequencies above `cut_hz`."""
    power = np.abs(np.fft.rfft(wave.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(len(wave), d=1.0 / rate)
    return float(power[freqs > cut_hz].sum() / max(power.sum(), 1e-20))


def high_band_frames(wave: np.ndarray, rate: int, cut_hz: float, n_fft: int = 512, hop: int = 128,
                     floor_db: float = 40.0) -> float:
    """The fraction of the clip's sounding frames (within `floor_db` of its loudest) whose energy lies
    mostly above `cut_hz`: the time that 8 kHz turns to near silence (an /s/, /z/, /th/)."""
    frames = magnitude(torch.from_numpy(wave).double(), n_fft, hop, power=2.0).numpy()  # [freq, frame]
    freqs = np.fft.rfftfreq(n_fft, d=1.0 / rate)
    total = frames.sum(axis=0)
    sounding = total > total.max() * 10 ** (-floor_db / 10)
    high = frames[freqs > cut_hz].sum(axis=0) / np.maximum(total, 1e-20)
    return float((high[sounding] > 0.5).mean())


def spoken_shares(espeak: str, voices: list[str]) -> dict[str, list[tuple[float, float]]]:
    """Per word and voice, (high-band share of energy, of sounding frames) of the clip at 16 kHz,
    trimmed as the loader trims."""
    shares: dict[str, list[tuple[float, float]]] = {w: [] for w in WORDS}
    top_db = PRESETS["voice-16k"]().data.audio.trim_db
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "clip.wav"
        for voice in voices:
            for word in WORDS:
                subprocess.run([espeak, "-v", voice, "-w", str(path), word], check=True, capture_output=True)
                wave = trim_silence(load_audio(path, RATE), top_db)
                shares[word].append((high_band_share(wave, RATE, CUT_HZ), high_band_frames(wave, RATE, CUT_HZ)))
    return shares


def step_cost(preset: str, batch: int = 64, n_classes: int = 10) -> tuple[float, int, int, tuple[int, ...]]:
    """(forward GFLOPs of a training step, G parameters, D parameters, sample shape) of a preset's nets."""
    cfg = PRESETS[preset]()
    audio = cfg.data.audio
    shape = (1, audio.n_mels, audio.frames)
    G, D = build_nets(dataclasses.replace(cfg.model, n_classes=n_classes), shape)
    z = torch.randn(batch, G.z_dim)
    y = torch.randint(n_classes, (batch,))
    real = torch.randn(batch, *shape)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        fake = G(z, y)
        D(real, y)
        D(fake, y)
    count = lambda net: sum(p.numel() for p in net.parameters())  # noqa: E731
    return counter.get_total_flops() / 1e9, count(G), count(D), shape


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--voices", nargs="+", default=VOICES, help="espeak-ng voices (default: %(default)s)")
    args = p.parse_args()
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        print("error: espeak-ng not found; install it (Debian/Ubuntu: apt-get install espeak-ng)", file=sys.stderr)
        return 2

    shares = spoken_shares(espeak, args.voices)
    print(f"above {CUT_HZ} Hz (lost at 8 kHz): espeak-ng at {RATE} Hz, {len(args.voices)} voices, mean (min-max)")
    print("| word | share of energy | sounding frames mostly above |\n|---|---|---|")
    for word in [*WORDS, "all"]:
        s = np.array([v for w in (WORDS if word == "all" else [word]) for v in shares[w]]) * 100  # [clips, 2]
        cells = [f"{s[:, i].mean():.1f}% ({s[:, i].min():.1f}-{s[:, i].max():.1f})" for i in (0, 1)]
        print(f"| {word} | {' | '.join(cells)} |")
    print()

    rows = {name: step_cost(name) for name in ("voice-quick", "voice-16k")}
    base = rows["voice-quick"][0]
    print("| preset | spectrogram | forward GFLOPs per step (batch 64) | ratio | G params | D params |")
    print("|---|---|---|---|---|---|")
    for name, (gflops, n_g, n_d, shape) in rows.items():
        print(f"| {name} | {shape[1]}x{shape[2]} | {gflops:.2f} | {gflops / base:.2f}x "
              f"| {n_g / 1e6:.2f} M | {n_d / 1e6:.2f} M |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
