"""Fixtures of the signal-processing tests."""
from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf


@pytest.fixture(scope="module")
def clips(shared_data) -> list[np.ndarray]:
    """8 FSDD recordings (digits 0-8, four speakers), float64 in [-1, 1]."""
    paths = sorted((shared_data / "fsdd" / "recordings").glob("*.wav"))[::375][:8]
    return [sf.read(p, dtype="float64")[0] for p in paths]
