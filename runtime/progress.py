"""Progress bars, live previews and Cancel, inside ComfyUI and standalone.

Inside ComfyUI a :class:`Progress` drives ``comfy.utils.ProgressBar`` (each update is also an
interrupt point and can carry a preview image). The bar belongs to the node that is executing:
ComfyUI keeps that node in a context variable (``comfy_execution.utils``), read when the bar is
made, so nodes need not pass their id. Standalone it drives a tqdm bar on stderr, previews go to
the receiver set with :func:`.previews.set_preview_sink`, and :func:`request_interrupt` (called
by the CLI on Ctrl-C, or by tests) plays the Cancel button.
"""
from __future__ import annotations

import sys
import threading
from typing import Any

from ..errors import Interrupted
from . import previews
from .host import comfy_module

_interrupt = threading.Event()


def request_interrupt() -> None:
    """Standalone Cancel: the running stage stops at its next check."""
    _interrupt.set()


def clear_interrupt() -> None:
    _interrupt.clear()


def check_interrupt() -> None:
    """Raise if the user cancelled. Call once per sampling step, VAE chunk or flow batch."""
    mm = comfy_module("comfy.model_management")
    if mm is not None:
        mm.throw_exception_if_processing_interrupted()  # raises ComfyUI's own exception
        return
    if _interrupt.is_set():
        _interrupt.clear()
        raise Interrupted("cancelled by the user")


def executing_node_id() -> str | None:
    """The id of the node ComfyUI is executing in this thread (None standalone or unknown)."""
    execution_utils = comfy_module("comfy_execution.utils")
    get_context = getattr(execution_utils, "get_executing_context", None)
    if get_context is None:  # standalone, or a ComfyUI older than the executing context
        return None
    context = get_context()
    return getattr(context, "node_id", None) if context is not None else None


class Progress:
    """One progress bar for one stage of one node (sampling steps, VAE chunks, ...)."""

    def __init__(self, total: int, desc: str = "", node_id: str | None = None, *,
                 quiet: bool | None = None):
        self.total = max(int(total), 1)
        self.value = 0
        self._comfy_bar = None
        self._tqdm = None
        utils = comfy_module("comfy.utils")
        if utils is not None:
            node_id = node_id if node_id is not None else executing_node_id()
            self._comfy_bar = utils.ProgressBar(self.total, node_id=node_id) \
                if node_id is not None else utils.ProgressBar(self.total)
        elif not (quiet if quiet is not None else not sys.stderr.isatty()):
            try:
                from tqdm import tqdm
                self._tqdm = tqdm(total=self.total, desc=desc, leave=False, dynamic_ncols=True)
            except ImportError:  # tqdm is optional standalone
                self._tqdm = None

    def update(self, n: int = 1, preview: Any | None = None) -> None:
        """Advance by ``n``; ``preview`` (a PIL image) is shown in the node when previews are on."""
        self.value = min(self.value + n, self.total)
        if preview is not None and not previews.previews_enabled():
            preview = None
        if self._comfy_bar is not None:
            if preview is not None:
                self._comfy_bar.update_absolute(self.value, self.total,
                                                ("JPEG", preview, previews.preview_size()))
            else:
                self._comfy_bar.update_absolute(self.value, self.total)
        else:
            if self._tqdm is not None:
                self._tqdm.update(n)
            sink = previews.standalone_sink()
            if preview is not None and sink is not None:
                sink(preview, self.value, self.total)
        check_interrupt()

    def close(self) -> None:
        if self._tqdm is not None:
            self._tqdm.close()
            self._tqdm = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
