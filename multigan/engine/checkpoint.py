"""The only code that reads or writes files of weights.

A checkpoint is a dict of tensors and plain values, loadable with
`torch.load(..., weights_only=True)`:

    format, version, step, config (JSON text), modality {name, state},
    G, D, G_ema, opt_G, opt_D, scaler_G, scaler_D, rng

Files are written atomically (a uniquely named temporary file in the same
folder, fsync, rename), so a run killed at any moment leaves either the old
file or the new one, never half of one.
"""
from __future__ import annotations

import errno
import json
import os
import random
import re
import secrets
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

from multigan.atomic import TEMP_SUFFIX, atomic_write, atomic_write_text
from multigan.errors import CheckpointError

FORMAT = "multigan-checkpoint"
VERSION = 1
_STEP_FILE = re.compile(r"^step-(\d+)\.pt$")


def checkpoint_name(step: int) -> str:
    return f"step-{step:07d}.pt"


def save_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write `state` (plus format tags) to `path` atomically.

    A full disk or another write error raises CheckpointError in one line;
    the file at `path`, if any, is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "version": VERSION, **state}
    try:
        atomic_write(path, lambda f: torch.save(payload, f), durable=True)
    except (OSError, RuntimeError) as e:
        # torch reports a failed write as RuntimeError("[enforce fail at inline_container.cc...] unexpected pos ...").
        raise CheckpointError(f"could not write {path}: {_write_failure(e, path.parent)}") from None
    return path


def _write_failure(e: BaseException, folder: Path) -> str:
    """Why a write failed, in words: a full disk is the usual cause when torch only says 'unexpected pos'."""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return "no space left on the device"
    if isinstance(e, OSError):
        return e.strerror or str(e)
    try:
        if shutil.disk_usage(folder).free < 64 << 20:
            return "no space left on the device"
    except OSError:
        pass
    first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
    return f"the disk may be full ({first})"


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint safely (no unpickling of arbitrary objects)."""
    path = Path(path)
    if path.is_dir():
        path = latest_checkpoint(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception:  # the weights-only unpickler raises many kinds on corrupt input
        # torch's own message may advise weights_only=False: never pass that on.
        raise CheckpointError(f"{path} is not a multigan checkpoint (not a PyTorch file, damaged, or holding arbitrary objects)") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a multigan checkpoint")
    if state.get("version", 0) > VERSION:
        raise CheckpointError(f"{path} was written by a newer multigan (format version {state['version']})")
    return state


def list_checkpoints(folder: str | os.PathLike) -> list[Path]:
    """Step checkpoints in `folder`, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _STEP_FILE.match(p.name))]
    return [p for _, p in sorted(found)]


def latest_checkpoint(folder: str | os.PathLike) -> Path:
    """The newest checkpoint in a run folder or its `checkpoints/` folder."""
    folder = Path(folder)
    for candidate in (folder / "checkpoints", folder):
        if (candidate / "latest.pt").is_file():
            return candidate / "latest.pt"
        found = list_checkpoints(candidate)
        if found:
            return found[-1]
    raise CheckpointError(f"no checkpoint found in {folder}")


def prune_checkpoints(folder: str | os.PathLike, keep: int) -> list[Path]:
    """Delete all but the newest `keep` step checkpoints; returns what was deleted."""
    found = list_checkpoints(folder)
    doomed = found[:-keep] if keep > 0 else found
    for p in doomed:
        p.unlink(missing_ok=True)
    return doomed


def update_latest(folder: str | os.PathLike, target: Path) -> Path:
    """Point `latest.pt` at `target` (a hard link where possible, else a durable copy), atomically."""
    folder = Path(folder)
    latest = folder / "latest.pt"
    try:
        try:
            _link_atomic(target, latest)
        except OSError:  # no hard links on this file system
            with open(target, "rb") as src:
                atomic_write(latest, lambda f: shutil.copyfileobj(src, f, 1 << 20), durable=True)
    except OSError as e:
        raise CheckpointError(f"could not update {latest}: {_write_failure(e, folder)}") from None
    return latest


def _link_atomic(target: Path, path: Path) -> None:
    """Make `path` a hard link to `target`, replacing any file there in one rename.

    The link goes in under a unique temporary name first (as atomic_write's files do, so
    `remove_stale_temps` clears it after a kill): os.link cannot replace a file.
    """
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}{TEMP_SUFFIX}")
    os.link(target, tmp)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | os.PathLike, record: dict[str, Any]) -> Path:
    """Write a small JSON record beside the checkpoints, atomically."""
    return atomic_write_text(path, json.dumps(record, indent=2) + "\n")


def best_record(folder: str | os.PathLike) -> dict[str, Any]:
    """The record of the best checkpoint in `folder` (`best.json`: step, fid, path), or {} if none."""
    try:
        record = json.loads((Path(folder) / "best.json").read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


# RNG state ---------------------------------------------------------------
def rng_state() -> dict[str, Any]:
    """Every global RNG state, as tensors and plain values (weights_only-safe)."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": _to_plain(random.getstate()),
        "numpy": {"keys": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                  "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_to_tuple(state["python"]))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_plain(x):
    return [_to_plain(v) for v in x] if isinstance(x, tuple) else x


def _to_tuple(x):
    return tuple(_to_tuple(v) for v in x) if isinstance(x, list) else x
