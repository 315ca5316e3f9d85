"""The work the loop does between steps: when it is due, and the run folder it writes.

`Schedule` says what is due at a step (pure functions of the step).
`RunFolder` owns every file of a run: the lock, config.json, log.jsonl,
events.jsonl, metrics.jsonl, previews and checkpoints. Only rank 0 holds
one that writes; the others hold one whose writes are no-ops.
`LogWindow` keeps the loss terms since the last log line on the device and
reduces them only at log steps. `StopRequest` turns SIGINT, SIGTERM and
SIGHUP into a request to stop after the current step.
"""
from __future__ import annotations

import json
import logging
import math
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from multigan.atomic import atomic_write_text, remove_stale_temps
from multigan.engine import checkpoint as ckpt
from multigan.engine import distributed
from multigan.engine.distributed import World
from multigan.errors import CheckpointError, MultiganError

log = logging.getLogger("multigan")


@dataclass(frozen=True)
class Schedule:
    """Which maintenance is due after `step` steps (1-based: the step just finished)."""

    steps: int
    log_every: int
    preview_every: int
    checkpoint_every: int
    eval_every: int = 0  # 0: never

    def log(self, step: int) -> bool:
        return step % self.log_every == 0 or step == self.steps

    def preview(self, step: int) -> bool:
        return step % self.preview_every == 0 or step == self.steps

    def checkpoint(self, step: int) -> bool:
        return step % self.checkpoint_every == 0 or step == self.steps

    def evaluate(self, step: int) -> bool:
        return bool(self.eval_every) and (step % self.eval_every == 0 or step == self.steps)

    def check(self, step: int) -> bool:
        """A health check before any of the above: nothing is logged, shown or saved from a bad state."""
        return self.log(step) or self.preview(step) or self.checkpoint(step) or self.evaluate(step)


class RunLocked(MultiganError):
    """Another process is training in the same run folder."""


