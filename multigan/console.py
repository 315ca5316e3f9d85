"""Messages and progress on the terminal.

Log messages go through `tqdm.write`, so they do not break a bar. A bar is
drawn only on a terminal wide enough for one; anywhere else (stderr
redirected to a file, a pipe, a terminal that reports 0 columns) progress
is one plain line now and then, since a `\\r` update per step makes a log
file grow by hundreds of bytes a step.
"""
from __future__ import annotations

import logging
import math
import os
import sys
import time
from collections.abc import Iterable, Iterator, Sized
from typing import TextIO, TypeVar

T = TypeVar("T")

MIN_COLUMNS = 20  # narrower than this, a bar shows nothing useful
LINE_SHARE = 0.05  # without a bar: one line per 5% of the total ...
LINE_SECONDS = 60.0  # ... or per minute, whichever comes first (a 10-hour run writes about 600 lines)


class _TqdmHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        tqdm.write(self.format(record), file=sys.stderr)


def setup_logging(quiet: bool = False) -> None:
    """Send the `multigan` logger to stderr: INFO and up, or WARNING and up when quiet."""
    log = logging.getLogger("multigan")
    handler = _TqdmHandler()
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s" if quiet else "%(message)s"))
    log.handlers[:] = [handler]
    log.setLevel(logging.WARNING if quiet else logging.INFO)
    log.propagate = False


def terminal_size(stream: TextIO) -> tuple[int, int]:
    """(columns, lines) of the terminal `stream` writes to; (0, 0) when it is not one or reports no size.

    COLUMNS and LINES, when set to numbers, win (as in `shutil.get_terminal_size`).
    """
    try:
        if not stream.isatty():
            return 0, 0
        size = os.get_terminal_size(stream.fileno())
        columns, lines = size.columns, size.lines
    except (AttributeError, ValueError, OSError):
        return 0, 0
    env = [os.environ.get(name, "").strip() for name in ("COLUMNS", "LINES")]
    return (int(env[0]) if env[0].isdigit() else columns), (int(env[1]) if env[1].isdigit() else lines)


def _tqdm_shape(stream: TextIO) -> tuple[int, int]:
    # tqdm's own reading gives columns - 1, so -1 on a 0-column terminal, which it then trims text by;
    # 0 makes it drop the bar and keep the figures.
    columns, lines = terminal_size(stream)
    return max(columns - 1, 0), max(lines - 1, 0)


class Progress:
    """Progress towards `total` (units of `unit`), labelled: a tqdm bar on a terminal, else plain lines.

    The clock starts after the first update: the first item or step pays for
    imports, JIT compilation and caches, and would otherwise set the rate
    (and the time left) for a long while. Disabled, it does nothing.
    """

    def __init__(self, total: int, label: str, *, unit: str = "it", initial: int = 0, enabled: bool = True,
                 file: TextIO | None = None):
        self.total, self.label, self.unit, self.n = total, label, unit, initial
        self.enabled = enabled
        self.file = file if file is not None else sys.stderr
        self.postfix: dict[str, object] = {}
        self._bar = None
        self._started: tuple[float, int] | None = None  # (time, n) once the first update is done
        self._last_line: tuple[float, int] = (time.monotonic(), initial)
        if enabled and terminal_size(self.file)[0] >= MIN_COLUMNS:
            from tqdm import tqdm

            ncols, nrows = _tqdm_shape(self.file)
            self._bar = tqdm(total=total, initial=initial, desc=label, unit=unit, file=self.file, ncols=ncols, nrows=nrows)
            self._bar.dynamic_ncols = _tqdm_shape  # what tqdm calls before each redraw: follows resizes, down to 0 columns

    @property
    def every(self) -> int | float:
        """Units between plain lines (without a total, only the minute counts)."""
        return max(1, math.ceil(self.total * LINE_SHARE)) if self.total else math.inf

    def update(self, n: int = 1) -> None:
        if not self.enabled:
            return
        first = self._started is None
        self.n += n
        now = time.monotonic()
        if first:
            self._started = (now, self.n)
        if self._bar is not None:
            if first:
                self._bar.unpause()  # drop the time since the last redraw from the rate
            self._bar.update(n)
            return
        last_time, last_n = self._last_line
        if 0 < self.total <= self.n or self.n - last_n >= self.every or now - last_time >= LINE_SECONDS:
            self._line(now)

    def seek(self, n: int) -> None:
        """Go back (or on) to `n`, e.g. after training returned to an earlier state."""
        self.n = n
        self._started = None
        if self._bar is not None:
            self._bar.n = self._bar.last_print_n = n
            self._bar.refresh()

    def set_postfix(self, **values: object) -> None:
        """Figures shown after the count, e.g. the latest losses."""
        self.postfix = values
        if self._bar is not None:
            self._bar.set_postfix(values, refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.enabled and self._last_line[1] != self.n:
            self._line(time.monotonic())  # where it ended, when that was not said yet
        self.enabled = False

    def _line(self, now: float) -> None:
        from tqdm import tqdm  # its time format

        parts = [f"{self.label}: {self.unit} {self.n:,}"]
        if self.total:
            parts[0] += f"/{self.total:,} ({100 * self.n / self.total:.0f}%)"
        if self._started is not None and now > self._started[0] and self.n > self._started[1]:
            rate = (self.n - self._started[1]) / (now - self._started[0])
            parts.append(f"{rate:,.{1 if rate < 100 else 0}f} {self.unit}/s")
            if self.total > self.n:
                parts.append(f"{tqdm.format_interval((self.total - self.n) / rate)} left")
        if self.postfix:
            parts.append(" ".join(f"{k}={v}" for k, v in self.postfix.items()))
        print(", ".join(parts), file=self.file, flush=True)
        self._last_line = (now, self.n)


def track(items: Iterable[T], label: str, *, unit: str = "it", enabled: bool = True,
          file: TextIO | None = None) -> Iterator[T]:
    """Iterate over `items` with a `Progress` (the total is `len(items)`)."""
    total = len(items) if isinstance(items, Sized) else 0
    bar = Progress(total, label, unit=unit, enabled=enabled, file=file)
    try:
        for item in items:
            yield item
            bar.update(1)
    finally:
        bar.close()
