"""The input, output and temp folders media nodes read from and write to.

Inside ComfyUI they are ComfyUI's own (``folder_paths.get_input_directory()`` and friends).
Standalone they are ``VIDEODIT_INPUT_DIR`` / ``VIDEODIT_OUTPUT_DIR`` / ``VIDEODIT_TEMP_DIR``
(defaults ``./input``, ``./output``, ``./temp``), or what the CLI sets with the setters here.

Names given by users are relative paths inside a folder, optionally annotated the way ComfyUI
annotates them (``clip.mp4 [output]``); :func:`resolve_input` refuses anything that would leave
the folder. :func:`reserve_output_name` numbers saved files like ComfyUI's savers
(``<prefix>_00001_.mp4``, counting on past existing files); the savers in ``media/`` take its
names in turn, skipping any taken meanwhile, and never replace anything.
"""
from __future__ import annotations

import itertools
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..errors import InputError
from .host import comfy_module
from .model_folders import DEMO_PREFIX

FOLDER_ENV = {"input": "VIDEODIT_INPUT_DIR", "output": "VIDEODIT_OUTPUT_DIR",
              "temp": "VIDEODIT_TEMP_DIR"}
_overrides: dict[str, Path | None] = {"input": None, "output": None, "temp": None}
_ANNOTATION = re.compile(r"^(?P<name>.*?)\s*\[(?P<kind>input|output|temp)\]$")


def set_input_dir(path: str | os.PathLike | None) -> None:
    """Standalone input folder (None returns to ``VIDEODIT_INPUT_DIR`` or ``./input``)."""
    _overrides["input"] = Path(path).expanduser() if path is not None else None


def set_output_dir(path: str | os.PathLike | None) -> None:
    """Standalone output folder (None returns to ``VIDEODIT_OUTPUT_DIR`` or ``./output``)."""
    _overrides["output"] = Path(path).expanduser() if path is not None else None


def set_temp_dir(path: str | os.PathLike | None) -> None:
    """Standalone temp folder (None returns to ``VIDEODIT_TEMP_DIR`` or ``./temp``)."""
    _overrides["temp"] = Path(path).expanduser() if path is not None else None


def get_input_dir() -> Path:
    return _folder("input")


def get_output_dir() -> Path:
    return _folder("output")


def get_temp_dir() -> Path:
    return _folder("temp")


def _folder(kind: str) -> Path:
    folder_paths = comfy_module("folder_paths")
    if folder_paths is not None:
        getter = getattr(folder_paths, f"get_{kind}_directory")
        return Path(getter()).resolve()
    override = _overrides[kind]
    if override is not None:
        return override.resolve()
    env = os.environ.get(FOLDER_ENV[kind])
    return (Path(env).expanduser() if env else Path.cwd() / kind).resolve()


# The demo workflows' input media ship with the pack and are listed next to the input folder's
# files as "videodit-demo/<file>", so those workflows run without copying anything.
DEMO_INPUT_PREFIX = DEMO_PREFIX  # the demo model files' prefix too
DEMO_INPUT_DIR = Path(__file__).resolve().parent.parent / "example_workflows" / "input"


def list_input_files(extensions: tuple[str, ...]) -> list[str]:
    """Files directly in the input folder with one of ``extensions`` (as ComfyUI lists them),
    then the bundled demo inputs."""
    names = sorted(_files_in(get_input_dir(), extensions), key=str.lower)
    return names + sorted(DEMO_INPUT_PREFIX + n for n in _files_in(DEMO_INPUT_DIR, extensions))


def _files_in(root: Path, extensions: tuple[str, ...]) -> list[str]:
    try:
        return [entry.name for entry in os.scandir(root)
                if entry.is_file() and entry.name.lower().endswith(extensions)
                and not entry.name.startswith(".")]
    except FileNotFoundError:
        return []


def resolve_input(name: str, *, input: str = "file") -> Path:
    """Full path of a file named relative to the input folder (or an annotated folder).

    Absolute paths and ``..`` are refused, symlinks that lead outside the folder too.
    """
    if not isinstance(name, str) or not name.strip():
        raise InputError(f"no file chosen (got {name!r})", input=input,
                         fix="pick a file from the list or upload one into ComfyUI's input folder")
    match = _ANNOTATION.match(name.strip())
    kind, rel = (match["kind"], match["name"]) if match else ("input", name.strip())
    root = _folder(kind)
    if kind == "input" and rel.startswith(DEMO_INPUT_PREFIX) and \
            (DEMO_INPUT_DIR / rel[len(DEMO_INPUT_PREFIX):]).is_file():
        kind, root, rel = "bundled demo input", DEMO_INPUT_DIR.resolve(), rel[len(DEMO_INPUT_PREFIX):]
    posix = rel.replace("\\", "/")
    parts = [p for p in posix.split("/") if p not in ("", ".")]
    if posix.startswith("/") or (len(posix) > 1 and posix[1] == ":") or ".." in parts or not parts:
        raise InputError(f"{name!r} is not a file name inside the {kind} folder", input=input,
                         fix=f"give a name relative to {root} (no absolute paths, no '..')")
    full = root.joinpath(*parts)
    if not full.is_file():
        raise InputError(f"file {name!r} not found in the {kind} folder {root}", input=input,
                         fix=f"put the file into {root} or pick one from the list")
    real = full.resolve()
    if not real.is_relative_to(root):
        raise InputError(f"{name!r} links to {real}, outside the {kind} folder", input=input,
                         fix=f"copy the file into {root} instead of linking to it")
    return real


