"""Nodes of the 'loaders' stage."""
from __future__ import annotations

NODE_CLASSES: list[type] = []
