"""Finding dataset files in a folder tree, and class labels from their folders."""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch


def find_files(root: str | os.PathLike, extensions: tuple[str, ...]) -> list[Path]:
    """Files under `root` with one of `extensions` (any letter case), recursively, sorted.

    Hidden files and folders (name starting with ".") are left out.
    """
    root = Path(root)
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        for name in names:
            if not name.startswith(".") and name.lower().endswith(extensions):
                files.append(Path(folder, name))
    return sorted(files, key=lambda p: p.relative_to(root).parts)


def subfolder_names(root: Path, files: Sequence[Path]) -> list[str] | None:
    """The top-level sub-folder of each file, or None if some file sits directly in `root`."""
    parts = [p.relative_to(root).parts for p in files]
    return [rel[0] for rel in parts] if all(len(rel) >= 2 for rel in parts) else None


def class_indices(names: Sequence[str]) -> tuple[torch.Tensor, list[str]]:
    """(labels int64 [N], class_names): each name's index among the sorted distinct names.

    Names that are all digits sort as numbers, so "10" comes after "9".
    """
    distinct = set(names)
    order = (lambda n: (int(n), n)) if all(n.isdigit() for n in distinct) else None
    class_names = sorted(distinct, key=order)
    index = {name: i for i, name in enumerate(class_names)}
    return torch.tensor([index[n] for n in names], dtype=torch.int64), class_names
