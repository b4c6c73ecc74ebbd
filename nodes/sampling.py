"""Nodes of the 'sampling' stage."""
from __future__ import annotations

NODE_CLASSES: list[type] = []
