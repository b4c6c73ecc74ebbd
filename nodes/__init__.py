"""All VideoDiT nodes. Each stage module lists its classes in ``NODE_CLASSES``.

Node ids and the order of widget inputs are a public API: saved workflows store them. Never
rename or reorder; new inputs go at the end.
"""
from __future__ import annotations

from . import (clip_vision, conditioning, consistency, loaders, long_video, lora, media, memory,
               qc, sampling, speed, step_cache, text, vace, vae)
from ._base import mappings

_STAGE_MODULES = (loaders, lora, memory, text, clip_vision, vae, conditioning, vace, sampling,
                  long_video, step_cache, speed, media, consistency, qc)

ALL_NODE_CLASSES = [cls for module in _STAGE_MODULES for cls in module.NODE_CLASSES]
NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = mappings(ALL_NODE_CLASSES)
