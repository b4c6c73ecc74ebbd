"""Errors that tell the user which node and input is wrong and how to fix it.

Library code raises :class:`InputError` naming the input and the fix; the node layer fills in the
node's display name (see ``nodes/_base.py``), so every message reads
``VideoDiT Model Loader · model_name: <problem>. Fix: <fix>``.
"""
from __future__ import annotations


class VideoDiTError(Exception):
    """Base class of every error this pack raises on purpose."""


class InputError(VideoDiTError, ValueError):
    """A bad input value or file. Carries the node, the input and the fix separately."""

    def __init__(self, problem: str, *, input: str | None = None, fix: str | None = None,
                 node: str | None = None):
        self.problem = problem
        self.input = input
        self.fix = fix
        self.node = node
        super().__init__(self._render())

    def _render(self) -> str:
        where = " · ".join(part for part in (self.node, self.input) if part)
        text = f"{where}: {self.problem}" if where else self.problem
        if self.fix:
            text = f"{text.rstrip('.')}. Fix: {self.fix}"
        return text

    def with_node(self, node: str) -> "InputError":
        """Fill in the node name (kept if already set) and refresh the message."""
        if self.node is None:
            self.node = node
            self.args = (self._render(),)
        return self

    def __str__(self) -> str:  # args may have been refreshed by with_node
        return self.args[0] if self.args else self._render()


class Interrupted(VideoDiTError):
    """The user pressed Cancel (inside ComfyUI this is ComfyUI's own interrupt exception)."""
