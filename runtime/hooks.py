"""The :class:`..core.hooks.Hooks` that nodes and the CLI hand to library calls.

Inside ComfyUI they drive ``comfy.utils.ProgressBar`` (each update is an interrupt point and
may carry a preview) and ComfyUI's Cancel; standalone a tqdm bar, the preview sink and the
Cancel flag the CLI sets on Ctrl-C. Built per call, so a preview setting changed between runs
applies to the next one.
"""
from __future__ import annotations

from ..core.hooks import Hooks
from . import previews
from .progress import Progress, check_interrupt


def host_hooks(node_id: str | None = None) -> Hooks:
    def progress(total: int, desc: str = "") -> Progress:
        return Progress(total, desc, node_id)

    return Hooks(progress=progress, check_interrupt=check_interrupt,
                 previews=previews.previews_enabled())
