"""Read a clip back into words: background colour, object colours and shapes, and how each
object moves.

Written for the synthetic domain, to score clips a model generated from captions:
1. every pixel gets the nearest named colour, or none when it is far from all of them
   (anti-aliased edges, blur, artefacts);
2. the background is the most common background colour along the frame border;
3. each object colour that covers enough pixels is an object; its centroid and area are
   tracked frame by frame;
4. the track becomes a motion: net displacement gives a direction (8 sectors) and speed, a
   large area increase is growing, up-and-down with no net displacement is bouncing;
5. the object's soft coverage (how far each pixel is from the background towards the object
   colour) gives its shape, from moments that do not depend on its size (:func:`shape_features`);
6. the colours of the first and of the last few frames are judged apart, so an object that
   changes colour during the clip shows up (:attr:`Detection.first_colour`, ``last_colour``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

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
# Frames at each end of a clip whose colour is judged on its own: four frames are what one
# latent frame of the Wan VAE (temporal stride 4) decodes to, so a colour that one latent frame
# gets wrong is caught.
EDGE_FRAMES = 4
# Shape measurement. Coverage is counted within this many pixels of the object's solid pixels:
# enough to take in a triangle's apex and blurred edges, not another object's fringe.
SHAPE_WINDOW = 5
# Coverage below this is treated as none, so background noise far from the object (which
# weighs heavily in fourth moments) does not round every shape off.
COVERAGE_FLOOR = 0.1
# Decision thresholds, about halfway between the shapes' exact values (see shape_features)
# and still apart when the clip is blurred with a sigma of about 1.4 pixels.
TRIANGLE_SKEW = -0.25
CORNER_CONTRAST = 0.2

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
    shape: str | None = None  # one of clips.SHAPES; None where no frame shows a solid core
    # or the outline is too soft to read (see classify_shape)
    # (y skewness, corner contrast, soft edge) medians over frames: the first two name
    # ``shape``; the third says how crisp the outline is (see classify_shape)
    shape_features: tuple[float, float, float] | None = None


@dataclass(frozen=True)
class Detection:
    background: str
    objects: tuple[ObjectTrack, ...]  # largest first
    # The main object colour (most solid pixels) over the first and over the last EDGE_FRAMES
    # frames, None where no object is seen there. A clip whose object changes colour has two
    # different ones, even when the whole-clip tracks name only one colour.
    first_colour: str | None = None
    last_colour: str | None = None

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
    for _, index in _object_colours(labels)[:max_objects]:
        masks = labels == index
        track = _track(_NAMES[index], masks, masks.flatten(1).sum(dim=1))
        shape, features = classify_shape(video, labels, index)
        tracks.append(replace(track, shape=shape, shape_features=features))
    edge = min(EDGE_FRAMES, labels.shape[0])
    return Detection(background, tuple(tracks), _main_colour(labels[:edge]),
                     _main_colour(labels[-edge:]))


def _object_colours(labels: torch.Tensor) -> list[tuple[int, int]]:
    """(total pixels, palette index) of each object colour that counts as an object, largest
    first."""
    found = []
    for index, name in enumerate(_NAMES):
        if not _IS_OBJECT[index]:
            continue
        masks = labels == index
        areas = masks.flatten(1).sum(dim=1)
        if areas.float().median() < MIN_OBJECT_PIXELS:
            continue
        if _solid(masks).flatten(1).sum(dim=1).float().median() < MIN_SOLID_PIXELS:
            continue
        found.append((int(areas.sum()), index))
    return sorted(found, key=lambda item: -item[0])


def _main_colour(labels: torch.Tensor) -> str | None:
    """The object colour with the most solid pixels over these frames, or None where none has
    MIN_SOLID_PIXELS a frame on average. Solid pixels are an object's core: the fringe of
    another colour that a soft edge can have is a thin ring, and does not decide; a frame or
    two where the object flickers away does not hide its colour."""
    solid = torch.stack([_solid(labels == index).sum() if _IS_OBJECT[index] else torch.tensor(0)
                         for index in range(len(_NAMES))])
    best = int(solid.argmax())
    return _NAMES[best] if int(solid[best]) >= MIN_SOLID_PIXELS * labels.shape[0] else None


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


# -- shape ---------------------------------------------------------------------------------------
def coverage(video: torch.Tensor, labels: torch.Tensor, index: int) -> torch.Tensor:
    """``[T, H, W]`` 0..1: how much of each pixel the object of palette colour ``index`` covers.

    A pixel on an anti-aliased (or blurred) edge is a mix of object and background colour, so
    its position on the line from the background colour to the object colour is the share the
    object covers. The background colour is measured per row (gradients run top to bottom),
    from the pixels labelled as a background colour, so a gradient does not read as coverage.
    """
    pixels = video.float().clamp(0, 1) * 255.0
    is_background = (labels >= 0) & ~_IS_OBJECT[labels.clamp(min=0)]
    weight = is_background.float()[..., None]
    counted = weight.sum(dim=2)  # [T, H, 1]
    row = (pixels * weight).sum(dim=2) / counted.clamp(min=1)  # [T, H, 3]
    if bool((counted == 0).any()):  # a row with no background pixel: the border's colour
        row = torch.where(counted > 0, row, _PALETTE[_NAMES.index(_background(labels))])
    base = row[:, :, None, :]
    axis = _PALETTE[index] - base
    share = ((pixels - base) * axis).sum(dim=-1) / (axis * axis).sum(dim=-1).clamp(min=1.0)
    return share.clamp(0, 1)


def shape_features(weight: torch.Tensor) -> tuple[float, float]:
    """(y skewness, corner contrast) of one frame's coverage ``[H, W]``; both do not depend on
    the object's size or position.

    - y skewness: a triangle pointing up has its mass towards its base: -0.57 (a triangular
      distribution); the other shapes are symmetric top to bottom: 0.
    - corner contrast: mean kurtosis along the x and y axes minus along the two diagonals.
      A square's profile along an axis is flat (kurtosis 1.8) and along a diagonal a tent
      (2.4): -0.6; a diamond is the same turned by 45 degrees: +0.6; a disc is the same in
      every direction, and so is an equilateral triangle (three-fold symmetry leaves no
      fourth-order anisotropy): 0.
    Blur pulls both towards 0 (a Gaussian blob is symmetric and isotropic).
    """
    height, width = weight.shape
    ys = torch.arange(height, dtype=torch.float32)[:, None] + 0.5
    xs = torch.arange(width, dtype=torch.float32)[None, :] + 0.5
    total = weight.sum()
    x = xs - (weight * xs).sum() / total
    y = ys - (weight * ys).sum() / total

    def moment(u: torch.Tensor, order: int) -> float:
        return float((weight * u ** order).sum() / total)

    def kurtosis(u: torch.Tensor) -> float:
        return moment(u, 4) / max(moment(u, 2) ** 2, 1e-12)

    skew = moment(y, 3) / max(moment(y, 2), 1e-12) ** 1.5
    diagonal, anti_diagonal = (x + y) / math.sqrt(2), (x - y) / math.sqrt(2)
    contrast = (kurtosis(x) + kurtosis(y)) / 2 - (kurtosis(diagonal) + kurtosis(anti_diagonal)) / 2
    return skew, contrast


# Soft-edge value above which an outline is too blurred to name (drawn outlines: 0 to 4.6;
# a light 3x3 blur: up to 7.4; the demo model's generated blobs: about 10 and more).
SOFT_OUTLINE = 9.0


def name_shape(skew: float, contrast: float) -> str:
    """One of clips.SHAPES from :func:`shape_features`. Triangles in this world point up, so
    only a top-light profile is a triangle."""
    if skew <= TRIANGLE_SKEW:
        return "triangle"
    if contrast >= CORNER_CONTRAST:
        return "diamond"
    if contrast <= -CORNER_CONTRAST:
        return "square"
    return "circle"


def classify_shape(video: torch.Tensor, labels: torch.Tensor, index: int
                   ) -> tuple[str | None, tuple[float, float, float] | None]:
    """Shape of the object of palette colour ``index`` and its (skew, contrast, soft edge):
    medians over frames that show enough of the object, so a few frames where it is smeared or
    half hidden do not decide.

    Soft edge is the number of partly covered pixels per unit of the object's scale (square
    root of its area): a drawn outline, anti-aliased over at most one pixel, gives 0 (a square
    on pixel edges) to about 4.6 (a square on half pixels); a blurred or frayed one more.
    Above ``SOFT_OUTLINE`` the object is a blob with no outline to read, and its shape is None:
    a symmetric blob would otherwise read as a circle, and a model that draws every object as a
    blob would score on every circle prompt.
    """
    masks = labels == index
    solid = _solid(masks)
    shown = solid.flatten(1).sum(dim=1) >= MIN_SOLID_PIXELS
    if not bool(shown.any()):
        return None, None
    # a round window around the solid pixels: a square one would square every blurred outline
    reach = torch.arange(-SHAPE_WINDOW, SHAPE_WINDOW + 1, dtype=torch.float32)
    disc = (reach[:, None] ** 2 + reach[None, :] ** 2 <= SHAPE_WINDOW ** 2 + 0.5).float()
    window = F.conv2d(solid[shown].float()[:, None], disc[None, None],
                      padding=SHAPE_WINDOW)[:, 0] > 0
    raw = coverage(video[shown], labels[shown], index) * window
    share = ((raw - COVERAGE_FLOOR) / (1 - COVERAGE_FLOOR)).clamp(0, 1)
    features, soft_edges = [], []
    for frame, frame_raw in zip(share, raw):
        area = float(frame_raw.sum())
        if float(frame.sum()) <= 0 or area <= 0:
            continue
        features.append(shape_features(frame))
        partial = ((frame_raw > 0.15) & (frame_raw < 0.85)).sum()
        soft_edges.append(float(partial) / math.sqrt(area))
    if not features:
        return None, None
    skew = _median([f[0] for f in features])
    contrast = _median([f[1] for f in features])
    soft_edge = _median(soft_edges)
    name = name_shape(skew, contrast) if soft_edge <= SOFT_OUTLINE else None
    return name, (round(skew, 3), round(contrast, 3), round(soft_edge, 2))


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


# -- motion --------------------------------------------------------------------------------------
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
