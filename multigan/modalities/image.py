"""The image adapter: uint8 pixels <-> model space [-1, 1], PNG files out."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from multigan.augment import image_ops
from multigan.errors import DataError


def to_uint8(x: Tensor) -> Tensor:
    """Model space [B, C, H, W] in [-1, 1] -> uint8 pixels on the CPU."""
    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).cpu()


def save_png(image: Tensor, path: Path) -> Path:
    """Write one uint8 image [C, H, W] (C = 1 or 3) as PNG."""
    from PIL import Image

    array = image.permute(1, 2, 0).numpy()
    Image.fromarray(array[..., 0] if array.shape[2] == 1 else array).save(path, format="PNG")
    return path


def save_grid(images: Tensor, path: Path, nrow: int | None = None, scale: int = 1) -> Path:
    """Tile uint8 images [B, C, H, W] into one PNG, about square (or `nrow` per row), enlarged `scale` times."""
    from torchvision.utils import make_grid

    nrow = nrow or max(1, math.ceil(math.sqrt(len(images))))
    grid = make_grid(images, nrow=nrow, padding=2, pad_value=0)  # [3, H', W'] (grey is tiled as RGB)
    if images.shape[1] == 1:
        grid = grid[:1]
    if scale > 1:  # nearest neighbour: every pixel becomes a scale x scale block
        grid = grid.repeat_interleave(scale, dim=1).repeat_interleave(scale, dim=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    return save_png(grid, path)


class ImageModality:
    """Images of a fixed (channels, height, width); 1 or 3 channels."""

    name = "image"

    def __init__(self, channels: int, height: int, width: int):
        if channels not in (1, 3):
            raise DataError(f"images must have 1 or 3 channels, got {channels}")
        self._shape = (int(channels), int(height), int(width))

    @property
    def shape(self) -> tuple[int, int, int]:
        return self._shape

    def encode(self, batch: Tensor | tuple) -> Tensor:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch  # (images, labels) -> images
        if tuple(x.shape[1:]) != self._shape:
            c, h, w = self._shape
            raise DataError(f"images are {'x'.join(map(str, x.shape[1:]))} but the model expects {c}x{h}x{w} (CxHxW)")
        if x.dtype == torch.uint8:
            return x.float().div_(127.5).sub_(1.0)
        return x.float() * 2 - 1  # float images in [0, 1]

    def decode(self, x: Tensor) -> Tensor:
        return to_uint8(x)

    def augment(self, x: Tensor, p: float, rand) -> Tensor:
        """DiffAugment for pictures: colour, translation, cutout."""
        return image_ops(x, p, rand)

    def save(self, artifacts: Tensor, out_dir: Path, prefix: str = "sample", *, scale: int = 1) -> list[Path]:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = [save_png(img, out_dir / f"{prefix}-{i:04d}.png") for i, img in enumerate(artifacts)]
        paths.append(save_grid(artifacts, out_dir / f"{prefix}-grid.png", scale=scale))
        return paths

    def save_walks(self, artifacts: Tensor, steps: int, out_dir: Path, prefix: str = "interpolation", *,
                   scale: int = 1) -> list[Path]:
        """Latent walks [rows * steps, C, H, W] as one grid, a row of `steps` images per walk."""
        return [save_grid(artifacts, Path(out_dir) / f"{prefix}-grid.png", nrow=steps, scale=scale)]

    def preview(self, x: Tensor, stem: Path) -> Path:
        return save_grid(to_uint8(x), Path(stem).with_suffix(".png"))

    def media(self, x: Tensor) -> list[tuple]:
        """For TensorBoard: the preview grid of x [B, C, H, W] as floats [3, H', W'] in [0, 1]."""
        from torchvision.utils import make_grid

        images = to_uint8(x)
        grid = make_grid(images, nrow=max(1, math.ceil(math.sqrt(len(images)))), padding=2, pad_value=0)
        return [("image", grid.float() / 255)]

    def state_dict(self) -> dict[str, Any]:
        c, h, w = self._shape
        return {"channels": c, "height": h, "width": w}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ImageModality:
        return cls(state["channels"], state["height"], state["width"])