@dataclass(frozen=True)
class OutputName:
    """A numbered output name: ``folder / f"{stem}_{counter:05}_{suffix}"``."""

    folder: Path
    subfolder: str  # relative to the output folder, "/"-separated, "" for the folder itself
    stem: str
    counter: int
    suffix: str

    @property
    def filename(self) -> str:
        return self._numbered(self.counter)

    @property
    def path(self) -> Path:
        return self.folder / self.filename

    def filenames(self) -> Iterator[str]:
        """This name, then the higher numbers: what a saver tries in turn if one got taken."""
        return map(self._numbered, itertools.count(self.counter))

    def _numbered(self, counter: int) -> str:
        return f"{self.stem}_{counter:05}_{self.suffix}"


def reserve_output_name(prefix: str, suffix: str, *, width: int = 0, height: int = 0,
                        kind: str = "output", input: str = "filename_prefix") -> OutputName:
    """The next free numbered name for ``prefix`` (which may contain ``sub/folders``).

    ``%width%``, ``%height%``, ``%year%`` ... ``%second%`` are expanded as ComfyUI does. The
    counter continues after the largest one already in the folder, whatever the extension, so
    a clip and its PNG-sequence twin never share a number.
    """
    root = _folder(kind)
    prefix = _expand_variables(prefix or "VideoDiT", width, height)
    parts = _prefix_parts(prefix, kind, input)
    stem = parts[-1]
    subfolder = "/".join(parts[:-1])
    folder = root.joinpath(*parts[:-1])
    folder.mkdir(parents=True, exist_ok=True)
    if not folder.resolve().is_relative_to(root):
        raise InputError(f"filename prefix {prefix!r} leads outside the {kind} folder",
                         input=input, fix="use a sub-folder that is not a link elsewhere")
    counter = 1 + max((_counter_of(entry, stem) for entry in os.listdir(folder)), default=0)
    return OutputName(folder, subfolder, stem, counter, suffix)


def _prefix_parts(prefix: str, kind: str, input: str) -> list[str]:
    posix = prefix.replace("\\", "/").strip()
    parts = [p for p in posix.split("/") if p not in ("", ".")]
    if posix.startswith("/") or (len(posix) > 1 and posix[1] == ":") or ".." in parts or not parts:
        raise InputError(f"filename prefix {prefix!r} would save outside the {kind} folder",
                         input=input, fix="use a plain name, optionally with sub/folders, no '..'")
    return parts


def check_output_prefix(prefix: str, *, kind: str = "output",
                        input: str = "filename_prefix") -> None:
    """What :func:`reserve_output_name` would refuse, checked without creating anything (for
    validation before a render): a prefix leading outside the folder, a sub-folder that is a
    link elsewhere or a file, or a folder that cannot be written."""
    root = _folder(kind)
    parts = _prefix_parts(_expand_variables(prefix or "VideoDiT", 0, 0), kind, input)
    folder = root.joinpath(*parts[:-1])
    existing = folder  # the deepest part that exists already, at most the root
    while not existing.exists() and existing != root:
        existing = existing.parent
    if existing.exists() and not existing.resolve().is_relative_to(root):
        raise InputError(f"filename prefix {prefix!r} leads outside the {kind} folder",
                         input=input, fix="use a sub-folder that is not a link elsewhere")
    while not existing.exists() and existing != existing.parent:  # the root is made first
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise InputError(f"{existing} is a file, so the {kind} folder {folder} cannot be made",
                         input=input, fix="use another sub-folder name in filename_prefix")
    if existing.exists() and not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"the {kind} folder {existing} is not writable", input=input,
                         fix=f"make it writable or point the {kind} folder elsewhere "
                         "(ComfyUI: --output-directory; standalone: --output-dir or "
                         "VIDEODIT_OUTPUT_DIR)")


def _counter_of(filename: str, stem: str) -> int:
    """``7`` for ``<stem>_00007_...`` (any extension, file or folder), else 0."""
    head = stem + "_"
    if os.path.normcase(filename[:len(head)]) != os.path.normcase(head):
        return 0
    digits = filename[len(head):].split("_", 1)
    if len(digits) < 2 or not digits[0].isdigit():
        return 0
    return int(digits[0])


def _expand_variables(prefix: str, width: int, height: int) -> str:
    if "%" not in prefix:
        return prefix
    now = time.localtime()
    values = {"width": width, "height": height, "year": now.tm_year,
              "month": f"{now.tm_mon:02}", "day": f"{now.tm_mday:02}",
              "hour": f"{now.tm_hour:02}", "minute": f"{now.tm_min:02}",
              "second": f"{now.tm_sec:02}"}
    for key, value in values.items():
        prefix = prefix.replace(f"%{key}%", str(value))
    return prefix
