"""Read a clip back into words: background colour, object colours and how each object moves.

Written for the synthetic domain, to score clips a model generated from captions:
1. every pixel gets the nearest named colour, or none when it is far from all of them
   (anti-aliased edges, blur, artefacts);
2. the background is the most common background colour along the frame border;
3. each object colour that covers enough pixels is an object; its centroid and area are
   tracked frame by frame;
4. the track becomes a motion: net displacement gives a direction (8 sectors) and speed, a
   large area increase is growing, up-and-down with no net displacement is bouncing.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .clips import LINEAR_MOTIONS, SPEED_STEP
from .palette import BACKGROUND_COLOURS, OBJECT_COLOURS

# A pixel farther than this (RGB distance, 0..255 units) from every named colour is unlabelled.
MATCH_DISTANCE = 70.0
# An object colour must cover at least this many pixels in a typical frame to count, of which
# some are solid (all four neighbours the same colour): an anti-aliased edge between two
# colours can look like a third colour, but only as a thin ring.
MIN_OBJECT_PIXELS = 12
MIN_SOLID_PIXELS = 4
# Motion thresholds in pixels (64x64 clips).
STILL_DISPLACEMENT = 4.0
BOUNCE_RANGE = 5.0
GROW_AREA_RATIO = 1.4

_NAMES = list(OBJECT_COLOURS) + list(BACKGROUND_COLOURS)
_IS_OBJECT = torch.tensor([name in OBJECT_COLOURS for name in _NAMES])
_PALETTE = torch.tensor([OBJECT_COLOURS.get(n) or BACKGROUND_COLOURS[n] for n in _NAMES],
                        dtype=torch.float32)


@dataclass(frozen=True)
class ObjectTrack:
    colour: str
    motion: str          # one of clips.MOTIONS
    speed: str | None    # "slow"/"fast" for linear motions, else None
    centroids: tuple[tuple[float, float] | None, ...]  # (x, y) per frame, None where not seen
    areas: tuple[int, ...]


@dataclass(frozen=True)
class Detection:
    background: str
    objects: tuple[ObjectTrack, ...]  # largest first

    def object(self, colour: str) -> ObjectTrack | None:
        return next((o for o in self.objects if o.colour == colour), None)


def label_pixels(video: torch.Tensor) -> torch.Tensor:
    """``[T, H, W, 3]`` 0..1 -> ``[T, H, W]`` index into the palette, -1 where nothing is near."""
    pixels = video.float().clamp(0, 1) * 255.0
    distance = torch.cdist(pixels.reshape(-1, 3), _PALETTE)  # [T*H*W, colours]
    nearest, index = distance.min(dim=1)
    index[nearest > MATCH_DISTANCE] = -1
    return index.reshape(video.shape[:3])


def detect(video: torch.Tensor, *, max_objects: int = 2) -> Detection:
    if video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"expected frames [T, H, W, 3], got shape {tuple(video.shape)}")
    labels = label_pixels(video)
    background = _background(labels)
    tracks = []
    for index, name in enumerate(_NAMES):
        if not _IS_OBJECT[index]:
            continue
        masks = labels == index
        areas = masks.flatten(1).sum(dim=1)
        if areas.float().median() < MIN_OBJECT_PIXELS:
            continue
        if _solid(masks).flatten(1).sum(dim=1).float().median() < MIN_SOLID_PIXELS:
            continue
        tracks.append((int(areas.sum()), _track(name, masks, areas)))
    tracks.sort(key=lambda item: -item[0])
    return Detection(background, tuple(track for _, track in tracks[:max_objects]))


def _solid(masks: torch.Tensor) -> torch.Tensor:
    """Pixels whose four neighbours are in the mask too (a one-pixel erosion)."""
    solid = masks.clone()
    solid[:, 1:] &= masks[:, :-1]
    solid[:, :-1] &= masks[:, 1:]
    solid[:, :, 1:] &= masks[:, :, :-1]
    solid[:, :, :-1] &= masks[:, :, 1:]
    return solid


def _background(labels: torch.Tensor) -> str:
    border = torch.cat([labels[:, 0], labels[:, -1], labels[:, :, 0], labels[:, :, -1]], dim=1)
    counts = torch.bincount(border[border >= 0].flatten(), minlength=len(_NAMES))
    counts[_IS_OBJECT] = 0
    if counts.sum() == 0:  # no border pixel is near a background colour: use every pixel
        counts = torch.bincount(labels[labels >= 0].flatten(), minlength=len(_NAMES))
        counts[_IS_OBJECT] = 0
    return _NAMES[int(counts.argmax())]


def _track(name: str, masks: torch.Tensor, areas: torch.Tensor) -> ObjectTrack:
    frames, height, width = masks.shape
    ys = torch.arange(height, dtype=torch.float32)[None, :, None] + 0.5
    xs = torch.arange(width, dtype=torch.float32)[None, None, :] + 0.5
    weight = masks.float()
    total = weight.flatten(1).sum(dim=1)
    seen = total >= 3
    cx = (weight * xs).flatten(1).sum(dim=1) / total.clamp(min=1)
    cy = (weight * ys).flatten(1).sum(dim=1) / total.clamp(min=1)
    centroids = tuple((float(cx[t]), float(cy[t])) if seen[t] else None for t in range(frames))
    motion, speed = classify_motion(centroids, [int(a) for a in areas])
    return ObjectTrack(name, motion, speed, centroids, tuple(int(a) for a in areas))


def classify_motion(centroids, areas) -> tuple[str, str | None]:
    """(motion, speed) from per-frame centroids (None where unseen) and areas."""
    points = [(t, c) for t, c in enumerate(centroids) if c is not None]
    if len(points) < 2:
        return "still", None
    ends = max(1, min(3, len(points) // 4))  # average a few frames at each end against noise
    first = [c for _, c in points[:ends]]
    last = [c for _, c in points[-ends:]]
    t_first = sum(t for t, _ in points[:ends]) / ends
    t_last = sum(t for t, _ in points[-ends:]) / ends
    dx = sum(c[0] for c in last) / ends - sum(c[0] for c in first) / ends
    dy = sum(c[1] for c in last) / ends - sum(c[1] for c in first) / ends
    area_first = sum(areas[t] for t, _ in points[:ends]) / ends
    area_last = sum(areas[t] for t, _ in points[-ends:]) / ends
    if area_first > 0 and area_last / area_first >= GROW_AREA_RATIO:
        return "grow", None
    if math.hypot(dx, dy) < STILL_DISPLACEMENT:
        y_values = [c[1] for _, c in points]
        if max(y_values) - min(y_values) >= BOUNCE_RANGE:
            return "bounce", None
        return "still", None
    direction = _direction(dx, dy)
    per_frame = max(abs(dx), abs(dy)) / max(t_last - t_first, 1.0)
    speed = "fast" if per_frame >= (SPEED_STEP["slow"] + SPEED_STEP["fast"]) / 2 else "slow"
    return direction, speed


def _direction(dx: float, dy: float) -> str:
    """One of the 8 linear motions, by 45-degree sector (y grows downwards)."""
    angle = math.degrees(math.atan2(dy, dx))
    best = min(LINEAR_MOTIONS, key=lambda m: _angle_gap(angle, math.degrees(
        math.atan2(LINEAR_MOTIONS[m][1], LINEAR_MOTIONS[m][0]))))
    return best


def _angle_gap(a: float, b: float) -> float:
    return abs((a - b + 180.0) % 360.0 - 180.0)
