"""Fixtures shared by the whole test suite."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only real datasets beside the repository (`../shared/data`).

    Missing data fails the test: a skipped test would prove nothing.
    """
    path = REPO_ROOT.parent / "shared" / "data"
    if not path.is_dir():
        pytest.fail(f"shared test data not found at {path} (see ../shared/data/README.md)")
    return path


@pytest.fixture()
def one_thread():
    """Torch on one thread for the test: on 2 cores shared with other processes,
    OpenMP threads waiting for each other make small tensor ops tens of times slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
