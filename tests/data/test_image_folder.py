from __future__ import annotations

import io
import logging
from dataclasses import replace as dataclasses_replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from multigan.data.image_folder import find_image_files, labels_from_table, load_image_folder
from multigan.errors import ConfigError, DataError

BAD_FILES = {"truncated.png", "empty.png", "sub/x.png"}


def _noise(h: int, w: int, c: int, seed: int) -> np.ndarray:
    shape = (h, w, c) if c > 1 else (h, w)
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


@pytest.fixture()
def mixed_folder(tmp_path) -> Path:
    """Nine readable images of assorted sizes and modes, and three bad files."""
    root = tmp_path / "mixed"
    (root / "sub").mkdir(parents=True)
    Image.fromarray(_noise(40, 50, 3, 0), "RGB").save(root / "rgb.png")
    Image.fromarray(_noise(33, 61, 4, 1), "RGBA").save(root / "rgba.png")
    Image.fromarray(_noise(28, 28, 1, 2), "L").save(root / "grey.png")
    palette = Image.fromarray(_noise(30, 20, 1, 3) % 4, "L").convert("P")
    palette.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 0, 0, 255])
    palette.save(root / "palette.png", transparency=0)
    Image.fromarray(np.full((25, 35), 40_000, dtype=np.uint16)).save(root / "grey16.png")
    Image.fromarray(_noise(64, 48, 3, 4), "RGB").save(root / "photo.jpg", quality=90)
    Image.fromarray(_noise(20, 20, 3, 5), "RGB").save(root / "UPPER.PNG")
    Image.fromarray(_noise(31, 17, 3, 6), "RGB").save(root / "sub" / "nested.bmp")
    Image.fromarray(_noise(16, 16, 3, 7), "RGB").save(root / "sub" / "tiny.webp")
    # Bad files: half a PNG of noise (cut inside the pixel data), zero bytes, text.
    full = _png_bytes(Image.fromarray(_noise(64, 64, 3, 8), "RGB"))
    (root / "truncated.png").write_bytes(full[: len(full) // 2])
    (root / "empty.png").write_bytes(b"")
    (root / "sub" / "x.png").write_text("this is not an image\n")
    # Neither counted nor tried: wrong extension, hidden.
    (root / "notes.txt").write_text("ignore me\n")
    (root / ".hidden.png").write_bytes(b"")
    return root


@pytest.mark.parametrize("channels, size", [(3, 32), (1, 28)])
def test_loads_readable_images_and_skips_bad_ones(mixed_folder, caplog, channels, size):
    with caplog.at_level(logging.WARNING, logger="multigan"):
        dataset = load_image_folder(mixed_folder, channels=channels, height=size, width=size, progress=False)
    assert len(dataset) == 9
    assert dataset.images.shape == (9, channels, size, size)
    assert dataset.images.dtype == torch.uint8
    assert dataset.labels is None and dataset.class_names is None  # images sit in root too
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == len(BAD_FILES) + 1
    for name in BAD_FILES:
        assert sum(str(mixed_folder / name) in w for w in warnings[:-1]) == 1, name
    assert warnings[-1].startswith("skipped 3 of 12 image files")
    assert all(name in warnings[-1] for name in BAD_FILES)


def test_file_order_is_sorted(mixed_folder):
    names = [p.relative_to(mixed_folder).as_posix() for p in find_image_files(mixed_folder)]
    assert names == sorted(names, key=lambda n: n.split("/"))
    assert "UPPER.PNG" in names and "sub/tiny.webp" in names and ".hidden.png" not in names


def test_truncated_file_rejected_even_if_pil_set_to_accept_it(mixed_folder, monkeypatch):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    dataset = load_image_folder(mixed_folder, channels=3, height=8, width=8, progress=False)
    assert len(dataset) == 9
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # the caller's setting is restored


def _load_one(tmp_path: Path, image: Image.Image, channels: int, height: int, width: int, **save) -> torch.Tensor:
    folder = tmp_path / f"one-{len(list(tmp_path.iterdir()))}"
    folder.mkdir()
    image.save(folder / "image.png", **save)
    return load_image_folder(folder, channels=channels, height=height, width=width, progress=False).images[0]


def test_modes_are_converted_sensibly(tmp_path):
    # Fully transparent white becomes black; half-transparent white becomes mid grey.
    assert _load_one(tmp_path, Image.new("RGBA", (20, 20), (255, 255, 255, 0)), 3, 8, 8).max() == 0
    half = _load_one(tmp_path, Image.new("LA", (20, 20), (255, 128)), 1, 8, 8)
    assert torch.all((half >= 126) & (half <= 130))
    # Palette: index 1 is pure blue; index 0 is transparent.
    palette = Image.new("P", (20, 20), 1)
    palette.putpalette([255, 255, 255, 0, 0, 255])
    palette.paste(0, (0, 0, 10, 20))
    x = _load_one(tmp_path, palette, 3, 20, 20, transparency=0)
    assert x[:, :, :10].max() == 0  # transparent half: black, not the white of index 0
    assert torch.equal(x[:, 0, 15], torch.tensor([0, 0, 255], dtype=torch.uint8))
    # 16-bit grey is scaled to 8 bits, not clipped.
    wide = Image.fromarray(np.full((10, 10), 257 * 100, dtype=np.uint16))
    assert wide.mode.startswith("I")
    assert torch.all(_load_one(tmp_path, wide, 1, 10, 10) == 100)
    # Grey to RGB repeats the channel.
    rgb = _load_one(tmp_path, Image.new("L", (10, 10), 77), 3, 4, 4)
    assert torch.all(rgb == 77)


def _tiff_folder(tmp_path: Path, images: dict[str, np.ndarray]) -> Path:
    folder = tmp_path / "tiffs"
    folder.mkdir()
    for name, pixels in images.items():
        Image.fromarray(pixels).save(folder / f"{name}.tif")
    return folder


def test_wide_tiffs_are_scaled_not_clipped(tmp_path, caplog):
    # A left-to-right ramp [8, 32] in each file's own number type. convert("L") clipped them:
    # float 0..1 came out black (0 or 1), 32-bit integers white.
    ramp = np.tile(np.linspace(0.0, 1.0, 32), (8, 1))
    images = {
        "float-unit": ramp.astype(np.float32),  # 0..1: the fixed range of float images
        "float-units": (1000 * ramp - 200).astype(np.float32),  # other units: the image's own min..max
        "int32-wide": np.rint(ramp * 3_000_000).astype(np.int32),  # past 16 bits: min..max
        "int32-16bit": np.rint(ramp * 65535).astype(np.int32),  # 16-bit values in a 32-bit file: 0..65535
        "uint16": np.rint(ramp * 65535).astype(np.uint16),
        "uint16-dim": np.rint(ramp * 6553.5).astype(np.uint16),  # a dark 16-bit image stays dark
    }
    folder = _tiff_folder(tmp_path, images)
    modes = {}
    for name in images:
        with Image.open(folder / f"{name}.tif") as im:
            modes[name] = im.mode
    assert modes["float-unit"] == "F" and modes["int32-wide"] == "I" and modes["uint16"].startswith("I")
    with caplog.at_level(logging.WARNING, logger="multigan"):
        dataset = load_image_folder(folder, channels=1, height=8, width=32, progress=False)
    assert not caplog.records
    loaded = {p.stem: x[0].float() for p, x in zip(find_image_files(folder), dataset.images)}
    full = torch.from_numpy(np.rint(ramp * 255)).float()
    for name in ("float-unit", "float-units", "int32-wide", "int32-16bit", "uint16"):
        assert (loaded[name] - full).abs().max() <= 1, name
    assert (loaded["uint16-dim"] - torch.from_numpy(np.rint(ramp * 25.5)).float()).abs().max() <= 1


def test_tiffs_with_nan_or_one_level_only(tmp_path, caplog):
    nan = np.ones((8, 8), np.float32)
    nan[2, 3] = np.nan
    images = {"nan": nan, "flat-float": np.full((8, 8), 7.5, np.float32), "flat-int": np.full((8, 8), -5, np.int32)}
    folder = _tiff_folder(tmp_path, images)
    with caplog.at_level(logging.WARNING, logger="multigan"):
        dataset = load_image_folder(folder, channels=3, height=8, width=8, progress=False)
    assert len(dataset) == 2 and not dataset.images.any()  # one level outside the fixed range: black
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert str(folder / "nan.tif") in warnings[0] and "non-finite pixel values" in warnings[0]


@pytest.mark.parametrize("size", [(90, 30), (30, 90), (41, 29)])
def test_centre_crop_keeps_the_centre(tmp_path, size):
    # A white square of side min(w, h) in the middle, black around it.
    w, h = size
    side = min(w, h)
    pixels = np.zeros((h, w), dtype=np.uint8)
    top, left = (h - side) // 2, (w - side) // 2
    pixels[top : top + side, left : left + side] = 255
    x = _load_one(tmp_path, Image.fromarray(pixels, "L"), 1, 28, 28)[0]
    assert x[2:-2, 2:-2].min() >= 250  # the crop is all square: no black side shows
    assert x.float().mean() > 245


def test_centre_of_square_image_stays_centred(tmp_path):
    pixels = np.zeros((40, 40), dtype=np.uint8)
    pixels[10:30, 10:30] = 255
    x = _load_one(tmp_path, Image.fromarray(pixels, "L"), 1, 28, 28)[0]
    assert x[10:18, 10:18].min() >= 250
    assert max(x[:5, :5].max(), x[-5:, -5:].max(), x[:5, -5:].max(), x[-5:, :5].max()) <= 5
    # Symmetric input gives a symmetric result: nothing shifted by a pixel.
    assert torch.equal(x, x.flip(0)) and torch.equal(x, x.flip(1))


def test_non_square_target(tmp_path):
    pixels = np.zeros((100, 100, 3), dtype=np.uint8)
    pixels[:, :, 0] = np.arange(100, dtype=np.uint8)[None, :]  # red ramp, left to right
    x = _load_one(tmp_path, Image.fromarray(pixels, "RGB"), 3, 10, 40)
    assert x.shape == (3, 10, 40)
    # Width covers the whole image; the height is cropped from the middle.
    assert x[0, 5, 0] < 5 and x[0, 5, -1] > 94


def test_sub_folders_become_labels(tmp_path):
    for name, count in (("dogs", 2), ("cats", 3)):
        (tmp_path / name).mkdir()
        for i in range(count):
            Image.new("RGB", (12, 12), (i, i, i)).save(tmp_path / name / f"{i}.png")
    dataset = load_image_folder(tmp_path, channels=3, height=12, width=12, progress=False)
    assert dataset.class_names == ["cats", "dogs"]
    assert dataset.labels.tolist() == [0, 0, 0, 1, 1]


def test_all_corrupt_folder_raises(tmp_path):
    (tmp_path / "a.png").write_bytes(b"")
    (tmp_path / "b.jpg").write_text("text")
    with pytest.raises(DataError, match="none of the 2 image files"):
        load_image_folder(tmp_path, channels=3, height=8, width=8, progress=False)


def test_missing_or_empty_folder_raises(tmp_path):
    with pytest.raises(DataError, match="image folder not found"):
        load_image_folder(tmp_path / "missing", channels=3, height=8, width=8)
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match="no image files"):
        load_image_folder(tmp_path, channels=3, height=8, width=8)


@pytest.mark.parametrize("settings", [dict(channels=2, height=8, width=8), dict(channels=3, height=0, width=8), dict(channels=1, height=8, width=-1)])
def test_bad_settings_raise(tmp_path, settings):
    with pytest.raises(ConfigError):
        load_image_folder(tmp_path, **settings)


# Transparency and label tables ------------------------------------------------------------
def _half_transparent(mode: str) -> Image.Image:
    """20x20: the left half fully transparent (its colour channels black), the right half opaque red or grey."""
    rgba = np.zeros((20, 20, 4), dtype=np.uint8)
    rgba[:, 10:] = (200, 0, 0, 255)
    image = Image.fromarray(rgba, "RGBA")
    return image if mode == "RGBA" else image.convert("LA")


def _load_one_on(tmp_path: Path, image: Image.Image, background, channels: int = 3, **save) -> torch.Tensor:
    folder = tmp_path / f"one-{len(list(tmp_path.iterdir()))}"
    folder.mkdir()
    image.save(folder / "image.png", **save)
    w, h = image.size
    return load_image_folder(folder, channels=channels, height=h, width=w, background=background,
                             progress=False).images[0]


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_transparent_pixels_take_the_background_colour(tmp_path, mode):
    image = _half_transparent(mode)
    opaque = (200, 0, 0) if mode == "RGBA" else (image.getpixel((15, 0))[0],) * 3
    for background in ((255, 255, 255), (0, 128, 255)):
        x = _load_one_on(tmp_path, image, background)
        assert torch.all(x[:, :, :10] == torch.tensor(background, dtype=torch.uint8)[:, None, None]), background
        assert torch.all(x[:, :, 10:] == torch.tensor(opaque, dtype=torch.uint8)[:, None, None])


def test_palette_transparency_takes_the_background_colour(tmp_path):
    palette = Image.new("P", (20, 20), 1)
    palette.putpalette([0, 0, 0, 0, 0, 255])  # index 0, the transparent one, is black
    palette.paste(0, (0, 0, 10, 20))
    x = _load_one_on(tmp_path, palette, (255, 255, 255), transparency=0)
    assert torch.all(x[:, :, :10] == 255)
    assert torch.all(x[:, :, 10:] == torch.tensor([0, 0, 255], dtype=torch.uint8)[:, None, None])


@pytest.mark.parametrize("channels", [3, 1])
def test_half_transparency_blends_with_the_background(tmp_path, channels):
    x = _load_one_on(tmp_path, Image.new("RGBA", (8, 8), (0, 0, 0, 128)), (255, 255, 255), channels)
    assert x.shape == (channels, 8, 8)
    assert torch.all((x >= 125) & (x <= 129))  # black at alpha 0.5 over white: mid grey


@pytest.mark.parametrize("background", [(0, 0), (0, 0, 256), (-1, 0, 0)])
def test_bad_background_raises(tmp_path, background):
    with pytest.raises(ConfigError, match="background"):
        load_image_folder(tmp_path, channels=3, height=8, width=8, background=background)


def test_the_settings_default_to_a_white_background(tmp_path):
    from multigan.config import DataConfig
    from multigan.registry import load_data

    Image.new("RGBA", (16, 16), (0, 0, 0, 0)).save(tmp_path / "clear.png")
    cfg = DataConfig(source="folder", root=str(tmp_path), channels=3, height=16, width=16)
    assert cfg.background == (255, 255, 255)
    dataset, _ = load_data(cfg, progress=False)
    assert torch.all(dataset.images == 255)
    dataset, _ = load_data(DataConfig(source="folder", root=str(tmp_path), channels=3, height=16, width=16,
                                      background=(0, 0, 0)), progress=False)
    assert torch.all(dataset.images == 0)


def _flat_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "flat"
    folder.mkdir()
    for name in ("a.png", "b.png", "b-tone.png", "c.png"):
        Image.new("RGB", (8, 8), (len(name), 0, 0)).save(folder / name)
    return folder


def test_a_json_table_labels_a_flat_folder_and_nested_records_inherit(tmp_path):
    import json

    folder = _flat_folder(tmp_path)
    records = [{"image": "a.png", "category": "Flags", "name": "A"},
               {"image": "b.png", "category": "People", "name": "B", "skin_variations": {"x": {"image": "b-tone.png"}}},
               {"image": "c.png", "category": "Flags", "name": "C"}]
    (tmp_path / "table.json").write_text(json.dumps(records))
    table = labels_from_table(tmp_path / "table.json")
    assert table == {"a.png": "Flags", "b.png": "People", "b-tone.png": "People", "c.png": "Flags"}
    assert labels_from_table(tmp_path / "table.json", label_field="name")["b-tone.png"] == "B"
    dataset = load_image_folder(folder, channels=3, height=8, width=8, labels=table, progress=False)
    assert dataset.class_names == ["Flags", "People"]
    assert [p.name for p in dataset.paths] == ["a.png", "b-tone.png", "b.png", "c.png"]
    assert dataset.labels.tolist() == [0, 1, 1, 0]


def test_a_csv_table_labels_a_flat_folder_and_every_image_needs_a_label(tmp_path):
    from multigan.config import DataConfig
    from multigan.registry import load_data

    folder = _flat_folder(tmp_path)
    (tmp_path / "labels.csv").write_text("image,kind\na.png,x\nb.png,y\nb-tone.png,y\nc.png,z\n")
    cfg = DataConfig(source="folder", root=str(folder), channels=3, height=8, width=8,
                     labels=str(tmp_path / "labels.csv"), label_field="kind")
    dataset, _ = load_data(cfg, progress=False)
    assert dataset.class_names == ["x", "y", "z"] and dataset.labels.tolist() == [0, 1, 1, 2]
    (tmp_path / "short.csv").write_text("image,kind\na.png,x\n")
    with pytest.raises(DataError, match="3 of 4 images .* have no label"):
        load_data(dataclasses_replace(cfg, labels=str(tmp_path / "short.csv")), progress=False)
    with pytest.raises(DataError, match="no records with both"):
        labels_from_table(tmp_path / "labels.csv", label_field="category")
    with pytest.raises(DataError, match="not found"):
        labels_from_table(tmp_path / "absent.json")
    (tmp_path / "bad.json").write_text("image,kind\na.png,x\n")
    with pytest.raises(DataError, match="not a JSON file"):
        labels_from_table(tmp_path / "bad.json")
