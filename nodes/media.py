"""Nodes of the 'media' stage."""
from __future__ import annotations

NODE_CLASSES: list[type] = []
