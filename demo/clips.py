"""Clip specifications, their rendering, seeded sampling and the held-out combinations.

A clip is 17 frames of 64x64 at 16 fps by default: one or two shapes in named colours on a plain
or gradient background, each moving in a direction, bouncing, growing or standing still, slowly
or fast. Everything follows from a seed: ``make_clip(seed)`` always returns the same pixels and
caption. Some (colour, shape, motion) combinations never appear in training clips and are kept
for evaluating whether a model generalises (:func:`is_held_out`).

Geometry: x grows to the right, y grows downwards (image rows), so "up" means y decreasing.
"""
from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass, field

import torch

from .palette import BACKGROUND_COLOURS, GRADIENT_SPREAD, OBJECT_COLOURS

FRAMES, HEIGHT, WIDTH, FPS = 17, 64, 64, 16

SHAPES = ("circle", "square", "triangle", "diamond")
LINEAR_MOTIONS: dict[str, tuple[int, int]] = {  # unit step per frame (dx, dy)
    "left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1),
    "up-left": (-1, -1), "up-right": (1, -1), "down-left": (-1, 1), "down-right": (1, 1),
}
MOTIONS = tuple(LINEAR_MOTIONS) + ("bounce", "grow", "still")
SPEEDS = ("slow", "fast")
# Pixels per frame along each moving axis.
SPEED_STEP = {"slow": 1.0, "fast": 2.0}
# Bounces per clip and their height in pixels; growth as the final/initial size ratio.
BOUNCES = {"slow": (1, 12.0), "fast": (2, 18.0)}
GROWTH = {"slow": 1.6, "fast": 2.2}
# Two-object clips keep each object in its own horizontal band, moving only sideways or in
# place, so the two never overlap.
TWO_OBJECT_MOTIONS = ("left", "right", "grow", "still")
BANDS = ((8.0, 22.0), (42.0, 56.0))  # y ranges for the centre of the top and bottom object

HELD_OUT_FRACTION = 0.12


@dataclass(frozen=True)
class ObjectSpec:
    colour: str
    shape: str
    motion: str
    speed: str
    size: float     # half-size in pixels (circle radius, half the square's side)
    start: tuple[float, float]  # centre at frame 0 (x, y)

    def centre(self, t: int, frames: int) -> tuple[float, float]:
        x0, y0 = self.start
        if self.motion in LINEAR_MOTIONS:
            dx, dy = LINEAR_MOTIONS[self.motion]
            step = SPEED_STEP[self.speed]
            return x0 + dx * step * t, y0 + dy * step * t
        if self.motion == "bounce":
            count, height = BOUNCES[self.speed]
            phase = math.pi * count * t / (frames - 1)
            return x0, y0 - height * abs(math.sin(phase))
        return x0, y0

    def half_size(self, t: int, frames: int) -> float:
        if self.motion == "grow":
            return self.size * (1.0 + (GROWTH[self.speed] - 1.0) * t / (frames - 1))
        return self.size


@dataclass(frozen=True)
class ClipSpec:
    background: str
    gradient: bool
    objects: tuple[ObjectSpec, ...]
    frames: int = FRAMES
    height: int = HEIGHT
    width: int = WIDTH
    fps: int = FPS


@dataclass
class Clip:
    spec: ClipSpec
    caption: str
    video: torch.Tensor = field(repr=False)  # [frames, H, W, 3] float 0..1 (ComfyUI IMAGE)


