"""Messages on the terminal that do not break progress bars."""
from __future__ import annotations

import logging
import sys


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
