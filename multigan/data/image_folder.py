"""A folder of image files, loaded into memory at one fixed size."""
from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps
from tqdm.contrib.logging import logging_redirect_tqdm

from multigan.console import track
from multigan.data.files import class_indices, find_files, subfolder_names
from multigan.data.tensors import ImageTensorDataset
from multigan.errors import ConfigError, DataError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")

# Modes holding more than 8 bits of grey (16- and 32-bit integers, 32-bit float:
# how PIL opens such TIFFs and 16-bit PNGs). PIL's convert("L") clips them to
# 0..255 instead of scaling, which turns most of them white, or float 0..1 black.
_WIDE_GREY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I;16S", "I", "F")
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


def find_image_files(root: str | os.PathLike) -> list[Path]:
    """Image files under `root`, recursively, in a deterministic (sorted) order.

    Matches `IMAGE_EXTENSIONS` in any letter case; hidden files and folders
    (name starting with ".") are left out.
    """
    return find_files(root, IMAGE_EXTENSIONS)


def load_image_folder(
    root: str | os.PathLike,
    *,
    channels: int,
    height: int,
    width: int,
    background: tuple[int, int, int] = (0, 0, 0),
    labels: Mapping[str, str] | None = None,
    progress: bool = True,
) -> ImageTensorDataset:
    """Every image under `root` as uint8 [N, channels, height, width], in memory.

    Each image is converted to grey (channels=1) or RGB (channels=3), with
    transparent pixels composited on `background` (RGB; black, MNIST's, unless
    given: `DataConfig.background` is white) and grey of more than 8 bits
    scaled to 8 bits (see `_to_8_bits`); then resized so that it covers
    height x width, keeping its aspect ratio, and centre-cropped. Files that
    cannot be decoded (corrupt, truncated, not an image, NaN pixels) are
    skipped with a warning.

    `labels` (file path relative to `root`, or bare file name -> class name,
    e.g. from `labels_from_table`) labels a flat folder; every image must have
    one. Without it, if every image sits in a sub-folder, the dataset's
    `labels` hold the index of its top-level sub-folder in the sorted
    `class_names`; otherwise both are None.
    """
    if channels not in (1, 3):
        raise ConfigError(f"channels must be 1 or 3, got {channels!r}")
    for name, size in (("height", height), ("width", width)):
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise ConfigError(f"{name} must be a positive integer, got {size!r}")
    if len(background) != 3 or not all(isinstance(v, int) and 0 <= v <= 255 for v in background):
        raise ConfigError(f"background must be three integers in 0..255 (RGB), got {background!r}")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"image folder not found: {root}")
    files = find_image_files(root)
    if not files:
        raise DataError(f"no image files ({', '.join(IMAGE_EXTENSIONS)}) under {root}")

    mode = "L" if channels == 1 else "RGB"
    images = torch.empty((len(files), channels, height, width), dtype=torch.uint8)
    kept: list[Path] = []
    skipped: list[Path] = []
    truncated_setting = ImageFile.LOAD_TRUNCATED_IMAGES
    # Another library may have switched this on; a truncated file must be
    # rejected, not padded with grey.
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        with logging_redirect_tqdm():
            for path in track(files, f"loading {root.name or root}", unit="img", enabled=progress):
                try:
                    pixels = _read_image(path, mode, height, width, tuple(background))  # [H, W, C] uint8
                except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, EOFError, ...
                    log.warning("skipping %s: %s", path, str(e) or type(e).__name__)
                    skipped.append(path)
                    continue
                images[len(kept)] = torch.from_numpy(pixels).permute(2, 0, 1)
                kept.append(path)
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = truncated_setting

    if not kept:
        raise DataError(f"none of the {len(files)} image files under {root} could be read")
    if skipped:
        log.warning(
            "skipped %d of %d image files under %s that could not be read: %s",
            len(skipped),
            len(files),
            root,
            ", ".join(p.relative_to(root).as_posix() for p in skipped),
        )
        images = images[: len(kept)].clone()  # release the rows reserved for skipped files
    labels, class_names = _table_labels(root, kept, labels) if labels is not None else _folder_labels(root, kept)
    dataset = ImageTensorDataset(images, labels)
    dataset.class_names = class_names
    dataset.paths = kept  # the file of each image, in order
    log.info(
        "image folder: %s images from %s at %dx%dx%d%s",
        f"{len(kept):,}",
        root,
        channels,
        height,
        width,
        f", {len(class_names)} classes" if class_names else "",
    )
    return dataset


