"""Files shipped inside the package: the feature networks that evaluate each modality.

They live here, not beside the repository, so that a wheel or a
`pip install git+...` carries them (pyproject.toml lists them as package data).
"""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from multigan.errors import MultiganError


def path(name: str) -> Path:
    """The file `name` (e.g. "digit-classifier.pt") shipped in multigan/assets."""
    root = files(__name__)
    # Installed as files (the usual case, editable included), `files` is a Path; from a zip it is
    # not, and torch.load needs a real file, so fall back to the folder of this module.
    folder = root if isinstance(root, Path) else Path(__file__).parent
    file = folder / name
    if not file.is_file():
        shipped = sorted(p.name for p in folder.glob("*.pt")) if folder.is_dir() else []
        raise MultiganError(f"{name} is not among the files installed with multigan in {folder} "
                            f"(found: {', '.join(shipped) or 'none'}); reinstall multigan")
    return file