class RunFolder:
    """The files of one run. With `writer=False` (ranks other than 0) nothing is written."""

    def __init__(self, root: str | Path, writer: bool = True):
        self.root, self.writer = Path(root), writer
        self.checkpoints, self.previews = self.root / "checkpoints", self.root / "previews"
        self._lock_file = None
        self._log_file = None
        self._created = False
        self.last_checkpoint: Path | None = None

    # Lifetime ------------------------------------------------------------
    def acquire(self) -> None:
        """Take the folder for this process (an exclusive lock) and clear what a killed run left.

        Done before the data loads, so a refusal costs nothing.
        """
        if not self.writer or self._lock_file is not None:
            return
        self._created = not self.root.exists()
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock()
        for folder in (self.root, self.checkpoints):
            for stale in remove_stale_temps(folder):
                log.info("removed %s, left by an interrupted write", stale)

    def start(self, resume_step: int | None) -> None:
        """Open the run's records: drop log lines past a resumed step (and lines a kill tore)."""
        self.acquire()
        if not self.writer:
            return
        for folder in (self.checkpoints, self.previews):
            folder.mkdir(parents=True, exist_ok=True)
        for name in ("log.jsonl", "metrics.jsonl"):
            self._truncate_after(self.root / name, math.inf if resume_step is None else resume_step)
        self._log_file = open(self.root / "log.jsonl", "a")

    def close(self, remove_if_unused: bool = False) -> None:
        """Release the folder; `remove_if_unused` deletes it again if this process made it and wrote nothing."""
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._lock_file is not None:
            if remove_if_unused and self._created and {p.name for p in self.root.iterdir()} <= {".lock"}:
                (self.root / ".lock").unlink(missing_ok=True)
                self.root.rmdir()
            self._lock_file.close()  # the OS releases the lock with the file
            self._lock_file = None

    def _lock(self) -> None:
        """An exclusive lock on the folder for the whole run, released by the OS when the process dies."""
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            return
        path = self.root / ".lock"
        f = open(path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise RunLocked(f"{self.root} is in use by {holder}: wait for it to finish, or train into another folder") from None
        f.seek(0)
        f.truncate()
        f.write(f"process {os.getpid()} on {os.uname().nodename if hasattr(os, 'uname') else 'this machine'}\n")
        f.flush()
        self._lock_file = f

    @staticmethod
    def _truncate_after(path: Path, step: float) -> None:
        """Drop the records past `step` (written after the checkpoint a resume starts from, so every
        reader sees one line per step) and any line a kill tore."""
        if not path.is_file():
            return
        lines = path.read_text().splitlines(keepends=True)
        kept = [line for line in lines if _record_step(line) <= step]
        if len(kept) != len(lines):
            atomic_write_text(path, "".join(kept))

    # Records -------------------------------------------------------------
    def write_config(self, text: str) -> None:
        if self.writer:
            atomic_write_text(self.root / "config.json", text + "\n")

    def log(self, record: dict[str, Any]) -> None:
        if self._log_file is not None:
            self._log_file.write(json.dumps(record) + "\n")
            self._log_file.flush()

    def event(self, step: int, kind: str, message: str) -> None:
        self._append("events.jsonl", {"step": step, "time": time.time(), "kind": kind, "message": message})

    def metrics(self, step: int, figures: dict[str, float]) -> None:
        self._append("metrics.jsonl", {"step": step, "time": time.time(), **figures})

    def _append(self, name: str, record: dict[str, Any]) -> None:
        if self.writer:
            with open(self.root / name, "a") as f:
                f.write(json.dumps(record) + "\n")

    # Checkpoints ---------------------------------------------------------
    def save_checkpoint(self, payload: dict[str, Any], step: int, keep: int) -> Path | None:
        """Write step-N.pt, point latest.pt at it and prune; a failed write names the last good checkpoint."""
        if not self.writer:
            return None
        try:
            path = ckpt.save_checkpoint(payload, self.checkpoints / ckpt.checkpoint_name(step))
            ckpt.update_latest(self.checkpoints, path)
        except CheckpointError as e:
            last = f"the last good checkpoint is {self.last_checkpoint}" if self.last_checkpoint else "no checkpoint was saved yet"
            raise CheckpointError(f"{e}; {last}, intact") from None
        ckpt.prune_checkpoints(self.checkpoints, keep)
        self.last_checkpoint = path
        return path

    def save_best(self, payload: dict[str, Any], step: int, fid: float) -> None:
        if self.writer:
            path = ckpt.save_checkpoint(payload, self.checkpoints / "best.pt")
            ckpt.write_json_atomic(self.checkpoints / "best.json", {"step": step, "fid": fid, "path": str(path)})

    def best_fid(self) -> float:
        return ckpt.best_record(self.checkpoints).get("fid", math.inf)

    def preview_stem(self, step: int) -> Path:
        return self.previews / f"step-{step:07d}"


def _record_step(line: str) -> float:
    """The step of a JSONL record; +inf for a line that is not one (torn by a kill), so it is dropped."""
    try:
        return float(json.loads(line)["step"]) if line.endswith("\n") else math.inf
    except (ValueError, KeyError, TypeError):
        return math.inf


class LogWindow:
    """The loss terms and figures since the last log line, held on the device as they come.

    Nothing is reduced or read per step; `record()` turns the window into
    means (D terms are averaged over every D step) with one stack, one
    all-reduce over the ranks and one read.
    """

    def __init__(self):
        self.values: dict[str, list[Tensor]] = {}
        self.start, self.samples = time.perf_counter(), 0

    def add(self, name: str, value: Tensor) -> None:
        self.values.setdefault(name, []).append(value.detach())

    def set(self, name: str, value: Tensor) -> None:
        """A figure of the last step only (gradient norms, D scores)."""
        self.values[name] = [value.detach()]

    def clear(self) -> None:
        self.values.clear()
        self.start, self.samples = time.perf_counter(), 0

    def record(self, step: int, world: World) -> dict[str, float]:
        names = list(self.values)
        means = torch.stack([torch.stack(self.values[k]).float().mean() for k in names]) if names else None
        if means is not None:
            distributed.mean(means, world)
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        record: dict[str, float] = {"step": step, "time": time.time(), "img_per_s": self.samples / elapsed}
        record.update(zip(names, means.tolist() if means is not None else []))
        self.clear()
        return record


class StopRequest:
    """SIGINT, SIGTERM and SIGHUP ask the loop to finish its step, save and exit; a second Ctrl-C stops at once.

    `timeout`, `docker stop`, Slurm, systemd and Kubernetes stop a job with
    SIGTERM; a closed terminal sends SIGHUP.
    """

    SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))

    def __init__(self):
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in self.SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)

    @property
    def requested(self) -> bool:
        return self.signal is not None

    @property
    def name(self) -> str:
        return signal.Signals(self.signal).name if self.signal is not None else "a stop request"

    def _handle(self, signum, frame):
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = self.signal or signum

    def restore(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()


class Stopped(KeyboardInterrupt):
    """The run stopped on a signal after saving its state (the command line exits 128 + signal)."""

    def __init__(self, message: str, signum: int | None):
        super().__init__(message)
        self.signum = signum
