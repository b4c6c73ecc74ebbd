"""Put a finished save in place under the first free name, never replacing anything.

Savers write a file under a hidden temporary name and publish it only when complete, so no
final name ever holds half a file. The caller offers names in order of preference (the nodes
offer ``<prefix>_00001_.mp4``, ``<prefix>_00002_.mp4``, ...); one taken meanwhile, by another
process or another save, is skipped rather than overwritten.
"""
from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Iterable


def temporary_path(folder: Path, suffix: str) -> Path:
    """A fresh hidden name in ``folder`` to write a file under until it is complete."""
    return folder / f".videodit-{uuid.uuid4().hex[:8]}{suffix}.partial"


def publish(temporary: Path, folder: Path, filenames: Iterable[str]) -> Path:
    """Move a finished file to the first of ``filenames`` that is free in ``folder``.

    A hard link fails when the target exists, so a file written meanwhile is never replaced;
    where links are unsupported we fall back to a checked rename.
    """
    for filename in filenames:
        target = folder / filename
        try:
            os.link(temporary, target)
        except FileExistsError:
            continue
        except OSError:  # no hard links on this file system
            if target.exists():
                continue
            os.rename(temporary, target)
            return target
        os.unlink(temporary)
        return target
    raise FileExistsError(f"every name offered for {temporary.name} in {folder} is taken")


def claim_folder(folder: Path, filenames: Iterable[str]) -> Path:
    """Create the first of ``filenames`` that is free in ``folder`` as a new folder; it is ours."""
    for filename in filenames:
        try:
            (folder / filename).mkdir()  # atomic: fails if anything already has this name
        except FileExistsError:
            continue
        return folder / filename
    raise FileExistsError(f"every folder name offered in {folder} is taken")
