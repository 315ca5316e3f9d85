"""The Modality contract, checked for every adapter the library registers.

Each registered name gets a factory in `FACTORIES` that returns a few
`Case`s (one adapter in one shape, with valid and invalid batches). A new
adapter adds one factory there; every test below then runs on it.
"""
from __future__ import annotations

import copy
import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from multigan.registry import MODALITIES
from multigan.errors import DataError
from multigan.engine.protocol import Modality
from multigan.modalities.image import ImageModality


@dataclass
class Case:
    """One adapter instance and what the contract tests need to exercise it."""

    id: str
    adapter: Modality
    make_batch: Callable[[int, int], Any]  # (n, seed) -> a valid data-loader batch of n samples
    assert_round_trip: Callable[[Any, Any], None]  # (batch, decode(encode(batch))) -> raises if they differ
    preview_size: Callable[[int], tuple[int, int]]  # n samples -> (width, height) of the preview PNG
    other_valid_batches: Callable[[int, int], dict[str, Any]] = lambda n, seed: {}  # other accepted forms
    bad_batches: Callable[[int], dict[str, Any]] = lambda n: {}  # batches of the wrong shape
    reaches_ends: bool = False  # make_batch holds both ends of the data range, which encode to exactly -1 and 1
    files_per_sample: int = 1  # files `save` writes for each sample (besides the one overview)


# image ---------------------------------------------------------------------
def _pixels(n: int, shape: tuple[int, int, int], seed: int) -> torch.Tensor:
    """uint8 [n, C, H, W] noise that includes both ends of the range (0 and 255)."""
    x = torch.randint(0, 256, (n, *shape), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))
    x[0].view(-1)[0], x[-1].view(-1)[-1] = 0, 255
    return x


def _image_round_trip(batch: Any, decoded: Any) -> None:
    x = batch[0] if isinstance(batch, (tuple, list)) else batch
    expected = x if x.dtype == torch.uint8 else (x * 255).round().to(torch.uint8)
    assert isinstance(decoded, torch.Tensor) and decoded.dtype == torch.uint8
    assert torch.equal(decoded, expected), "decode(encode(pixels)) does not give back the pixels"


def _grid_size(n: int, height: int, width: int, padding: int = 2) -> tuple[int, int]:
    # ceil(sqrt(n)) tiles a row, `padding` pixels between and around tiles (torchvision's make_grid).
    ncol = min(n, math.ceil(math.sqrt(n)))
    nrow = math.ceil(n / ncol)
    return ncol * (width + padding) + padding, nrow * (height + padding) + padding


def image_cases() -> list[Case]:
    cases = []
    for shape in [(1, 28, 28), (3, 64, 64), (1, 80, 64)]:
        c, h, w = shape
        cases.append(Case(
            id="x".join(map(str, shape)),
            adapter=ImageModality(c, h, w),
            make_batch=lambda n, seed, shape=shape: _pixels(n, shape, seed),
            assert_round_trip=_image_round_trip,
            reaches_ends=True,
            preview_size=lambda n, h=h, w=w: _grid_size(n, h, w),
            other_valid_batches=lambda n, seed, shape=shape: {
                "float in [0, 1]": _pixels(n, shape, seed).float() / 255,
                "(images, labels)": (_pixels(n, shape, seed), torch.arange(n)),
            },
            bad_batches=lambda n, c=c, h=h, w=w: {
                "width off by one": torch.zeros(n, c, h, w - 1, dtype=torch.uint8),
                "height off by one": torch.zeros(n, c, h + 1, w, dtype=torch.uint8),
                "other channel count": torch.zeros(n, 4 - c, h, w, dtype=torch.uint8),
                "no channel axis": torch.zeros(n, h, w, dtype=torch.uint8),
                **({"height and width swapped": torch.zeros(n, c, w, h, dtype=torch.uint8)} if h != w else {}),
            },
        ))
    return cases


