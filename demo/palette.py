"""Named colours of the synthetic world: what objects and backgrounds can be.

Object and background colours are disjoint sets, far apart in RGB, so a pixel's nearest named
colour says whether it belongs to an object or to the background even in a blurry generated
clip. Values are 0..255 sRGB.
"""
from __future__ import annotations

OBJECT_COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 140, 20),
    "yellow": (240, 225, 40),
    "green": (40, 200, 60),
    "cyan": (40, 215, 225),
    "blue": (40, 90, 240),
    "purple": (150, 60, 210),
    "pink": (245, 120, 190),
}

BACKGROUND_COLOURS: dict[str, tuple[int, int, int]] = {
    "black": (12, 12, 12),
    "white": (240, 240, 240),
    "gray": (128, 128, 128),
    "dark blue": (16, 24, 96),
    "dark green": (20, 90, 40),
    "brown": (100, 60, 30),
}

# How far a gradient background's ends move from the named colour (each channel, up and down).
GRADIENT_SPREAD = 22

ALL_COLOURS = {**OBJECT_COLOURS, **BACKGROUND_COLOURS}
