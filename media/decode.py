"""Read a video or still image into an IMAGE clip ``[T, H, W, 3]`` float 0..1.

Decoding streams: frames that are skipped are never converted, and only the frames kept are
held, as 8-bit, until the float clip is built at the end. The memory the clip will need is
checked against a budget before anything is allocated (from the container's frame count), and
again frame by frame in case the container under-reported it.

Videos (and GIFs) are read with PyAV; stills and WebP (FFmpeg cannot decode animated WebP) with
Pillow. A still is a 1-frame clip.
"""
from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from ..core.hooks import NO_HOOKS, Hooks
from ..errors import InputError

VIDEO_EXTENSIONS = (".mp4", ".webm", ".mkv", ".mov", ".avi", ".m4v", ".gif")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
SIZE_MODES = ("crop", "resize", "none")
STILL_FPS = 16.0  # Wan's frame rate; what a still reports unless force_fps is set
MAX_DECODE_GB_ENV = "VIDEODIT_MAX_DECODE_GB"
DEFAULT_MAX_DECODE_GB = 8.0
_BYTES_PER_VALUE = 4  # float32 IMAGE


@dataclass(frozen=True)
class FrameRange:
    """Which frames to keep, applied in this order: skip, fps resampling, every n-th, limit."""

    skip_first_frames: int = 0
    frame_limit: int = 0  # 0 = all
    every_nth: int = 1
    force_fps: float = 0.0  # 0 = keep the source rate

    def output_fps(self, source_fps: float) -> float:
        return (self.force_fps if self.force_fps > 0 else source_fps) / self.every_nth

    def kept_count(self, source_frames: int, source_fps: float) -> int:
        """How many frames :func:`select_frames` keeps from a constant-rate source."""
        count = max(0, source_frames - self.skip_first_frames)
        if self.force_fps > 0 and count:
            count = math.ceil(count * _rate(self.force_fps) / _rate(source_fps))
        count = math.ceil(count / self.every_nth)
        return min(count, self.frame_limit) if self.frame_limit > 0 else count


@dataclass(frozen=True)
class SizeRule:
    """Make width and height multiples of ``multiple``: centre ``crop``, ``resize``, or ``none``."""

    multiple: int = 16
    mode: str = "crop"

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        m = self.multiple
        if self.mode == "none" or m <= 1:
            return width, height
        if self.mode == "crop":
            if width < m or height < m:
                raise InputError(f"the clip is {width}x{height}, smaller than one size multiple "
                                 f"({m})", input="size_multiple",
                                 fix="use a smaller size_multiple, or size_mode resize")
            return width - width % m, height - height % m
        # resize: the nearest multiple in each direction (aspect changes by under half a step)
        return max(m, round(width / m) * m), max(m, round(height / m) * m)


@dataclass
class LoadedClip:
    images: torch.Tensor  # [T, H, W, 3] float32 0..1 on the CPU
    fps: float  # of the returned frames (force_fps or the source's, divided by every_nth)
    source_fps: float
    source_size: tuple[int, int]  # (width, height) before cropping or resizing
    is_still: bool


@dataclass
class _SourceFrame:
    time: Fraction  # seconds since the start of the file
    to_rgb: Callable[[int, int], np.ndarray]  # (width, height) -> [h, w, 3] uint8, resized


@dataclass
class _Source:
    width: int
    height: int
    fps: Fraction
    frame_count: int | None  # what the container says, if anything
    frames: Iterator[_SourceFrame]
    close: Callable[[], None]
    is_still: bool = False


def decode_budget_bytes(max_memory_gb: float = 0.0) -> int:
    """The budget: the widget value, else ``VIDEODIT_MAX_DECODE_GB``, else 8 GB."""
    if max_memory_gb and max_memory_gb > 0:
        return int(max_memory_gb * 1024 ** 3)
    env = os.environ.get(MAX_DECODE_GB_ENV)
    try:
        gigabytes = float(env) if env else DEFAULT_MAX_DECODE_GB
    except ValueError:
        raise InputError(f"{MAX_DECODE_GB_ENV}={env!r} is not a number", input="max_memory_gb",
                         fix=f"set {MAX_DECODE_GB_ENV} to a size in GB, e.g. 8") from None
    return int(gigabytes * 1024 ** 3)


