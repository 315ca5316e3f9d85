"""Fixtures shared by the whole test suite."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only real datasets beside the repository (`../shared/data`).

    Missing data skips the test locally but fails it in CI (env `CI` set).
    """
    path = REPO_ROOT.parent / "shared" / "data"
    if not path.is_dir():
        message = f"shared test data not found at {path}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path
