"""Train a DCGAN on log-mel spectrograms of a folder of voice clips, then write 16 WAVs.

    python recipes/voice/train.py --data-root ../shared/data/fsdd/recordings
    python recipes/voice/make_digits.py --out data/espeak-digits     # no clips? speak some
    python recipes/voice/train.py --data-root data/espeak-digits

Any clips soundfile or librosa reads (WAV, FLAC, OGG, MP3), in sub-folders or
not; they are resampled to the preset's rate (8 kHz, or 16 kHz with --preset voice-16k),
trimmed, and cropped or padded to 1 s. Listen to runs/voice-quick/samples/*.wav
and previews/step-*.wav.
"""
import sys

from multigan.cli import recipe_main
from multigan.presets import voice, voice_16k, voice_quick

if __name__ == "__main__":
    sys.exit(recipe_main({"voice-quick": voice_quick, "voice": voice, "voice-16k": voice_16k},
                         __doc__.split("\n\n")[0], n_samples=16, needs_data=True))
