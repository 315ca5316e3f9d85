"""Where multigan keeps files it derives from datasets (decompressed MNIST, ...), and how it writes them."""
from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from multigan.atomic import atomic_write

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """The cache root: `$MULTIGAN_CACHE` if set, else `~/.cache/multigan`.

    The folder is not created here; writers create the sub-folder they need.
    """
    env = os.environ.get("MULTIGAN_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "multigan"


def write_cache_file(path: Path, write: Callable[[BinaryIO], None], what: str) -> bool:
    """Write a cache file with `atomic_write(path, write)`: True, or False with a warning.

    The folder is created. Any OSError (read-only or full disk, a file where a
    folder should be) ends in one warning naming `what` ("the clip cache")
    and False: a cache saves time, it is never a reason to stop a run.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, write)  # removes its temporary file when it fails
        return True
    except OSError as e:
        log.warning("cannot write %s in %s (%s); going on without it", what, path.parent, e)
        return False
