"""Speak the digits zero to nine with espeak-ng into a folder of WAV clips.

    python recipes/voice/make_digits.py --out data/espeak-digits        # 10 digits x 36 voicings = 360 clips

Each clip is one digit in one voicing (voice, pitch, speed), named like the
Free Spoken Digit Dataset: `{digit}_{voice}_{take}.wav`, so labels come from
the file name. Needs the `espeak-ng` program (Debian/Ubuntu: apt-get install espeak-ng).
"""
import argparse
import itertools
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tqdm import tqdm

from multigan.atomic import atomic_write

WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
VOICES = ["en-us", "en-gb", "en-us+m3", "en-gb+f2", "en-us+f4", "en-gb-scotland"]
PITCHES = [35, 50, 70]
SPEEDS = [140, 175]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder for the WAV clips")
    p.add_argument("--voices", nargs="+", default=VOICES, help=f"espeak-ng voices (default: {' '.join(VOICES)})")
    args = p.parse_args()
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        print("error: espeak-ng not found; install it (Debian/Ubuntu: apt-get install espeak-ng)", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = list(itertools.product(range(10), enumerate(args.voices), enumerate(itertools.product(PITCHES, SPEEDS))))
    # espeak-ng writes its WAV header last, seeking back, so it needs a real file: it speaks into a
    # scratch folder, and each clip goes into OUT whole (a killed run leaves no half clip to train on).
    with tempfile.TemporaryDirectory() as scratch:
        spoken = Path(scratch) / "clip.wav"
        for digit, (v, voice), (take, (pitch, speed)) in tqdm(jobs, desc="speaking", unit="clip"):
            path = out / f"{digit}_{voice.replace('+', '-')}_{take}.wav"
            if path.is_file():
                continue
            cmd = [espeak, "-v", voice, "-p", str(pitch), "-s", str(speed), "-w", str(spoken), WORDS[digit]]
            result = subprocess.run(cmd, capture_output=True, text=True)
            if result.returncode != 0:
                print(f"error: espeak-ng failed for voice {voice}: {result.stderr.strip()}", file=sys.stderr)
                return 1
            atomic_write(path, lambda f: f.write(spoken.read_bytes()))
    print(f"{len(jobs)} clips in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
