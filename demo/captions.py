"""Captions for clips: a small grammar with synonyms, so a model learns meanings, not strings.

"a red ball rolls to the left quickly over a dark blue background",
"an orange box at the top slowly slides rightwards and a cyan dot at the bottom stays still,
on a softly shaded gray background". Colour and background names are never replaced by
synonyms: they are what the detector checks.
"""
from __future__ import annotations

import random

from .clips import BANDS, ClipSpec, LINEAR_MOTIONS, ObjectSpec

SHAPE_WORDS = {
    "circle": ("circle", "ball", "disc", "dot"),
    "square": ("square", "box", "block"),
    "triangle": ("triangle",),
    "diamond": ("diamond", "rhombus"),
}
MOVE_VERBS = ("moves", "slides", "drifts", "glides")
ROLL_VERBS = ("rolls",)  # only for round things
DIRECTION_WORDS = {
    "left": ("to the left", "leftwards", "towards the left"),
    "right": ("to the right", "rightwards", "towards the right"),
    "up": ("upwards", "up", "towards the top"),
    "down": ("downwards", "down", "towards the bottom"),
    "up-left": ("up and to the left", "diagonally up-left", "towards the top left"),
    "up-right": ("up and to the right", "diagonally up-right", "towards the top right"),
    "down-left": ("down and to the left", "diagonally down-left", "towards the bottom left"),
    "down-right": ("down and to the right", "diagonally down-right", "towards the bottom right"),
}
SPEED_WORDS = {"slow": ("slowly", "gently"), "fast": ("quickly", "fast", "rapidly")}
BOUNCE_PHRASES = ("bounces", "bounces up and down", "hops")
GROW_PHRASES = ("grows", "gets bigger", "expands")
STILL_PHRASES = ("stays still", "sits still", "does not move", "rests in place")
BACKGROUND_PHRASES = ("over a {} background", "on a {} background", "against a {} backdrop")
GRADIENT_PHRASES = ("over a {} gradient background", "on a softly shaded {} background",
                    "against a {} gradient")


def caption(spec: ClipSpec, rng: random.Random) -> str:
    parts = [_object_phrase(obj, rng, position=_position(obj) if len(spec.objects) > 1 else None)
             for obj in spec.objects]
    phrases = GRADIENT_PHRASES if spec.gradient else BACKGROUND_PHRASES
    background = rng.choice(phrases).format(spec.background)
    if len(parts) == 1:
        return f"{parts[0]} {background}"
    return f"{parts[0]} and {parts[1]}, {background}"


def _position(obj: ObjectSpec) -> str:
    return "at the top" if obj.start[1] <= BANDS[0][1] else "at the bottom"


def _object_phrase(obj: ObjectSpec, rng: random.Random, position: str | None) -> str:
    noun = rng.choice(SHAPE_WORDS[obj.shape])
    article = "an" if obj.colour[0] in "aeiou" else "a"
    subject = f"{article} {obj.colour} {noun}" + (f" {position}" if position else "")
    return f"{subject} {_motion_phrase(obj, noun, rng)}"


def _motion_phrase(obj: ObjectSpec, noun: str, rng: random.Random) -> str:
    speed = rng.choice(SPEED_WORDS[obj.speed])
    if obj.motion in LINEAR_MOTIONS:
        verbs = MOVE_VERBS + (ROLL_VERBS if noun in ("ball", "disc", "circle") else ())
        action = f"{rng.choice(verbs)} {rng.choice(DIRECTION_WORDS[obj.motion])}"
    elif obj.motion == "bounce":
        action = rng.choice(BOUNCE_PHRASES)
    elif obj.motion == "grow":
        action = rng.choice(GROW_PHRASES)
    else:
        return rng.choice(STILL_PHRASES)
    return f"{speed} {action}" if rng.random() < 0.5 else f"{action} {speed}"