def load_clip(path: str | Path, frames: FrameRange = FrameRange(), size: SizeRule = SizeRule(),
              *, budget_bytes: int | None = None, input: str = "video",
              hooks: Hooks = NO_HOOKS) -> LoadedClip:
    """Decode ``path`` into an IMAGE clip; see the module notes for memory behaviour."""
    _check_range(frames)
    if size.mode not in SIZE_MODES:
        raise InputError(f"unknown size_mode {size.mode!r}", input="size_mode",
                         fix=f"choose one of {', '.join(SIZE_MODES)}")
    budget = decode_budget_bytes() if budget_bytes is None else budget_bytes
    path = Path(path)
    source = _open(path, frames, input)
    try:
        width, height = size.output_size(source.width, source.height)
        frame_bytes = width * height * 3 * _BYTES_PER_VALUE
        planned = (frames.kept_count(source.frame_count, float(source.fps))
                   if source.frame_count else None)
        if planned is not None and planned * frame_bytes > budget:
            raise _over_budget(planned, width, height, frame_bytes, budget)
        crop = size.mode == "crop" and (width, height) != (source.width, source.height)
        convert_size = (source.width, source.height) if crop else (width, height)
        kept: list[np.ndarray] = []
        decoded = _Counted(source.frames)
        with hooks.progress(planned or 1, f"loading {path.name}") as progress:
            selected = iter(select_frames(decoded, frames, source.fps))
            while True:
                try:
                    frame = next(selected, None)
                    if frame is None:
                        break
                    if (len(kept) + 1) * frame_bytes > budget:
                        raise _over_budget(None, width, height, frame_bytes, budget)
                    rgb = frame.to_rgb(*convert_size)
                    if crop:
                        top = (source.height - height) // 2
                        left = (source.width - width) // 2
                        rgb = rgb[top:top + height, left:left + width]
                except InputError:
                    raise
                except Exception as err:  # FFmpeg/Pillow errors on damaged data
                    raise _unreadable(path, err, input) from err
                kept.append(rgb)
                # Outside the try: a Cancel raised by the bar is a Cancel, not a damaged file.
                progress.update(1)
        _check_complete(path, decoded, source.frame_count, input)
    finally:
        source.close()
    if not kept:
        raise InputError(f"no frames left from {path.name} (the file has "
                         f"{source.frame_count if source.frame_count is not None else 'no'} "
                         f"frames; skip_first_frames={frames.skip_first_frames})",
                         input="skip_first_frames",
                         fix="lower skip_first_frames, or check that the file is not empty")
    images = torch.empty((len(kept), height, width, 3), dtype=torch.float32)
    for index in range(len(kept)):
        images[index].numpy()[...] = kept[index]  # uint8 -> float32 in place
        kept[index] = None  # release the 8-bit copy as we go
    images.div_(255.0)
    return LoadedClip(images, frames.output_fps(float(source.fps)), float(source.fps),
                      (source.width, source.height), source.is_still)


class _Counted:
    """Counts the frames a source yields and notes whether it ran to its end."""

    def __init__(self, frames: Iterator[_SourceFrame]):
        self._frames = frames
        self.count = 0
        self.ended = False

    def __iter__(self):
        for frame in self._frames:
            self.count += 1
            yield frame
        self.ended = True


