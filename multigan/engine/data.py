"""Batches for the loop: batch k is a pure function of (seed, k), and each rank takes its slice of it.

So a resumed run sees exactly the batches the uninterrupted run would have,
and a run on N ranks sees the same global batches as one process.
"""
from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from multigan.engine.distributed import World
from multigan.errors import ConfigError

UNLABELLED = "a class-conditional G needs (data, labels) batches: wrap the dataset in data.tensors.Labelled"
# Datasets smaller than this share of the free GPU memory are moved to the GPU whole and indexed there.
_ON_DEVICE_SHARE = 0.25


class IndexStream(torch.utils.data.Sampler):
    """Endless batches of dataset indices, reshuffled every epoch; this rank's slice of each.

    Batch k is a pure function of (seed, k), so a resumed run starts at batch
    `start` and sees exactly the batches the uninterrupted run would have.
    """

    def __init__(self, n_items: int, batch_size: int, seed: int, start: int = 0, rank: int = 0, world_size: int = 1):
        self.n, self.batch_size, self.seed, self.start = n_items, min(batch_size, n_items), seed, start
        self.per_epoch = n_items // self.batch_size  # drop the incomplete last batch
        if self.batch_size % world_size:
            raise ConfigError(f"the batch of {self.batch_size} does not split evenly over {world_size} ranks: "
                              f"set train.batch_size to a multiple of {world_size}")
        self.local = self.batch_size // world_size
        self.offset = rank * self.local

    def permutation(self, epoch: int) -> Tensor:
        """The order of the items in `epoch` (on the CPU)."""
        # The seed wraps into torch's 64-bit range (any seed the settings accept works).
        return torch.randperm(self.n, generator=torch.Generator().manual_seed((self.seed * 1_000_003 + epoch) % 2**63))

    def positions(self) -> Iterator[tuple[int, int]]:
        """(epoch, first index into its permutation) of this rank's slice of batch start, start + 1, ..."""
        k = self.start
        while True:
            e, pos = divmod(k, self.per_epoch)
            yield e, pos * self.batch_size + self.offset
            k += 1

    def __iter__(self) -> Iterator[list[int]]:
        epoch, perm = -1, None
        for e, first in self.positions():
            if e != epoch:
                epoch, perm = e, self.permutation(e)
            yield perm[first:first + self.local].tolist()

    def on(self, device: torch.device) -> Iterator[Tensor]:
        """The same index batches as tensors on `device`: one copy per epoch, none per step."""
        epoch, perm = -1, None
        for e, first in self.positions():
            if e != epoch:
                epoch, perm = e, self.permutation(e).to(device)
            yield perm[first:first + self.local]


def class_mix(dataset, n_classes: int) -> Tensor:
    """The share of each class among a labelled dataset's items [n_classes] (float32, summing to 1)."""
    labels = getattr(dataset, "labels", None)
    if labels is None:
        raise ConfigError(UNLABELLED)
    counts = torch.bincount(torch.as_tensor(labels, dtype=torch.long).cpu(), minlength=n_classes)
    if len(counts) > n_classes:
        raise ConfigError(f"the data has labels up to {len(counts) - 1}, but G has {n_classes} classes")
    return (counts / counts.sum()).float()


def class_names(dataset, n_classes: int) -> list[str] | None:
    """The dataset's name for each class [n_classes] (its `class_names`), or None when it names none or
    not exactly G's classes."""
    names = getattr(dataset, "class_names", None)
    if names is None or len(names) != n_classes:
        return None
    return [str(name) for name in names]


def class_title(k: int, names: list[str] | None) -> str:
    """Class k as people read it: its name, or "class k" where it has none or its name is only k (digits)."""
    name = names[k] if names and 0 <= k < len(names) else str(k)
    return f"class {k}" if name == str(k) else name


def _collate(items):
    # Datasets with `__getitems__` hand over a ready batch: a tensor, or (data, labels).
    return items if isinstance(items, (Tensor, tuple)) else torch.utils.data.default_collate(items)


def to_device(batch, device: torch.device, memory_format: torch.memory_format | None = None):
    """A batch (tensor, or tuple/list/dict of them) on `device`; 4-D tensors in `memory_format` if given."""
    if isinstance(batch, Tensor):
        batch = batch.to(device, non_blocking=True)
        return batch.contiguous(memory_format=memory_format) if memory_format is not None and batch.ndim == 4 else batch
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(b, device, memory_format) for b in batch)
    if isinstance(batch, dict):
        return {k: to_device(v, device, memory_format) for k, v in batch.items()}
    return batch


def _nbytes(dataset) -> int | None:
    """Bytes an in-memory dataset would take on a device, or None when it cannot move there."""
    return dataset.nbytes() if callable(getattr(dataset, "nbytes", None)) and callable(getattr(dataset, "to", None)) else None


def batches(dataset, *, batch_size: int, seed: int, start: int, device: torch.device, world: World,
            num_workers: int = 0) -> Iterator:
    """Endless batches from batch `start` on, this rank's slice of each, on `device`.

    On CUDA an in-memory dataset that offers `to(device)` and fits is moved
    to the GPU once and indexed there: no loader, no host-to-device copy per
    step. Anything else goes through a DataLoader.
    """
    stream = IndexStream(len(dataset), batch_size, seed, start=start, rank=world.rank, world_size=world.size)
    size = _nbytes(dataset)
    if device.type == "cuda" and num_workers == 0 and size is not None:
        free, _ = torch.cuda.mem_get_info(device)
        if size < _ON_DEVICE_SHARE * free:
            on_device = dataset.to(device)
            return (on_device.__getitems__(idx) for idx in stream.on(device))
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_sampler=stream,
        num_workers=num_workers,
        collate_fn=_collate,
        pin_memory=device.type == "cuda",
        persistent_workers=num_workers > 0,
        generator=torch.Generator().manual_seed(seed),  # keeps the global RNG untouched
    )
    return iter(loader)
