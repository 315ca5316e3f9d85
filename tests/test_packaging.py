"""Packaging: the wheel carries the feature networks, and an install from it finds them."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from multigan import assets
from multigan.errors import MultiganError

REPO_ROOT = Path(__file__).resolve().parents[1]
FEATURE_NETS = ("digit-classifier.pt", "spoken-digit-classifier.pt")

pytestmark = pytest.mark.slow  # a wheel build and an install: about 10 s on 2 cores


def _run(*args: str, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True, timeout=120, **kwargs)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel of the package, built offline from a copy of its sources.

    A copy, because a build in place leaves build/ and egg-info behind, and
    files left in build/lib from an earlier build would end up in the wheel.
    """
    root = tmp_path_factory.mktemp("packaging")
    src = root / "src"
    shutil.copytree(REPO_ROOT / "multigan", src / "multigan", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO_ROOT / name, src / name)
    _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q",
         str(src), "-w", str(root / "dist"))
    (path,) = (root / "dist").glob("multigan-*.whl")
    return path


@pytest.fixture(scope="module")
def installed(wheel, tmp_path_factory) -> Path:
    """The wheel installed into a folder of its own (what site-packages would hold)."""
    target = tmp_path_factory.mktemp("site")
    _run(sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(target), str(wheel))
    return target


def test_the_wheel_holds_the_feature_networks(wheel):
    with zipfile.ZipFile(wheel) as whl:
        names = set(whl.namelist())
        for name in FEATURE_NETS:
            assert f"multigan/assets/{name}" in names, sorted(names)
            assert whl.read(f"multigan/assets/{name}") == assets.path(name).read_bytes()
    assert "multigan/assets/__init__.py" in names
    assert not any(n.startswith("assets/") for n in names), "a top-level assets/ would land in site-packages/assets"


def test_an_install_from_the_wheel_finds_them(installed):
    # -S: no site-packages, so neither the editable install of this checkout nor torch can be found;
    # what is found comes from the installed folder alone.
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from multigan import assets; "
            f"print('\\n'.join(str(assets.path(n)) for n in {FEATURE_NETS!r}))")
    found = _run(sys.executable, "-S", "-c", code, str(installed), cwd=installed).stdout.split()
    assert [Path(p) for p in found] == [installed / "multigan" / "assets" / n for n in FEATURE_NETS]
    for name, path in zip(FEATURE_NETS, found):
        assert Path(path).read_bytes() == assets.path(name).read_bytes()


def test_an_install_from_the_wheel_evaluates_with_its_own_feature_networks(installed):
    # What `multigan evaluate` resolves when --features is not given: `feature_net_path` must
    # point into the installed package (it used to name site-packages/assets/, which no wheel has).
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import multigan; from multigan.registry import feature_net_path; "
            "print(multigan.__file__); print(feature_net_path('image')); print(feature_net_path('mel'))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    package, *found = _run(sys.executable, "-c", code, str(installed), cwd=installed, env=env).stdout.split()
    assert Path(package) == installed / "multigan" / "__init__.py", "the checkout was imported, not the install"
    assert [Path(p) for p in found] == [installed / "multigan" / "assets" / n for n in FEATURE_NETS]


def test_a_missing_asset_names_what_is_there():
    with pytest.raises(MultiganError, match=r"absent.pt .*found: .*digit-classifier.pt.*spoken-digit-classifier.pt"):
        assets.path("absent.pt")