# mel -----------------------------------------------------------------------
def _waves(n: int, length: int, seed: int, sample_rate: int = 8000) -> torch.Tensor:
    """float [n, length]: a chirp with a random start frequency plus a little noise, per row."""
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(length) / sample_rate
    f0 = 200 + 1500 * torch.rand(n, 1, generator=g)
    chirp = 0.5 * torch.sin(2 * math.pi * (f0 * t + 400 * t**2))
    return chirp + 0.01 * torch.randn(n, length, generator=g)


def _mel_round_trip(adapter):
    def check(batch: Any, decoded: Any) -> None:
        from multigan.modalities.mel import MelArtifacts

        wave = batch[0] if isinstance(batch, (tuple, list)) else batch
        assert isinstance(decoded, MelArtifacts)
        assert decoded.waves.shape == wave.shape and torch.isfinite(decoded.waves).all()
        assert decoded.waves.abs().max() > 1e-3, "decoded audio is silent"
        expected = adapter.analyze(wave)  # where the normalised value was not clipped, dB survives exactly
        inside = adapter.normalize(expected).squeeze(1).abs() < 1
        assert torch.allclose(decoded.mel_db[inside], expected[inside], atol=1e-3)
        # Griffin-Lim is approximate: the decoded audio's log-mel is close, not equal.
        again = adapter.analyze(decoded.waves)
        assert (again - expected).abs().median() < 6.0, "decoded audio does not sound like its spectrogram"
    return check


def mel_cases() -> list[Case]:
    from multigan.config import AudioConfig
    from multigan.modalities.mel import MelModality

    audio = AudioConfig(sample_rate=8000, n_fft=256, hop_length=64, n_mels=32, frames=24, gl_iter=16)
    adapter = MelModality.fit(audio, list(_waves(4, 4000, seed=99)))
    n_mels, frames, length = audio.n_mels, audio.frames, audio.length
    return [Case(
        id=f"{n_mels}x{frames}",
        adapter=adapter,
        make_batch=lambda n, seed: _waves(n, length, seed),
        assert_round_trip=_mel_round_trip(adapter),
        preview_size=lambda n: _grid_size(n, 2 * n_mels, 2 * frames),
        files_per_sample=2,  # a WAV and a spectrogram PNG
        other_valid_batches=lambda n, seed: {"(waves, labels)": (_waves(n, length, seed), torch.arange(n))},
        bad_batches=lambda n: {
            "one sample short": torch.zeros(n, length - 1),
            "channel axis": torch.zeros(n, 1, length),
            "spectrograms": torch.zeros(n, 1, n_mels, frames),
        },
    )]


# Registry name -> cases. A new adapter in multigan.registry.MODALITIES adds its
# factory here.
FACTORIES: dict[str, Callable[[], list[Case]]] = {
    "image": image_cases,
    "mel": mel_cases,
}

CASES = [(name, case) for name, factory in FACTORIES.items() for case in factory()]
IDS = [f"{name}-{case.id}" for name, case in CASES]
B = 5  # not a square: the preview grid has a ragged last row


def test_every_registered_modality_has_a_factory():
    missing = sorted(set(MODALITIES) - set(FACTORIES))
    assert not missing, f"add a factory to FACTORIES in {__file__} for: {missing}"
    stale = sorted(set(FACTORIES) - set(MODALITIES))
    assert not stale, f"FACTORIES names modalities that multigan.registry.MODALITIES does not register: {stale}"


def test_grid_size_helper():
    # Sizes torchvision's make_grid gives for 28x28 tiles, so the helper itself is checked.
    assert _grid_size(4, 28, 28) == (62, 62)
    assert _grid_size(5, 28, 28) == (92, 62)
    assert _grid_size(64, 28, 28) == (242, 242)


