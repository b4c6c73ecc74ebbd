"""Where model files live, inside ComfyUI and standalone.

Inside ComfyUI the lists come from ComfyUI's ``folder_paths`` (so ``extra_model_paths.yaml``
works). Standalone, the root is ``--models-dir`` (CLI) or the ``VIDEODIT_MODELS_DIR``
environment variable, with ComfyUI's sub-folder names. In both cases extra roots can be added
under a name prefix (the bundled demo models appear as ``videodit-demo/...``).

Names are always relative paths inside a folder; :func:`resolve` refuses anything that would
leave it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError
from .host import comfy_module

MODELS_DIR_ENV = "VIDEODIT_MODELS_DIR"

# ComfyUI's folder names, with the legacy names it also searches.
FOLDER_ALIASES: dict[str, tuple[str, ...]] = {
    "diffusion_models": ("diffusion_models", "unet"),
    "vae": ("vae",),
    "text_encoders": ("text_encoders", "clip"),
    "clip_vision": ("clip_vision",),
    "loras": ("loras",),
}
MODEL_EXTENSIONS = (".safetensors", ".sft", ".pt", ".pth", ".ckpt", ".bin", ".gguf")


@dataclass(frozen=True)
class _ExtraRoot:
    prefix: str
    root: Path


_models_dir_override: Path | None = None
_extra_roots: dict[str, list[_ExtraRoot]] = {}


def set_models_dir(path: str | os.PathLike | None) -> None:
    """Standalone models root (the CLI's ``--models-dir``); None returns to the env variable."""
    global _models_dir_override
    _models_dir_override = Path(path).expanduser() if path is not None else None


def add_extra_root(folder: str, root: str | os.PathLike, prefix: str) -> None:
    """List the files under ``root`` as ``<prefix><name>`` in ``folder`` (e.g. demo models)."""
    _check_folder(folder)
    prefix = prefix if prefix.endswith("/") else prefix + "/"
    entry = _ExtraRoot(prefix, Path(root))
    roots = _extra_roots.setdefault(folder, [])
    if entry not in roots:
        roots.append(entry)


def standalone_models_dir() -> Path | None:
    if _models_dir_override is not None:
        return _models_dir_override
    env = os.environ.get(MODELS_DIR_ENV)
    return Path(env).expanduser() if env else None


def list_files(folder: str) -> list[str]:
    """Model file names in ``folder``, sorted, as the loader nodes show them."""
    _check_folder(folder)
    names: set[str] = set()
    folder_paths = comfy_module("folder_paths")
    if folder_paths is not None:
        try:
            names.update(folder_paths.get_filename_list(folder))
        except KeyError:  # an older ComfyUI without this folder name
            pass
    else:
        for root in _standalone_roots(folder):
            names.update(_scan(root))
    for extra in _extra_roots.get(folder, []):
        names.update(extra.prefix + name for name in _scan(extra.root))
    return sorted(names, key=str.lower)


def resolve(folder: str, name: str, *, input: str = "model") -> Path:
    """Full path of a listed file; refuses names that escape the folder or do not exist."""
    _check_folder(folder)
    if not name or name.strip() != name:
        raise InputError(f"no file chosen (got {name!r})", input=input,
                         fix=f"pick a file from the list of models/{folder}")
    rel = _safe_relative(name, input)
    for extra in _extra_roots.get(folder, []):
        if rel.startswith(extra.prefix):
            candidate = extra.root / rel[len(extra.prefix):]
            if candidate.is_file():
                return candidate
    folder_paths = comfy_module("folder_paths")
    if folder_paths is not None:
        full = folder_paths.get_full_path(folder, rel)
        if full:
            return Path(full)
        searched = ", ".join(folder_paths.get_folder_paths(folder))
    else:
        roots = _standalone_roots(folder)
        for root in roots:
            candidate = root / rel
            if candidate.is_file():
                return candidate
        searched = ", ".join(str(r) for r in roots) or (
            f"nothing: no models folder is set (use --models-dir or {MODELS_DIR_ENV})")
    raise InputError(f"file {name!r} not found in models/{folder} (searched {searched})",
                     input=input, fix=f"put the file into models/{folder}/ or pick one from the list")


def _check_folder(folder: str) -> None:
    if folder not in FOLDER_ALIASES:
        raise ValueError(f"unknown model folder {folder!r}; expected one of {sorted(FOLDER_ALIASES)}")


def _standalone_roots(folder: str) -> list[Path]:
    base = standalone_models_dir()
    if base is None:
        return []
    return [base / alias for alias in FOLDER_ALIASES[folder] if (base / alias).is_dir()]


def _scan(root: Path) -> list[str]:
    if not root.is_dir():
        return []
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for filename in filenames:
            if filename.lower().endswith(MODEL_EXTENSIONS):
                full = Path(dirpath) / filename
                found.append(full.relative_to(root).as_posix())
    return found


def _safe_relative(name: str, input: str) -> str:
    """Reject absolute paths and ``..`` so a name can never point outside its folder."""
    posix = name.replace("\\", "/")
    parts = [p for p in posix.split("/") if p not in ("", ".")]
    if posix.startswith("/") or (len(posix) > 1 and posix[1] == ":") or ".." in parts or not parts:
        raise InputError(f"{name!r} is not a file name inside the models folder", input=input,
                         fix="pick a file from the list; paths outside the folder are not allowed")
    return "/".join(parts)


# The bundled demo model (see demo_models/README.md) is listed by every loader, in ComfyUI and
# standalone alike, as "videodit-demo/<file>", so the demo workflows run out of the box.
DEMO_PREFIX = "videodit-demo/"
DEMO_MODELS_DIR = Path(__file__).resolve().parent.parent / "demo_models"
for _folder in ("diffusion_models", "text_encoders", "vae"):
    add_extra_root(_folder, DEMO_MODELS_DIR / _folder, DEMO_PREFIX)
