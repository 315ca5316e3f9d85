"""Checkpoint files: round trip, atomic writes, pruning, safe loading, RNG state."""
from __future__ import annotations

import os
import pickle
import random
import warnings

import numpy as np
import pytest
import torch

from multigan.engine import checkpoint as ckpt
from multigan.engine.checkpoint import (
    checkpoint_name,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
    update_latest,
)
from multigan.errors import CheckpointError
from same_state import assert_same


def _state(step: int = 3) -> dict:
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    opt = torch.optim.Adam(net.parameters())
    net(torch.randn(5, 3)).sum().backward()
    opt.step()
    return {"step": step, "config": '{"name": "x"}', "modality": {"name": "image", "state": {"channels": 1}},
            "G": net.state_dict(), "opt_G": opt.state_dict(), "rng": ckpt.rng_state()}


# Round trip -------------------------------------------------------------------
def test_save_load_round_trip(tmp_path):
    state = _state()
    path = save_checkpoint(state, tmp_path / "sub" / checkpoint_name(3))
    assert path == tmp_path / "sub" / "step-0000003.pt"
    loaded = load_checkpoint(path)
    assert loaded["format"] == ckpt.FORMAT and loaded["version"] == ckpt.VERSION
    assert_same({k: loaded[k] for k in state}, state)
    assert "format" not in state  # the caller's dict is not modified


def test_file_loads_with_weights_only(tmp_path):
    path = save_checkpoint(_state(), tmp_path / "a.pt")
    raw = torch.load(path, weights_only=True)
    assert raw["step"] == 3 and raw["format"] == ckpt.FORMAT


def test_load_of_a_folder_takes_its_latest_checkpoint(tmp_path):
    for step in (5, 10):
        save_checkpoint(_state(step), tmp_path / "checkpoints" / checkpoint_name(step))
    assert load_checkpoint(tmp_path)["step"] == 10


# Atomic writes ----------------------------------------------------------------
def test_save_leaves_no_temporary_file(tmp_path):
    save_checkpoint(_state(1), tmp_path / "x.pt")
    save_checkpoint(_state(2), tmp_path / "x.pt")  # overwrite
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.pt"]
    assert load_checkpoint(tmp_path / "x.pt")["step"] == 2


def test_interrupted_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = save_checkpoint(_state(1), tmp_path / "x.pt")
    before = path.read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(CheckpointError, match="no space left on the device") as e:
        save_checkpoint(_state(2), path)
    assert "\n" not in str(e.value)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.pt"]
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1


def test_a_full_disk_as_torch_reports_it_is_one_line(tmp_path, monkeypatch):
    # torch turns the OSError of a full disk into this RuntimeError.
    path = save_checkpoint(_state(1), tmp_path / "x.pt")

    def full(obj, f, *args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1216 vs 1104\nframe #0: ...")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(CheckpointError, match="disk may be full.*unexpected pos") as e:
        save_checkpoint(_state(2), path)
    assert "\n" not in str(e.value) and "frame #0" not in str(e.value)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.pt"]


def test_checkpoints_follow_the_umask_like_every_other_output(tmp_path):
    old = os.umask(0o022)
    try:
        path = save_checkpoint(_state(1), tmp_path / "x.pt")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o644


def test_keyboard_interrupt_during_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = save_checkpoint(_state(1), tmp_path / "x.pt")
    before = path.read_bytes()

    def interrupted(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(_state(2), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.pt"]


# Listing, latest, pruning -------------------------------------------------------
def _touch_steps(folder, steps):
    folder.mkdir(parents=True, exist_ok=True)
    for s in steps:
        (folder / checkpoint_name(s)).write_bytes(b"")


def test_list_checkpoints_sorts_by_step_and_ignores_other_files(tmp_path):
    _touch_steps(tmp_path, [10_000_000, 20, 9_999_999, 3])
    for name in (".step-0000050.pt.abc123.tmp", ".latest.pt.tmp", "latest.pt", "step-0000060.pt.tmp", "notes.txt", "step-x.pt"):
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in list_checkpoints(tmp_path)] == [
        "step-0000003.pt", "step-0000020.pt", "step-9999999.pt", "step-10000000.pt"]
    assert list_checkpoints(tmp_path / "absent") == []


def test_prune_keeps_the_newest(tmp_path):
    _touch_steps(tmp_path, [5, 10, 15, 20, 25])
    (tmp_path / "latest.pt").write_bytes(b"")
    deleted = prune_checkpoints(tmp_path, 2)
    assert [p.name for p in deleted] == ["step-0000005.pt", "step-0000010.pt", "step-0000015.pt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pt", "step-0000020.pt", "step-0000025.pt"]
    assert prune_checkpoints(tmp_path, 5) == []


def test_latest_checkpoint_prefers_latest_pt(tmp_path):
    _touch_steps(tmp_path / "checkpoints", [5, 10])
    (tmp_path / "checkpoints" / "latest.pt").write_bytes(b"")
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoints" / "latest.pt"
    assert latest_checkpoint(tmp_path / "checkpoints") == tmp_path / "checkpoints" / "latest.pt"


def test_latest_checkpoint_falls_back_to_the_newest_step_file(tmp_path):
    _touch_steps(tmp_path / "checkpoints", [900, 10_000, 99])
    (tmp_path / "checkpoints" / ".step-0020000.pt.x.tmp").write_bytes(b"")  # a killed write
    assert latest_checkpoint(tmp_path).name == "step-0010000.pt"
    _touch_steps(tmp_path / "flat", [1, 2])
    assert latest_checkpoint(tmp_path / "flat").name == "step-0000002.pt"


def test_latest_checkpoint_of_an_empty_folder(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / ".step-0000005.pt.abc.tmp").write_bytes(b"junk")
    with pytest.raises(CheckpointError):
        latest_checkpoint(tmp_path)


def test_update_latest_points_at_the_target(tmp_path):
    a = save_checkpoint(_state(1), tmp_path / checkpoint_name(1))
    b = save_checkpoint(_state(2), tmp_path / checkpoint_name(2))
    update_latest(tmp_path, a)
    latest = update_latest(tmp_path, b)
    assert latest.name == "latest.pt" and load_checkpoint(latest)["step"] == 2
    prune_checkpoints(tmp_path, 1)  # deleting older step files never breaks latest.pt
    assert load_checkpoint(latest)["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pt", "step-0000002.pt"]


# Safe loading -------------------------------------------------------------------
def test_load_of_a_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "absent.pt")


@pytest.mark.parametrize("text", ["# my notes about this run\n", "hello world\n", "step 5\n", '{"step": 5}\n'])
def test_load_of_a_text_file(tmp_path, text):
    path = tmp_path / "notes.pt"
    path.write_text(text)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


def test_load_of_random_bytes(tmp_path):
    # Corrupt files make the weights-only unpickler raise many exception types
    # (UnpicklingError, KeyError, IndexError, struct.error...): all must become CheckpointError.
    rng = random.Random(0)
    escaped = []
    for i in range(200):
        data = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300)))
        path = tmp_path / f"r{i}.pt"
        path.write_bytes(data)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                load_checkpoint(path)
            except CheckpointError:
                continue
            except Exception as e:  # noqa: BLE001 - collected for the assertion below
                escaped.append((data[:12], type(e).__name__))
                continue
        escaped.append((data[:12], "loaded"))
    assert escaped == []


