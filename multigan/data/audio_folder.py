"""A folder of audio clips, decoded once, cached on disk, held in memory."""
from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import re
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.contrib.logging import logging_redirect_tqdm

from multigan.audio import io as audio_io
from multigan.config import AudioConfig
from multigan.console import track
from multigan.data.cache import default_cache_dir, write_cache_file
from multigan.data.files import class_indices, find_files, subfolder_names
from multigan.errors import ConfigError, DataError

log = logging.getLogger(__name__)

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3")

# Free Spoken Digit Dataset file names, `{digit}_{speaker}_{take}`, matched against the stem.
FSDD_PATTERN = re.compile(r"(?P<label>\d+)_(?P<speaker>.+)_(?P<take>\d+)")
FSDD_TEST_TAKES = 5  # the dataset's convention: takes 0-4 are the test set

# Bump when what a cache entry holds changes (decoding, resampling, trimming).
CACHE_VERSION = 2  # 2: float files past [-1, 1] are scaled to peak 1
_BOUNDS = AudioConfig()  # where the defaults of the bounds on clips come from


def find_audio_files(root: str | os.PathLike) -> list[Path]:
    """Audio files under `root`, recursively, in a deterministic (sorted) order.

    Matches `AUDIO_EXTENSIONS` in any letter case; hidden files and folders
    (name starting with ".") are left out.
    """
    return find_files(root, AUDIO_EXTENSIONS)


def fsdd_split(split: str) -> Callable[[Path], bool]:
    """A `select` for `load_clip_folder` giving FSDD's own split by take number.

    "test" keeps takes 0-4, "train" every later take (5-49 in FSDD). Files
    whose name is not `{digit}_{speaker}_{take}` are in neither split.
    """
    if split not in ("train", "test"):
        raise ConfigError(f"FSDD split must be 'train' or 'test', got {split!r}")
    want_test = split == "test"

    def select(path: Path) -> bool:
        match = FSDD_PATTERN.fullmatch(Path(path).stem)
        return match is not None and (int(match["take"]) < FSDD_TEST_TAKES) == want_test

    return select


class ClipDataset(torch.utils.data.Dataset):
    """Variable-length mono clips in memory, served at one fixed length.

    Each item is float32 [length]: the clip cropped or zero-padded by
    `multigan.audio.io.fix_length` with mode `crop` ("random" for training,
    "center" or "start" for evaluation). Random crops draw from the global
    torch RNG. `__getitems__` builds a whole batch [B, length] at once and
    gives the same values as stacking `__getitem__` under the same RNG state.
    """

    def __init__(
        self,
        waveforms: Sequence[torch.Tensor],
        *,
        sample_rate: int,
        length: int,
        crop: str = "random",
        paths: Sequence[Path] | None = None,
        labels: torch.Tensor | None = None,
        class_names: Sequence[str] | None = None,
        speakers: Sequence[str] | None = None,
    ):
        _check_crop(length, crop)
        if len(waveforms) == 0:
            raise DataError("the dataset holds no clip")
        for wave in waveforms:
            if wave.dtype != torch.float32 or wave.ndim != 1 or wave.numel() == 0:
                raise DataError(f"expected non-empty float32 waveforms [T], got {wave.dtype} {tuple(wave.shape)}")
        for name, values in (("paths", paths), ("labels", labels), ("speakers", speakers)):
            if values is not None and len(values) != len(waveforms):
                raise DataError(f"{len(waveforms)} waveforms but {len(values)} {name}")
        self.waveforms = list(waveforms)  # full trimmed clips, each [T_i] float32
        self.sample_rate = int(sample_rate)
        self.length = int(length)
        self.crop = crop
        self.paths = list(paths) if paths is not None else None
        self.labels = labels
        self.class_names = list(class_names) if class_names is not None else None
        self.speakers = list(speakers) if speakers is not None else None

    @property
    def shape(self) -> tuple[int]:
        """(length,) of one item."""
        return (self.length,)

    def __len__(self) -> int:
        return len(self.waveforms)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> torch.Tensor:
        out = torch.zeros((len(indices), self.length), dtype=torch.float32)  # [B, length]
        for row, index in enumerate(indices):
            wave = self.waveforms[int(index)]
            src, dst, n = audio_io.crop_window(wave.shape[0], self.length, self.crop)
            out[row, dst:dst + n] = wave[src:src + n]
        return out

    def with_crop(self, mode: str) -> ClipDataset:
        """The same clips (shared, not copied) served with another crop mode."""
        _check_crop(self.length, mode)
        view = copy.copy(self)
        view.crop = mode
        return view