def _check_complete(path: Path, decoded: _Counted, expected: int | None, input: str) -> None:
    """A file that ends well before the frame count in its header was cut off (an upload that
    did not finish, a copy of a file still being written): say so rather than return less."""
    if not decoded.ended or not expected:
        return
    slack = max(2, expected // 50)  # counts estimated from the duration can be off slightly
    if decoded.count < expected - slack:
        raise InputError(f"{path.name} ends after {decoded.count} of the {expected} frames its "
                         "header announces; the file looks truncated", input=input,
                         fix="copy or upload the file again, or re-export it")


def select_frames(frames: Iterable[_SourceFrame], keep: FrameRange,
                  source_fps: Fraction) -> Iterator[_SourceFrame]:
    """The frames to keep, lazily: decoding stops as soon as the limit is reached."""
    selected: Iterator = itertools.islice(frames, keep.skip_first_frames, None)
    if keep.force_fps > 0:
        selected = _resample(selected, _rate(keep.force_fps), source_fps)
    if keep.every_nth > 1:
        selected = itertools.islice(selected, 0, None, keep.every_nth)
    if keep.frame_limit > 0:
        selected = itertools.islice(selected, keep.frame_limit)
    return selected


def _resample(frames: Iterator[_SourceFrame], target: Fraction,
              source_fps: Fraction) -> Iterator[_SourceFrame]:
    """Nearest-frame resampling by timestamp (works for variable frame rates too).

    Output frame k stands at ``t0 + k / target``; it takes the source frame whose timestamp is
    nearest (a tie goes to the later frame). The last source frame lasts one source frame
    duration, so a clip of n frames gives ``ceil(n * target / source_fps)`` frames.
    """
    current = next(frames, None)
    if current is None:
        return
    start, index = current.time, 0
    for upcoming in itertools.chain(frames, [None]):
        if upcoming is None:
            boundary = current.time + 1 / source_fps
        else:
            boundary = (current.time + upcoming.time) / 2
        while start + index / target < boundary:
            yield current
            index += 1
        current = upcoming


def _rate(fps: float | Fraction) -> Fraction:
    return Fraction(fps).limit_denominator(1001) if not isinstance(fps, Fraction) else fps


def _check_range(frames: FrameRange) -> None:
    checks = (("skip_first_frames", frames.skip_first_frames >= 0, "use 0 or more"),
              ("frame_limit", frames.frame_limit >= 0, "use 0 (all frames) or more"),
              ("every_nth", frames.every_nth >= 1, "use 1 (every frame) or more"),
              ("force_fps", frames.force_fps >= 0, "use 0 (keep the file's rate) or a rate"))
    for name, ok, fix in checks:
        if not ok:
            raise InputError(f"{name}={getattr(frames, name)} is out of range", input=name,
                             fix=fix)


def _over_budget(planned, width, height, frame_bytes, budget) -> InputError:
    gib = 1024 ** 3
    fits = max(0, budget // frame_bytes)
    what = (f"{planned} frames of {width}x{height} need {planned * frame_bytes / gib:.2f} GB"
            if planned is not None else
            f"the file has more frames than its header said; {width}x{height} frames beyond "
            f"{fits} would exceed")
    return InputError(f"{what}, over the decode budget of {budget / gib:.2f} GB",
                      input="frame_limit",
                      fix=f"set frame_limit to {fits} or less, raise every_nth, pick a smaller "
                          f"size, or raise max_memory_gb (or {MAX_DECODE_GB_ENV})")


def _unreadable(path: Path, err: Exception, input: str) -> InputError:
    return InputError(f"cannot read {path.name}: {err}", input=input,
                      fix="the file is damaged, truncated or not a video/image; re-export it "
                          "(mp4 H.264 or webm decode everywhere) or upload it again")


def _open(path: Path, frames: FrameRange, input: str) -> _Source:
    suffix = path.suffix.lower()
    if suffix not in VIDEO_EXTENSIONS + IMAGE_EXTENSIONS:
        raise InputError(f"{path.name} is not a supported video or image file", input=input,
                         fix="use one of " + ", ".join(VIDEO_EXTENSIONS + IMAGE_EXTENSIONS))
    try:
        if suffix in IMAGE_EXTENSIONS:
            return _open_with_pillow(path, frames)
        return _open_with_pyav(path)
    except InputError:
        raise
    except Exception as err:
        raise _unreadable(path, err, input) from err


def _open_with_pyav(path: Path) -> _Source:
    import av

    container = av.open(str(path))
    try:
        if not container.streams.video:
            raise InputError(f"{path.name} has no video stream", input="video",
                             fix="pick a file that contains video")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        # GIF delays are whole centiseconds, so the average drifts; the guessed rate does not.
        rates = ((stream.guessed_rate, stream.average_rate) if container.format.name == "gif"
                 else (stream.average_rate, stream.guessed_rate))
        fps = next((Fraction(r) for r in rates if r), Fraction(16))
        count = stream.frames or None
        if count is None and stream.duration and stream.time_base:
            count = round(stream.duration * stream.time_base * fps) or None
        elif count is None and container.duration:
            count = round(Fraction(container.duration, 1_000_000) * fps) or None
        width, height = stream.codec_context.width, stream.codec_context.height
    except BaseException:
        container.close()
        raise

    def frames() -> Iterator[_SourceFrame]:
        for index, frame in enumerate(container.decode(stream)):
            if frame.pts is not None and frame.time_base is not None:
                time = Fraction(frame.pts) * Fraction(frame.time_base)
            else:
                time = index / fps
            yield _SourceFrame(time, _pyav_converter(frame))

    return _Source(width, height, fps, count, frames(), container.close)


def _pyav_converter(frame) -> Callable[[int, int], np.ndarray]:
    def to_rgb(width: int, height: int) -> np.ndarray:
        if (width, height) == (frame.width, frame.height):
            return frame.to_ndarray(format="rgb24")
        # Convert to RGB first, then scale: swscale's combined YUV->RGB+scale path shifts
        # levels by a couple of code values, which shows up as a colour change.
        rgb = frame.reformat(format="rgb24")
        shrinking = width * height < frame.width * frame.height
        return rgb.to_ndarray(width=width, height=height,
                              interpolation="AREA" if shrinking else "BICUBIC")
    return to_rgb


def _open_with_pillow(path: Path, frames: FrameRange) -> _Source:
    from PIL import Image, ImageOps

    image = Image.open(path)
    try:
        image.load()  # surfaces truncated or corrupt data now, not halfway
        count = getattr(image, "n_frames", 1)
        width, height = ImageOps.exif_transpose(image).size if count == 1 else image.size
        if count == 1:
            fps = _rate(frames.force_fps if frames.force_fps > 0 else STILL_FPS)
        else:
            fps = _rate_from_delay(image.info.get("duration") or 1000 / STILL_FPS)
    except BaseException:
        image.close()
        raise

    def pillow_frames() -> Iterator[_SourceFrame]:
        time = Fraction(0)
        for index in range(count):
            image.seek(index)
            frame = ImageOps.exif_transpose(image) if count == 1 else image.copy()
            yield _SourceFrame(time, _pillow_converter(frame))
            duration = image.info.get("duration") or 1000 / float(fps)
            time += Fraction(duration).limit_denominator(1000) / 1000

    return _Source(width, height, fps, count, pillow_frames(), image.close, is_still=count == 1)


def _rate_from_delay(milliseconds: float) -> Fraction:
    """Frame rate from a per-frame delay stored in whole milliseconds (WebP).

    16 fps is stored as 62 ms; when a whole rate rounds to the same delay, report that rate.
    """
    exact = Fraction(1000) / Fraction(milliseconds).limit_denominator(1000)
    whole = round(exact)
    if whole > 0 and round(1000 / whole) == round(milliseconds):
        return Fraction(whole)
    return exact


def _pillow_converter(image) -> Callable[[int, int], np.ndarray]:
    def to_rgb(width: int, height: int) -> np.ndarray:
        from PIL import Image

        rgb = still_as_rgb(image)
        if rgb.size != (width, height):
            shrinking = width * height < rgb.width * rgb.height
            rgb = rgb.resize((width, height), Image.Resampling.BOX if shrinking
                             else Image.Resampling.BICUBIC)
        return np.asarray(rgb)
    return to_rgb


ALPHA_BACKGROUND = (255, 255, 255)  # transparent pixels become white (see still_as_rgb)
_HIGH_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


def still_as_rgb(image):
    """A Pillow image as 8-bit RGB at its full range.

    16-bit grayscale (PNG ``I;16``/``I``) is scaled from 0..65535 (Pillow's own conversion
    clips at 255, which turns it nearly white). Transparency (RGBA, LA, palette or colour-key
    PNG/WebP/GIF) is composited over white (``ALPHA_BACKGROUND``), as an image viewer shows it,
    instead of exposing whatever colour the transparent pixels happen to hold.
    """
    from PIL import Image

    if image.mode in _HIGH_BIT_MODES:
        values = np.asarray(image, dtype=np.float64)
        gray = np.clip(np.rint(values * (255.0 / 65535.0)), 0, 255).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, ALPHA_BACKGROUND + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")
