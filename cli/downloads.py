"""Downloaded outputs: find the files in a node's UI output, place them without overwriting."""
from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any


def file_entries(ui: Any):
    """``{filename, subfolder, type}`` dicts anywhere in a node's UI output."""
    if isinstance(ui, dict):
        if "filename" in ui and isinstance(ui["filename"], str):
            yield ui
            return
        for value in ui.values():
            yield from file_entries(value)
    elif isinstance(ui, list):
        for value in ui:
            yield from file_entries(value)


def write_new_file(folder: Path, name: str, data: bytes) -> Path:
    """Write ``data`` as ``folder/name`` without replacing anything (see :func:`place_new_file`)."""
    temp = folder / f".{name}.{uuid.uuid4().hex[:8]}.part"
    temp.write_bytes(data)
    return place_new_file(folder, name, temp)


def place_new_file(folder: Path, name: str, temp: Path) -> Path:
    """Move the finished ``temp`` file to ``folder/name`` without ever replacing a file: an
    existing file with the same bytes is reused (a resumed download), another one makes this
    ``name (1).ext``. ``temp`` is always removed."""
    stem, suffix = os.path.splitext(name)
    try:
        for number in range(10000):
            candidate = folder / (name if number == 0 else f"{stem} ({number}){suffix}")
            try:
                os.link(temp, candidate)  # fails if the name exists: never overwrites
                return candidate
            except FileExistsError:
                if _same_bytes(candidate, temp):
                    return candidate
        raise FileExistsError(f"no free file name for {name} in {folder}")
    finally:
        temp.unlink(missing_ok=True)


def _same_bytes(a: Path, b: Path) -> bool:
    if a.stat().st_size != b.stat().st_size:
        return False
    with a.open("rb") as first, b.open("rb") as second:
        while True:
            block = first.read(1 << 20)
            if block != second.read(1 << 20):
                return False
            if not block:
                return True
