"""Is this process running inside ComfyUI?

ComfyUI imports its own ``folder_paths`` and ``comfy.model_management`` before it imports any
custom node pack, so their presence in ``sys.modules`` is the signal. We never import them
ourselves to find out: a standalone run with a ComfyUI checkout on ``sys.path`` must not start
ComfyUI's device initialisation as a side effect.
"""
from __future__ import annotations

import os
import sys
from types import ModuleType

_FORCE_STANDALONE_ENV = "VIDEODIT_STANDALONE"


def inside_comfyui() -> bool:
    if os.environ.get(_FORCE_STANDALONE_ENV) == "1":
        return False
    return "comfy.model_management" in sys.modules and "folder_paths" in sys.modules


def comfy_module(name: str) -> ModuleType | None:
    """A ComfyUI module (``"folder_paths"``, ``"comfy.utils"``, ...) or None when standalone."""
    if not inside_comfyui():
        return None
    if name in sys.modules:
        return sys.modules[name]
    import importlib

    try:
        return importlib.import_module(name)
    except ImportError:
        return None
