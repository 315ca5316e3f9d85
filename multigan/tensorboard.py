"""TensorBoard event files of a run (`train.tensorboard`), beside log.jsonl, which stays the record.

Scalars go under `train/` (every logged term and figure) and `eval/` (the
evaluation's figures); previews under `preview/`, as the adapter's optional
`media()` gives them. TensorBoard itself is an optional dependency.
"""
from __future__ import annotations

import logging
import numbers
from pathlib import Path
from typing import Any

from torch import Tensor

from multigan.errors import ConfigError

log = logging.getLogger("multigan")

INSTALL = "pip install 'multigan[tensorboard]'"
_NOT_SCALARS = ("step", "time")  # the x axis and the wall time of a record, not figures


def require() -> None:
    """Raise a one-line ConfigError when TensorBoard is not installed (call before the data loads)."""
    try:
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        raise ConfigError(f"train.tensorboard=true needs TensorBoard: {INSTALL} (or set train.tensorboard=false)") from None


class Board:
    """A SummaryWriter on `root`, or nothing at all when `root` is None (setting off, ranks other than 0).

    `purge_step`: a resumed run's first step; TensorBoard hides what an
    earlier process wrote from there on, as the JSONL logs drop those lines.
    """

    def __init__(self, root: str | Path | None, purge_step: int | None = None):
        self._writer = None
        if root is not None:
            require()
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(root), purge_step=purge_step or None, flush_secs=30)

    @property
    def active(self) -> bool:
        return self._writer is not None

    def scalars(self, group: str, step: int, record: dict[str, Any]) -> None:
        """Every number of `record` (a log line, evaluation figures) as `group/name` at `step`."""
        if self._writer is None:
            return
        walltime = record.get("time")
        for name, value in record.items():
            if name in _NOT_SCALARS or isinstance(value, bool) or not isinstance(value, numbers.Real):
                continue
            self._writer.add_scalar(f"{group}/{name}", float(value), step, walltime=walltime)

    def media(self, step: int, items: list[tuple]) -> None:
        """An adapter's `media()`: ("image", CHW floats in [0, 1]) and ("audio", wave [T] in [-1, 1], sample rate)."""
        if self._writer is None:
            return
        seen: dict[str, int] = {}
        for kind, value, *rest in items:
            index = seen[kind] = seen.get(kind, -1) + 1
            tag = f"preview/{kind}" + (f"_{index}" if index else "")
            value = value.detach().float().cpu()
            if kind == "image":
                self._writer.add_image(tag, value.clamp(0, 1), step, dataformats="CHW")
            elif kind == "audio":
                self._writer.add_audio(tag, value.reshape(1, -1).clamp(-1, 1), step, sample_rate=int(rest[0]))
            else:
                log.warning("TensorBoard: an adapter gave media of unknown kind %r; skipped", kind)
        self._writer.flush()  # previews are rare and large: on disk at once

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def media_of(modality: Any, x: Tensor) -> list[tuple]:
    """The adapter's media for model-space samples x [B, *shape]; none when it offers no `media()`."""
    media = getattr(modality, "media", None)
    return media(x) if media is not None else []
