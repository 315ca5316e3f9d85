"""Where multigan keeps files it derives from datasets (decompressed MNIST, ...)."""
from __future__ import annotations

import os
from pathlib import Path


def default_cache_dir() -> Path:
    """The cache root: `$MULTIGAN_CACHE` if set, else `~/.cache/multigan`.

    The folder is not created here; writers create the sub-folder they need.
    """
    env = os.environ.get("MULTIGAN_CACHE")
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "multigan"
