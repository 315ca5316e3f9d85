"""Where a run goes when no folder is given: runs/NAME, NAME made safe as one folder name.

Kept free of heavy imports: the command line names the folder before it
decides whether torch is needed at all (`train --dry-run`).
"""
from __future__ import annotations

import re
from pathlib import Path


def run_folder_name(name: str) -> str:
    """A run's name as one folder name under runs/: never a path (`../x`, `/abs`), never hidden or empty."""
    safe = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-")
    return safe or "run"


def default_run_folder(name: str) -> Path:
    """The folder of a run named `name` when no other is given: runs/NAME."""
    return Path("runs") / run_folder_name(name)
