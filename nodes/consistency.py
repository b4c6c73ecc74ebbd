"""Nodes of the 'consistency' stage."""
from __future__ import annotations

NODE_CLASSES: list[type] = []
