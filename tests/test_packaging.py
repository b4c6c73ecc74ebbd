"""pyproject.toml ships the whole pack: every code folder and every data file.

The repository root is the package `comfyui_videodit` (package-dir "."), so setuptools cannot
discover the subpackages on its own and they are listed by hand. A folder left out of that list
still imports from a checkout and in editable mode, and only breaks a regular pip install.
"""
from __future__ import annotations

import fnmatch
import os
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "comfyui_videodit"
DATA_FOLDERS = ("example_workflows", "demo_models")
SKIPPED_DIRS = {"build", "dist", "tests", "bench", "scripts", "docs", "output", "models",
                "__pycache__"}


def setuptools_config():
    with open(ROOT / "pyproject.toml", "rb") as fh:
        return tomllib.load(fh)["tool"]["setuptools"]


def package_name(folder: Path) -> str:
    rel = folder.relative_to(ROOT)
    return ".".join((PACKAGE, *rel.parts)) if rel.parts else PACKAGE


def code_packages():
    """Folders holding an __init__.py, as dotted names."""
    found = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = sorted(d for d in dirnames
                             if not d.startswith(".") and d not in SKIPPED_DIRS
                             and not d.endswith(".egg-info"))
        if "__init__.py" in filenames:
            found.append(package_name(Path(dirpath)))
    return found


def data_folders():
    """Every folder under the shipped data folders, as dotted names."""
    found = []
    for top in DATA_FOLDERS:
        for dirpath, dirnames, _ in os.walk(ROOT / top):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__pycache__")
            found.append(package_name(Path(dirpath)))
    return found


def test_every_code_folder_is_listed():
    listed = set(setuptools_config()["packages"])
    missing = [name for name in code_packages() if name not in listed]
    assert PACKAGE in code_packages()
    assert not missing, f"add {missing} to [tool.setuptools] packages in pyproject.toml"


def test_every_data_folder_is_listed():
    # A data folder left out of `packages` prints a long setuptools warning on every install.
    listed = set(setuptools_config()["packages"])
    missing = [name for name in data_folders() if name not in listed]
    assert not missing, f"add {missing} to [tool.setuptools] packages in pyproject.toml"


def test_listed_packages_exist():
    config = setuptools_config()
    assert config["package-dir"] == {PACKAGE: "."}
    for name in config["packages"]:
        folder = ROOT.joinpath(*name.split(".")[1:])
        assert folder.is_dir(), f"{name} is listed in pyproject.toml but {folder} does not exist"


@pytest.mark.parametrize("top", DATA_FOLDERS)
def test_package_data_covers_every_data_file(top):
    patterns = setuptools_config()["package-data"]
    uncovered = []
    for path in sorted((ROOT / top).rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts or path.name.startswith("."):
            continue
        owner = package_name(path.parent)
        if not any(fnmatch.fnmatch(path.name, p) for p in patterns.get(owner, [])):
            uncovered.append(str(path.relative_to(ROOT)))
    assert not uncovered, f"not shipped by [tool.setuptools.package-data]: {uncovered}"


def test_readme_is_shipped_and_license_is_spdx():
    with open(ROOT / "pyproject.toml", "rb") as fh:
        project = tomllib.load(fh)["project"]
    assert "README.md" in setuptools_config()["package-data"][PACKAGE]
    # The table form ({text = ...}) is deprecated in setuptools and warns on every build.
    assert isinstance(project["license"], str)
