"""Nodes of the 'vae' stage."""
from __future__ import annotations

NODE_CLASSES: list[type] = []
