"""Nodes of the 'conditioning' stage."""
from __future__ import annotations

NODE_CLASSES: list[type] = []