def load_clip_folder(
    root: str | os.PathLike,
    *,
    sample_rate: int,
    length: int,
    trim_db: float | None = 60.0,
    crop: str = "random",
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    select: Callable[[Path], bool] | None = None,
    min_rms: float = 1e-4,
    label_pattern: str | re.Pattern | None = FSDD_PATTERN,
    min_source_rate: int = _BOUNDS.min_source_rate,
    max_source_rate: int = _BOUNDS.max_source_rate,
    max_seconds: float = _BOUNDS.max_seconds,
    min_length: int = _BOUNDS.min_length,
) -> ClipDataset:
    """Every audio clip under `root` (or those `select(path)` keeps), in memory.

    Each clip is decoded to mono, resampled to `sample_rate`, and trimmed of
    leading and trailing audio quieter than `trim_db` below its peak
    (None: no trim). Clips that cannot be used are skipped with a warning
    each, and one warning listing them all: unreadable, empty, non-finite,
    a header rate outside `min_source_rate`..`max_source_rate` Hz or longer
    than `max_seconds` (both refused before decoding), RMS below `min_rms`,
    or fewer than `min_length` samples left after trimming.

    The processed clips are cached as .npy files in `<cache_dir>/clips/`
    (`cache_dir` defaults to `default_cache_dir()`), keyed by the file's
    absolute path, size and modification time and by the settings above, so
    a later run reads them back without decoding.

    Labels: if every clip sits in a sub-folder, `labels` holds the index of
    its top-level sub-folder in the sorted `class_names`. Otherwise, if every
    file name (without extension) fully matches `label_pattern` (by default
    FSDD's `{digit}_{speaker}_{take}`), they come from its `label` group, with
    `class_names` the distinct values in sorted order (numeric order when
    all are digits). `speakers` holds the pattern's `speaker` group of each
    clip when every name matches. What cannot be found is None.
    """
    if not isinstance(sample_rate, int) or isinstance(sample_rate, bool) or sample_rate < 1:
        raise ConfigError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    _check_crop(length, crop)
    if trim_db is not None and not trim_db > 0:
        raise ConfigError(f"trim_db must be positive or None, got {trim_db!r}")
    if not min_rms >= 0:
        raise ConfigError(f"min_rms must be >= 0, got {min_rms!r}")
    if not 1 <= min_source_rate <= max_source_rate or not max_seconds > 0 or not min_length >= 0:
        raise ConfigError(f"need 1 <= min_source_rate <= max_source_rate, max_seconds > 0 and min_length >= 0; got "
                          f"{min_source_rate!r}, {max_source_rate!r}, {max_seconds!r} and {min_length!r}")
    pattern = re.compile(label_pattern) if isinstance(label_pattern, str) else label_pattern
    if pattern is not None and not {"label", "speaker"} & set(pattern.groupindex):
        raise ConfigError(f"label_pattern needs a named group 'label' or 'speaker': {pattern.pattern!r}")

    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"audio folder not found: {root}")
    files = find_audio_files(root)
    if not files:
        raise DataError(f"no audio files ({', '.join(AUDIO_EXTENSIONS)}) under {root}")
    if select is not None:
        found = len(files)
        files = [p for p in files if select(p)]
        if not files:
            raise DataError(f"none of the {found} audio files under {root} was selected")

    cache = _ClipCache(Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir())
    bounds = {"min_source_rate": min_source_rate, "max_source_rate": max_source_rate, "max_seconds": max_seconds}
    settings = {"sample_rate": sample_rate, "trim_db": trim_db, "min_rms": min_rms, "min_length": min_length, **bounds}
    waves: list[torch.Tensor] = []
    kept: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    hits = 0
    with logging_redirect_tqdm():
        for path in track(files, f"loading {root.name or root}", unit="clip", enabled=progress):
            try:
                stat = path.stat()
            except OSError as e:
                reason = f"cannot read: {e.strerror or type(e).__name__}"
            else:
                key = _cache_key(path, stat, settings)
                wave = cache.get(key)
                if wave is not None:
                    hits += 1
                    reason = None
                else:
                    wave, reason = _process(path, sample_rate, trim_db, min_rms, min_length, bounds)
                    if wave is not None:
                        cache.put(key, wave)
            if reason is not None:
                log.warning("skipping %s: %s", path, reason)
                skipped.append((path, reason))
                continue
            waves.append(torch.from_numpy(wave))
            kept.append(path)

    if not kept:
        raise DataError(f"none of the {len(files)} audio files under {root} could be used (see the warnings above)")
    if skipped:
        log.warning(
            "skipped %d of %d audio files under %s: %s",
            len(skipped),
            len(files),
            root,
            "; ".join(f"{p.relative_to(root).as_posix()} ({reason})" for p, reason in skipped),
        )
    labels, class_names, speakers = _labels(root, kept, pattern)
    dataset = ClipDataset(waves, sample_rate=sample_rate, length=length, crop=crop, paths=kept, labels=labels,
                          class_names=class_names, speakers=speakers)
    seconds = statistics.median(w.numel() for w in waves) / sample_rate
    log.info(
        "audio folder: %s clips from %s at %d Hz (%s from the cache), median %.2f s, %.0f%% longer than %d samples%s%s",
        f"{len(kept):,}",
        root,
        sample_rate,
        f"{hits:,}",
        seconds,
        100.0 * sum(w.numel() > length for w in waves) / len(waves),
        length,
        f", {len(class_names)} classes" if class_names else "",
        f", {len(set(speakers))} speakers" if speakers else "",
    )
    return dataset


