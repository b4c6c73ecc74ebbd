"""The process-wide prompt cache and where its disk level lives.

One :class:`..core.prompt_cache.PromptCache` for the whole process, so it survives the text
encoder loader node re-running; its disk folder is ComfyUI's user folder inside ComfyUI.
"""
from __future__ import annotations

import os
from pathlib import Path

from ..core.prompt_cache import PromptCache
from .host import comfy_module

CACHE_DIR_ENV = "VIDEODIT_PROMPT_CACHE_DIR"


def default_disk_dir() -> Path:
    """``$VIDEODIT_PROMPT_CACHE_DIR``; else ComfyUI's user folder; else the user cache folder."""
    env = os.environ.get(CACHE_DIR_ENV)
    if env:
        return Path(env).expanduser()
    folder_paths = comfy_module("folder_paths")
    if folder_paths is not None and hasattr(folder_paths, "get_user_directory"):
        return Path(folder_paths.get_user_directory()) / "videodit" / "prompt_cache"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "comfyui_videodit" / "prompt_cache"


PROMPT_CACHE = PromptCache()
