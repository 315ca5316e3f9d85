"""An in-memory image dataset: the fastest way to feed small images on a CPU."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from multigan.errors import DataError


class ImageTensorDataset(torch.utils.data.Dataset):
    """Images held as one uint8 tensor [N, C, H, W].

    `__getitems__` lets `DataLoader` fetch a whole batch with one indexing
    operation instead of stacking N single items.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None = None):
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise DataError(f"expected uint8 images [N, C, H, W], got {images.dtype} {tuple(images.shape)}")
        if len(images) == 0:
            raise DataError("the dataset holds no image")
        self.images = images
        self.labels = labels

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.images.shape[1:])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index]

    def __getitems__(self, indices: Sequence[int]) -> torch.Tensor:
        # x: [B, C, H, W] uint8
        return self.images[torch.as_tensor(indices, dtype=torch.long)]
