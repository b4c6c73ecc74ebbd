"""Nodes of the 'text' stage."""
from __future__ import annotations

NODE_CLASSES: list[type] = []
