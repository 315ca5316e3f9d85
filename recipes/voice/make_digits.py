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
from pathlib import Path

from tqdm import tqdm

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
    for digit, (v, voice), (take, (pitch, speed)) in tqdm(jobs, desc="speaking", unit="clip"):
        path = out / f"{digit}_{voice.replace('+', '-')}_{take}.wav"
        if path.is_file():
            continue
        tmp = path.with_suffix(".tmp.wav")
        cmd = [espeak, "-v", voice, "-p", str(pitch), "-s", str(speed), "-w", str(tmp), WORDS[digit]]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if result.returncode != 0:
            print(f"error: espeak-ng failed for voice {voice}: {result.stderr.strip()}", file=sys.stderr)
            tmp.unlink(missing_ok=True)
            return 1
        tmp.replace(path)
    print(f"{len(jobs)} clips in {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