def _check_crop(length: int, mode: str) -> None:
    if not isinstance(length, int) or isinstance(length, bool) or length < 1:
        raise ConfigError(f"length must be a positive integer, got {length!r}")
    if mode not in audio_io.CROP_MODES:
        raise ConfigError(f"crop mode must be one of {', '.join(audio_io.CROP_MODES)}; got {mode!r}")


def _process(path: Path, sample_rate: int, trim_db: float | None, min_rms: float, min_length: int,
             bounds: dict) -> tuple[np.ndarray | None, str | None]:
    """Decode, check and trim one file: (wave [T] float32, None), or (None, why it is unusable)."""
    try:
        wave = audio_io.load_audio(path, sample_rate, **bounds)
    except DataError as e:
        # load_audio's messages read "cannot read <path>: <why>" or "cannot use <path>: <why>";
        # the caller names the path.
        return None, str(e).replace(f" {path}:", ":", 1).removeprefix("cannot use: ")
    rms = float(np.sqrt(np.mean(np.square(wave, dtype=np.float64))))
    if rms < min_rms:
        return None, f"silent (RMS {rms:.2g} < min_rms {min_rms:g})"
    wave = audio_io.trim_silence(wave, trim_db)
    if wave.size == 0:
        return None, f"nothing left after trimming at {trim_db:g} dB"
    if wave.size < min_length:  # a few frames, mostly padding: noise in the mel statistics, nothing to learn
        trimmed = f" after trimming at {trim_db:g} dB" if trim_db is not None else ""
        return None, f"too short: {wave.size} samples{trimmed}, under min_length {min_length}"
    return np.array(wave, dtype=np.float32), None  # a copy: the trimmed view would keep the whole clip alive


def _cache_key(path: Path, stat: os.stat_result, settings: dict) -> str:
    identity = [str(path.resolve()), stat.st_size, stat.st_mtime_ns, settings, audio_io.RESAMPLE_TYPE, CACHE_VERSION]
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]


class _ClipCache:
    """One .npy file per processed clip; a damaged or foreign entry counts as a miss."""

    def __init__(self, root: Path):
        self.folder = root / "clips"
        self.writable = True

    def get(self, key: str) -> np.ndarray | None:
        file = self.folder / f"{key}.npy"
        try:
            wave = np.load(file, allow_pickle=False)
        except FileNotFoundError:
            return None
        except Exception as e:  # truncated or overwritten file: ValueError, OSError, EOFError, ...
            log.debug("ignoring unreadable cache entry %s: %s", file, e)
            return None
        if wave.dtype != np.float32 or wave.ndim != 1 or wave.size == 0 or not np.isfinite(wave).all():
            log.debug("ignoring cache entry %s holding %s %s", file, wave.dtype, wave.shape)
            return None
        return wave

    def put(self, key: str, wave: np.ndarray) -> None:
        if self.writable:  # after one failure (read-only or full disk), go on without caching: one warning
            self.writable = write_cache_file(self.folder / f"{key}.npy",
                                             lambda f: np.save(f, wave, allow_pickle=False), "the clip cache")


def _labels(
    root: Path, files: list[Path], pattern: re.Pattern | None
) -> tuple[torch.Tensor | None, list[str] | None, list[str] | None]:
    """(labels, class_names, speakers) from sub-folders or else file names; None where absent."""
    matches = [pattern.fullmatch(p.stem) for p in files] if pattern is not None else []
    all_match = bool(matches) and all(m is not None for m in matches)
    speakers = [m["speaker"] for m in matches] if all_match and "speaker" in pattern.groupindex else None

    names = subfolder_names(root, files)
    if names is None and all_match and "label" in pattern.groupindex:
        names = [m["label"] for m in matches]
    if names is None:
        return None, None, speakers
    labels, class_names = class_indices(names)
    return labels, class_names, speakers
