"""Whether saved files may carry the prompt and workflow.

Inside ComfyUI they may not when it runs with ``--disable-metadata``: our savers follow the
switch ComfyUI's own savers follow. Standalone there is no such switch, so they always do.
"""
from __future__ import annotations

from .host import comfy_module


def embed_workflow() -> bool:
    cli_args = comfy_module("comfy.cli_args")
    return not getattr(getattr(cli_args, "args", None), "disable_metadata", False)