@pytest.mark.parametrize("name,case", CASES, ids=IDS)
class TestModalityContract:
    def test_satisfies_protocol_and_names_itself(self, name, case):
        assert isinstance(case.adapter, Modality)
        assert case.adapter.name == name, "the adapter's name is the key checkpoints are restored by"
        assert MODALITIES[name] is type(case.adapter)
        assert isinstance(case.adapter.shape, tuple) and all(isinstance(s, int) and s > 0 for s in case.adapter.shape)

    def test_encode_gives_model_space(self, name, case):
        batches = {"canonical": case.make_batch(B, 0), **case.other_valid_batches(B, 0)}
        for label, batch in batches.items():
            x = case.adapter.encode(batch)
            assert isinstance(x, torch.Tensor) and x.dtype.is_floating_point, label
            assert tuple(x.shape) == (B, *case.adapter.shape), label
            assert torch.isfinite(x).all(), label
            assert x.min() >= -1 and x.max() <= 1, f"{label}: values in [{x.min()}, {x.max()}]"
        x = case.adapter.encode(case.make_batch(B, 0))
        assert x.std() > 0.1, "distinct inputs should spread over model space"
        if case.reaches_ends:
            assert x.min() == -1 and x.max() == 1, "the ends of the data range should map to -1 and 1"

    def test_encode_is_deterministic_and_leaves_input_alone(self, name, case):
        batch = case.make_batch(B, 1)
        snapshot = copy.deepcopy(batch)
        first = case.adapter.encode(batch)
        assert _same(batch, snapshot), "encode changed its input in place"
        assert torch.equal(case.adapter.encode(batch), first)

    def test_decode_inverts_encode(self, name, case):
        batches = {"canonical": case.make_batch(B, 2), **case.other_valid_batches(B, 2)}
        for batch in batches.values():
            case.assert_round_trip(batch, case.adapter.decode(case.adapter.encode(batch)))

    def test_save_writes_one_file_per_sample_plus_overview(self, name, case, tmp_path):
        artifacts = case.adapter.decode(case.adapter.encode(case.make_batch(B, 3)))
        out = tmp_path / "new" / "folder"
        paths = case.adapter.save(artifacts, out, prefix="s")
        n_files = B * case.files_per_sample + 1
        assert isinstance(paths, list) and len(paths) == n_files
        assert all(isinstance(p, Path) for p in paths)
        assert len({p.name for p in paths}) == n_files, "files overwrite each other"
        for p in paths:
            assert p.is_file() and p.stat().st_size > 0, p
            assert p.parent == out and p.name.startswith("s")
        assert sorted(out.iterdir()) == sorted(paths), "save wrote files it did not return"

    def test_preview_writes_a_png(self, name, case, tmp_path):
        x = case.adapter.encode(case.make_batch(B, 4))
        stem = tmp_path / "previews" / "step-0000001"
        path = Path(case.adapter.preview(x, stem))
        assert path.parent == stem.parent and path.stem == stem.name and path.is_file()
        assert all(p.stem == stem.name for p in stem.parent.iterdir()), "preview wrote files under another name"
        with Image.open(path) as im:
            assert im.format == "PNG"
            assert im.size == case.preview_size(B)
            im.load()

    def test_state_dict_round_trip(self, name, case):
        state = case.adapter.state_dict()
        _assert_plain(state)
        buffer = io.BytesIO()
        torch.save(state, buffer)
        buffer.seek(0)
        loaded = torch.load(buffer, weights_only=True)
        rebuilt = MODALITIES[name].from_state(loaded)
        assert rebuilt.shape == case.adapter.shape
        assert rebuilt.state_dict().keys() == state.keys()
        batch = case.make_batch(B, 5)
        assert torch.equal(rebuilt.encode(batch), case.adapter.encode(batch))

    def test_wrong_shape_raises_data_error(self, name, case):
        bad = case.bad_batches(B)
        assert bad, "give each case at least one batch of the wrong shape"
        for label, batch in bad.items():
            with pytest.raises(DataError) as info:
                case.adapter.encode(batch)
            message = str(info.value)
            assert message and "\n" not in message, f"{label}: the message should be one non-empty line"