def test_load_of_an_empty_or_truncated_file(tmp_path):
    good = save_checkpoint(_state(), tmp_path / "good.pt").read_bytes()
    for name, data in (("empty.pt", b""), ("half.pt", good[: len(good) // 2])):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CheckpointError):
            load_checkpoint(tmp_path / name)


@pytest.mark.parametrize("obj", [{"G": {"w": torch.ones(2)}}, torch.ones(3), [1, 2, 3]], ids=["dict", "tensor", "list"])
def test_load_of_a_torch_file_that_is_not_ours(tmp_path, obj):
    path = tmp_path / "other.pt"
    torch.save(obj, path)
    with pytest.raises(CheckpointError, match="not a multigan checkpoint"):
        load_checkpoint(path)


def test_load_of_a_newer_format_version(tmp_path):
    path = save_checkpoint({"step": 1}, tmp_path / "new.pt")
    state = torch.load(path, weights_only=True)
    torch.save({**state, "version": ckpt.VERSION + 1}, path)
    with pytest.raises(CheckpointError, match="newer"):
        load_checkpoint(path)


class _Payload:
    """Unpickling this would create `marker`."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_malicious_pickle_is_not_executed(tmp_path):
    marker = tmp_path / "pwned"
    for name, write in (
        ("plain.pt", lambda p: p.write_bytes(pickle.dumps({"format": ckpt.FORMAT, "x": _Payload(marker)}))),
        ("zip.pt", lambda p: torch.save({"format": ckpt.FORMAT, "x": _Payload(marker)}, p)),
    ):
        write(tmp_path / name)
        assert not marker.exists()
        with pytest.raises(CheckpointError):
            load_checkpoint(tmp_path / name)
        assert not marker.exists()
    # The payload is real: an unsafe load would have run it.
    pickle.loads((tmp_path / "plain.pt").read_bytes())
    assert marker.exists()


def test_a_pickle_of_an_arbitrary_object(tmp_path):
    path = tmp_path / "obj.pt"
    torch.save({"format": ckpt.FORMAT, "when": __import__("datetime").date(2024, 1, 1)}, path)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


# RNG state --------------------------------------------------------------------------
def _draws():
    return (torch.rand(5), torch.randn(3), random.random(), random.getrandbits(64), np.random.rand(4), np.random.randn(3))


def test_rng_state_round_trip_through_a_checkpoint(tmp_path):
    torch.manual_seed(11)
    random.seed(12)
    np.random.seed(13)
    np.random.randn()  # leaves a cached gaussian in numpy's state
    path = save_checkpoint({"rng": ckpt.rng_state()}, tmp_path / "rng.pt")
    first = _draws()

    torch.manual_seed(99)
    random.seed(99)
    np.random.seed(99)
    ckpt.set_rng_state(load_checkpoint(path)["rng"])
    second = _draws()

    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    assert first[2:4] == second[2:4]
    np.testing.assert_array_equal(first[4], second[4])
    np.testing.assert_array_equal(first[5], second[5])


def test_rng_state_is_a_snapshot():
    torch.manual_seed(0)
    state = ckpt.rng_state()
    a = torch.rand(3)
    b = torch.rand(3)
    ckpt.set_rng_state(state)
    assert torch.equal(torch.rand(3), a) and not torch.equal(a, b)