def _read_image(path: Path, mode: str, height: int, width: int, background: tuple[int, int, int]) -> np.ndarray:
    """Decode, convert and resize one file to [height, width, C] uint8."""
    with Image.open(path) as im:
        im.load()  # decode now, so that a corrupt or truncated file fails here
        im = ImageOps.exif_transpose(im)  # camera JPEGs store rotation in EXIF
        im = _convert(im, mode, background)
    im = _cover_and_centre_crop(im, width, height)
    pixels = np.array(im, dtype=np.uint8)  # a writable copy, as torch.from_numpy wants
    return pixels[:, :, None] if pixels.ndim == 2 else pixels


def _convert(im: Image.Image, mode: str, background: tuple[int, int, int]) -> Image.Image:
    if im.mode in _WIDE_GREY_MODES:
        im = Image.fromarray(_to_8_bits(np.asarray(im, dtype=np.float64), im.mode))
    elif im.mode in _ALPHA_MODES or "transparency" in im.info:
        # Dropping alpha would show whatever colour the transparent pixels happen to hold
        # (black in most emoji): composite on the background instead.
        im = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", im.size, (*background, 255)), im)
    return im.convert(mode) if im.mode != mode else im


def _to_8_bits(grey: np.ndarray, mode: str) -> np.ndarray:
    """Grey [H, W] of more than 8 bits -> uint8, scaled, never clipped.

    Integers within 0..65535 (16-bit files; PIL opens some as "I") are scaled
    from that range and floats within 0..1 from theirs: a fixed range keeps
    the brightness of images comparable. Pixels outside it (32-bit integers,
    signed ones, floats in other units) have no range to go by but their own:
    the image's min..max becomes 0..255 (a constant image becomes black).
    """
    if not np.isfinite(grey).all():
        raise ValueError(f"non-finite pixel values (NaN or inf) in a mode {mode} image")
    top = 1.0 if mode == "F" else 65535.0
    lo, hi = float(grey.min()), float(grey.max())
    if 0 <= lo and hi <= top:
        grey = grey * (255 / top)
    else:
        grey = (grey - lo) * (255 / (hi - lo)) if hi > lo else np.zeros_like(grey)
    return np.clip(np.rint(grey), 0, 255).astype(np.uint8)


def _cover_and_centre_crop(im: Image.Image, width: int, height: int) -> Image.Image:
    """Resample the largest centred box with the target's aspect ratio to width x height."""
    w, h = im.size
    if (w, h) == (width, height):
        return im
    if w * height > h * width:  # wider than the target: trim left and right
        box_w = h * width / height
        box = ((w - box_w) / 2, 0.0, (w + box_w) / 2, float(h))
    else:  # taller: trim top and bottom
        box_h = w * height / width
        box = (0.0, (h - box_h) / 2, float(w), (h + box_h) / 2)
    # reducing_gap: shrink large photos by an integer factor first; same result, much faster.
    return im.resize((width, height), Image.Resampling.LANCZOS, box=box, reducing_gap=3.0)


def _folder_labels(root: Path, files: list[Path]) -> tuple[torch.Tensor | None, list[str] | None]:
    names = subfolder_names(root, files)
    return class_indices(names) if names is not None else (None, None)


def _table_labels(root: Path, files: list[Path], table: Mapping[str, str]) -> tuple[torch.Tensor, list[str]]:
    names = [table.get(p.relative_to(root).as_posix(), table.get(p.name)) for p in files]
    missing = [p.relative_to(root).as_posix() for p, n in zip(files, names) if n is None]
    if missing:
        raise DataError(f"{len(missing)} of {len(files)} images under {root} have no label in the table: "
                        f"{', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}")
    return class_indices(names)


def labels_from_table(path: str | os.PathLike, key_field: str = "image", label_field: str = "category") -> dict[str, str]:
    """File name -> label, from a CSV file with a header row or a JSON file of records (objects).

    In JSON, records may nest (emoji.json's `skin_variations`): a record
    without `label_field` takes that of the record it sits in, so variants
    share their base emoji's category (and, with label_field="name", its name).
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"label table not found: {path}")
    pairs: list[tuple[object, object]] = []
    is_csv = path.suffix.lower() == ".csv"
    try:
        if is_csv:
            with path.open(newline="", encoding="utf-8") as f:
                pairs = [(row.get(key_field), row.get(label_field)) for row in csv.DictReader(f)]
        else:
            records = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path} is not a {'CSV file with a header row' if is_csv else 'JSON file'}: {e}") from None
    if not is_csv:

        def walk(node: object, inherited: object) -> None:
            if isinstance(node, dict):
                label = node.get(label_field, inherited)
                if key_field in node:
                    pairs.append((node[key_field], label))
                for value in node.values():
                    walk(value, label)
            elif isinstance(node, list):
                for value in node:
                    walk(value, inherited)

        walk(records, None)
    table = {str(key): str(label) for key, label in pairs if key not in (None, "") and label not in (None, "")}
    if not table:
        raise DataError(f"no records with both {key_field!r} and {label_field!r} in {path}")
    return table
