"""Where multigan keeps files it derives from datasets (decompressed MNIST, ...), and how it writes them."""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)


def default_cache_dir() -> Path:
    """The cache root: `$MULTIGAN_CACHE` if set, else `~/.cache/multigan`.

    The folder is not created here; writers create the sub-folder they need.
    """
    env = os.environ.get("MULTIGAN_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "multigan"


def write_atomic(path: Path, write: Callable[[BinaryIO], None], what: str) -> bool:
    """Write a cache file through `write(file)`: True, or False with a warning when it cannot.

    The data goes to a temporary file in the same folder and is renamed into
    place, so a reader never sees half a file. The folder is created. Any
    OSError (read-only or full disk, a file where a folder should be) ends in
    one warning naming `what` ("the clip cache") and False: a cache saves
    time, it is never a reason to stop a run.
    """
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
        tmp = None
        return True
    except OSError as e:
        log.warning("cannot write %s in %s (%s); going on without it", what, path.parent, e)
        return False
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
