"""Nodes of the 'clip_vision' stage."""
from __future__ import annotations

NODE_CLASSES: list[type] = []