def _same(a: Any, b: Any) -> bool:
    """Equal batches: tensors element by element, containers item by item."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, (list, tuple)):
        return type(a) is type(b) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def _assert_plain(value: Any, where: str = "state") -> None:
    """Tensors, numbers, strings, None, and lists/tuples/dicts (string keys) of those."""
    if isinstance(value, (torch.Tensor, bool, int, float, str, type(None))):
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _assert_plain(v, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for k, v in value.items():
            assert isinstance(k, str), f"{where} has a non-string key {k!r}"
            _assert_plain(v, f"{where}[{k!r}]")
        return
    raise AssertionError(f"{where} is a {type(value).__name__}, not a tensor or plain value")


# The mel adapter's statistics (MelModality.fit) and their cache ---------------
def _fit_setup():
    from multigan.config import AudioConfig
    from multigan.modalities.mel import MelModality, analyze

    audio = AudioConfig(sample_rate=8000, n_fft=256, hop_length=64, n_mels=32, frames=24, gl_iter=16)
    return audio, MelModality, lambda wave: analyze(wave, audio).double()  # [n_mels, n]


def test_mel_statistics_weigh_each_clip_as_one_crop():
    audio, MelModality, db = _fit_setup()
    quiet = list(0.01 * _waves(3, audio.length, seed=1))  # one crop each: `frames` frames
    loud = 0.5 * torch.randn(4 * audio.length, generator=torch.Generator().manual_seed(2))  # 4 crops long
    once = MelModality.fit(audio, quiet + [loud])
    # Every clip is at least a crop long: each weighs the same, whatever its length.
    per_clip = torch.stack([db(w).mean(1) for w in quiet + [loud]])  # [4, n_mels]
    torch.testing.assert_close(once.mean.double(), per_clip.mean(0), rtol=0, atol=1e-4)
    # The same noise 25 times as long: it weighed 25 times more and pulled the mean up by ~20 dB.
    longer = MelModality.fit(audio, quiet + [loud.repeat(25)])
    torch.testing.assert_close(longer.mean, once.mean, rtol=0, atol=0.3)
    torch.testing.assert_close(longer.std, once.std, rtol=0, atol=0.3)
    # A clip shorter than a crop counts the frames it has (10 of 24), no more.
    short = loud[: 9 * audio.hop_length]
    assert db(short).shape[1] == 10
    mixed = MelModality.fit(audio, quiet[:1] + [short])
    expected = (24 * db(quiet[0]).mean(1) + 10 * db(short).mean(1)) / 34
    torch.testing.assert_close(mixed.mean.double(), expected, rtol=0, atol=1e-4)


def test_mel_statistics_cache_that_cannot_be_written_costs_a_warning(tmp_path, monkeypatch, caplog):
    import errno
    import logging
    import os

    audio, MelModality, _ = _fit_setup()
    waves = list(_waves(2, audio.length, seed=3))
    expected = MelModality.fit(audio, waves)
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the cache folder should be\n")

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    for cache_dir, replace in ((blocker / "cache", os.replace), (tmp_path / "full", full)):
        caplog.clear()
        with monkeypatch.context() as m, caplog.at_level(logging.WARNING, logger="multigan"):
            m.setattr(os, "replace", replace)
            adapter = MelModality.fit(audio, waves, cache_dir=cache_dir, cache_key="two clips")
        assert torch.equal(adapter.mean, expected.mean) and torch.equal(adapter.std, expected.std)
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "cannot write the mel statistics cache" in warnings[0], warnings
    assert not list((tmp_path / "full").rglob("*.*"))  # no temporary file left behind

    # A cache that can be written is read back: the second fit analyses nothing.
    MelModality.fit(audio, waves, cache_dir=tmp_path / "ok", cache_key="two clips")
    assert len(list((tmp_path / "ok" / "mel-stats").glob("*.json"))) == 1
    monkeypatch.setattr(MelModality, "analyze", lambda self, wave: pytest.fail("the cache was not used"))
    again = MelModality.fit(audio, waves, cache_dir=tmp_path / "ok", cache_key="two clips")
    assert torch.equal(again.mean, expected.mean) and torch.equal(again.std, expected.std)
