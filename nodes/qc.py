"""Nodes of the 'qc' stage."""
from __future__ import annotations

NODE_CLASSES: list[type] = []