def is_held_out(colour: str, shape: str, motion: str) -> bool:
    """Whether this combination is kept out of training (a fixed ~12% of all combinations).

    Decided by a hash so the split never changes when colours or shapes are added elsewhere.
    """
    digest = hashlib.sha256(f"{colour}|{shape}|{motion}".encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32 < HELD_OUT_FRACTION


def held_out_combinations() -> list[tuple[str, str, str]]:
    return [(c, s, m) for c in OBJECT_COLOURS for s in SHAPES for m in MOTIONS if is_held_out(c, s, m)]


def sample_spec(rng: random.Random, split: str = "train", *, two_objects: float = 0.25) -> ClipSpec:
    """A random clip; ``split="train"`` avoids held-out combinations, ``"eval"`` uses only them,
    ``"all"`` draws like ``"train"`` but from every combination.

    The held-out combinations test whether the DiT composes words it learned apart; the VAE is
    a codec, not a reader of captions, so its decoder may see every combination (``"all"``).

    Evaluation clips have one object (the held-out combination); ``two_objects`` is the share of
    training clips with a second object.
    """
    if split not in ("train", "eval", "all"):
        raise ValueError(f"split must be 'train', 'eval' or 'all', got {split!r}")
    background = rng.choice(sorted(BACKGROUND_COLOURS))
    gradient = rng.random() < 0.5
    if split == "eval":
        colour, shape, motion = rng.choice(held_out_combinations())
        return ClipSpec(background, gradient, (_place(rng, colour, shape, motion, band=None),))
    if rng.random() < two_objects:
        colours = rng.sample(sorted(OBJECT_COLOURS), 2)
        objects = []
        for colour, band in zip(colours, rng.sample([0, 1], 2)):
            shape, motion = _train_choice(rng, colour, TWO_OBJECT_MOTIONS, split)
            objects.append(_place(rng, colour, shape, motion, band=band))
        return ClipSpec(background, gradient, tuple(objects))
    colour = rng.choice(sorted(OBJECT_COLOURS))
    shape, motion = _train_choice(rng, colour, MOTIONS, split)
    return ClipSpec(background, gradient, (_place(rng, colour, shape, motion, band=None),))


def _train_choice(rng: random.Random, colour: str, motions: tuple[str, ...],
                  split: str = "train") -> tuple[str, str]:
    while True:
        shape, motion = rng.choice(SHAPES), rng.choice(motions)
        if split == "all" or not is_held_out(colour, shape, motion):
            return shape, motion


def _place(rng: random.Random, colour: str, shape: str, motion: str, band: int | None) -> ObjectSpec:
    """Pick speed, size and a start so the whole path stays inside the frame."""
    speed = "slow" if motion == "still" else rng.choice(SPEEDS)
    size = rng.uniform(5.0, 7.0) if band is None else rng.uniform(4.5, 5.5)
    if motion == "grow":
        size /= GROWTH[speed] ** 0.5  # so the grown shape still fits
    probe = ObjectSpec(colour, shape, motion, speed, size, (0.0, 0.0))
    xs, ys = zip(*(probe.centre(t, FRAMES) for t in range(FRAMES)))
    reach = max(probe.half_size(t, FRAMES) for t in range(FRAMES)) + 2.0
    x_low, x_high = reach - min(xs), WIDTH - reach - max(xs)
    if band is None:
        y_low, y_high = reach - min(ys), HEIGHT - reach - max(ys)
    else:
        y_low, y_high = max(BANDS[band][0], reach), min(BANDS[band][1], HEIGHT - reach)
    start = (rng.uniform(x_low, x_high), rng.uniform(y_low, y_high))
    return ObjectSpec(colour, shape, motion, speed, size, start)


def render(spec: ClipSpec, *, supersample: int = 2) -> torch.Tensor:
    """``[frames, H, W, 3]`` float 0..1; edges anti-aliased by ``supersample``² samples per pixel."""
    s = supersample
    ys = (torch.arange(spec.height * s, dtype=torch.float32) + 0.5) / s
    xs = (torch.arange(spec.width * s, dtype=torch.float32) + 0.5) / s
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    background = _background(spec, grid_y)
    frames = []
    for t in range(spec.frames):
        image = background.clone()
        for obj in spec.objects:
            cx, cy = obj.centre(t, spec.frames)
            inside = _shape_mask(obj.shape, grid_x - cx, grid_y - cy, obj.half_size(t, spec.frames))
            colour = torch.tensor(OBJECT_COLOURS[obj.colour], dtype=torch.float32) / 255.0
            image[inside] = colour
        frames.append(image)
    video = torch.stack(frames)  # [T, H*s, W*s, 3]
    if s > 1:
        video = video.reshape(spec.frames, spec.height, s, spec.width, s, 3).mean(dim=(2, 4))
    return video


def _background(spec: ClipSpec, grid_y: torch.Tensor) -> torch.Tensor:
    base = torch.tensor(BACKGROUND_COLOURS[spec.background], dtype=torch.float32)
    if spec.gradient:  # lighter at the top, darker at the bottom, same named colour throughout
        ramp = 1.0 - 2.0 * grid_y / spec.height
        image = base + GRADIENT_SPREAD * ramp[..., None]
    else:
        image = base.expand(*grid_y.shape, 3).clone()
    return image.clamp(0, 255) / 255.0


def _shape_mask(shape: str, dx: torch.Tensor, dy: torch.Tensor, r: float) -> torch.Tensor:
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        half = r * 0.886  # same area as the circle of radius r
        return (dx.abs() <= half) & (dy.abs() <= half)
    if shape == "diamond":
        return dx.abs() + dy.abs() <= r * 1.253
    if shape == "triangle":  # pointing up, centroid at the centre
        h = r * 2.0
        top, bottom = -h * 2 / 3, h / 3
        rel = (dy - top) / (bottom - top)  # 0 at the apex, 1 at the base
        return (rel >= 0) & (rel <= 1) & (dx.abs() <= rel * h / math.sqrt(3))
    raise ValueError(f"unknown shape {shape!r}; known: {SHAPES}")


def make_clip(seed: int, split: str = "train") -> Clip:
    """The clip for ``seed``: spec, caption and pixels, identical on every run and machine."""
    from .captions import caption

    rng = random.Random(seed)
    spec = sample_spec(rng, split)
    return Clip(spec=spec, caption=caption(spec, rng), video=render(spec))
