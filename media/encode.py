"""Write an IMAGE clip ``[T, H, W, 3]`` (float 0..1) as a video file with PyAV.

Frames are converted to 8-bit one at a time, so saving a long clip never holds a second full
copy of it. Files are written under a hidden temporary name and moved into the first free name
the caller offers only when complete (see :mod:`.publish`), so nothing existing is ever replaced
and a failed save leaves no half-written file behind. Which folder and names to use is the
caller's choice: the nodes number them in ComfyUI's output folder.
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import numpy as np
import torch

from ..core.hooks import NO_HOOKS, Hooks
from ..errors import InputError
from . import metadata as media_metadata
from .publish import claim_folder, publish, temporary_path

FORMATS = ("mp4", "webm", "gif", "webp", "png-sequence")
EXTENSIONS = {"mp4": ".mp4", "webm": ".webm", "gif": ".gif", "webp": ".webp", "png-sequence": ""}
_CODEC = {"mp4": "libx264", "webm": "libvpx-vp9", "gif": "gif", "webp": "libwebp_anim"}
_ALTERNATIVE = {"mp4": "webm", "webm": "mp4", "webp": "gif", "gif": "webp"}
MAX_CRF = 51  # H.264's scale; VP9 (0..63) and WebP quality are mapped from it


@dataclass
class SavedClip:
    format: str
    path: Path  # the file, or the new folder of a PNG sequence
    files: list[str]  # the file's name, or the frame files inside the PNG sequence's folder
    padded_to: tuple[int, int] | None = None  # (width, height) when odd sizes were padded


def check_save(images, fps: float, format: str, crf: int) -> torch.Tensor:
    """``images`` as ``[frames, H, W, C]`` once every save input is known good.

    :func:`save_clip` runs it too; callers whose file names depend on the clip's size run it
    first, so a bad input is reported before any name or folder is made.
    """
    images = _check_images(images)
    if format not in FORMATS:
        raise InputError(f"unknown format {format!r}", input="format",
                         fix=f"choose one of {', '.join(FORMATS)}")
    if not (fps > 0):
        raise InputError(f"fps must be above 0, got {fps}", input="fps", fix="use e.g. 16 (Wan)")
    if not 0 <= int(crf) <= MAX_CRF:
        raise InputError(f"crf must be 0..{MAX_CRF}, got {crf}", input="crf",
                         fix="use 19 for near-transparent quality, lower for better")
    if format != "png-sequence":
        require_encoder(format)
    return images


def save_clip(images: torch.Tensor, fps: float, format: str, crf: int, folder: Path,
              filenames: Iterable[str], tags: Mapping[str, str] | None = None, *,
              hooks: Hooks = NO_HOOKS) -> SavedClip:
    """Encode ``images`` into the existing ``folder`` under the first free name of ``filenames``.

    The names are tried in order; for a PNG sequence they name the new folder of frames.
    ``tags`` (e.g. from :func:`.metadata.workflow_tags`) are embedded where the format allows.
    """
    images = check_save(images, fps, format, crf)
    folder = Path(folder)
    tags = dict(tags or {})
    with hooks.progress(images.shape[0], f"saving {format}") as progress:
        if format == "png-sequence":
            return _save_png_sequence(images, claim_folder(folder, filenames), tags, progress)
        temporary = temporary_path(folder, EXTENSIONS[format])
        try:
            padded = _ENCODERS[format](images, temporary, _frame_rate(fps), int(crf), tags,
                                       progress)
            path = publish(temporary, folder, filenames)
        finally:
            if temporary.exists():
                temporary.unlink()
    return SavedClip(format, path, [path.name], padded)


def require_encoder(format: str) -> None:
    """Fail early, naming the fix, when this PyAV build lacks the format's encoder."""
    import av

    codec = _CODEC[format]
    try:
        av.codec.Codec(codec, "w")
    except Exception:  # PyAV raises UnknownCodecError (a ValueError) or FFmpegError
        alternative = _ALTERNATIVE[format]
        raise InputError(f"this PyAV build has no {codec} encoder, needed for {format}",
                         input="format",
                         fix=f"choose {alternative}, or install a PyAV wheel from PyPI "
                             "(pip install --force-reinstall av), which includes it") from None


def _check_images(images) -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        raise InputError(f"expected an IMAGE tensor, got {type(images).__name__}", input="images",
                         fix="connect an IMAGE output (e.g. VideoDiT VAE Decode)")
    if images.ndim == 3:
        images = images.unsqueeze(0)
    if images.ndim != 4 or images.shape[-1] not in (1, 3, 4) or images.shape[0] == 0:
        raise InputError(f"expected IMAGE [frames, height, width, 3], got {list(images.shape)}",
                         input="images", fix="connect an IMAGE output")
    return images


def _frame_rate(fps: float) -> Fraction:
    return Fraction(round(float(fps) * 1000), 1000)


def uint8_frames(images: torch.Tensor, pad_to: tuple[int, int] | None = None
                 ) -> Iterator[np.ndarray]:
    """One ``[H, W, 3]`` uint8 array per frame; ``pad_to`` (w, h) replicates the edge pixels."""
    for frame in images:
        frame = frame[..., :3] if frame.shape[-1] >= 3 else frame.expand(*frame.shape[:-1], 3)
        array = frame.detach().float().clamp(0, 1).mul(255).round().to(torch.uint8).cpu().numpy()
        if pad_to is not None:
            height, width = array.shape[:2]
            array = np.pad(array, ((0, pad_to[1] - height), (0, pad_to[0] - width), (0, 0)),
                           mode="edge")
        yield array


def _encode_mp4(images, path, rate, crf, tags, progress):
    height, width = images.shape[1], images.shape[2]
    # yuv420p halves chroma in both directions, so H.264 needs even sizes.
    even = (width + width % 2, height + height % 2)
    pad_to = even if even != (width, height) else None
    _encode_with_pyav(images, path, "mp4", rate, tags, progress, codec="libx264",
                      pix_fmt="yuv420p", size=even,
                      options={"crf": str(crf), "preset": "medium"},
                      container_options={"movflags": "use_metadata_tags+faststart"},
                      pad_to=pad_to)
    return pad_to


def _encode_webm(images, path, rate, crf, tags, progress):
    vp9_crf = round(crf * 63 / MAX_CRF)
    _encode_with_pyav(images, path, "webm", rate, tags, progress, codec="libvpx-vp9",
                      pix_fmt="yuv420p", size=(images.shape[2], images.shape[1]),
                      options={"crf": str(vp9_crf), "b": "0", "deadline": "good",
                               "cpu-used": "4", "row-mt": "1"})
    return None


def _encode_webp(images, path, rate, crf, tags, progress):
    # crf 0 asks for lossless, which WebP can do exactly from RGB input.
    if crf == 0:
        pix_fmt, options = "bgra", {"lossless": "1", "compression_level": "4"}
    else:
        pix_fmt = "yuv420p"
        options = {"lossless": "0", "quality": str(max(0, 100 - crf)), "compression_level": "4"}
    _encode_with_pyav(images, path, "webp", rate, {}, progress, codec="libwebp_anim",
                      pix_fmt=pix_fmt, size=(images.shape[2], images.shape[1]),
                      options=options, container_options={"loop": "0"})
    if tags:
        media_metadata.add_webp_exif(path, media_metadata.webp_exif(tags))
    return None


def _encode_with_pyav(images, path, container_format, rate, tags, progress, *, codec, pix_fmt,
                      size, options, container_options=None, pad_to=None):
    import av

    with av.open(str(path), "w", format=container_format,
                 options=container_options or {}) as container:
        for key, value in tags.items():
            container.metadata[key] = value
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = size
        stream.pix_fmt = pix_fmt
        stream.options = dict(options)
        for array in uint8_frames(images, pad_to):
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            container.mux(stream.encode(frame))
            progress.update(1)
        container.mux(stream.encode(None))


def _encode_gif(images, path, rate, crf, tags, progress):
    """GIF with one 256-colour palette fitted per frame (a fixed palette bands badly)."""
    import av

    height, width = images.shape[1], images.shape[2]
    with av.open(str(path), "w", format="gif", options={"loop": "0"}) as container:
        stream = container.add_stream("gif", rate=rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "pal8"
        graph = av.filter.Graph()
        source = graph.add_buffer(width=width, height=height, format="rgb24",
                                  time_base=1 / rate)
        split = graph.add("split")
        palette = graph.add("palettegen", "stats_mode=single:max_colors=256")
        apply = graph.add("paletteuse", "new=1:dither=sierra2_4a")
        sink = graph.add("buffersink")
        source.link_to(split)
        split.link_to(palette, 0, 0)
        split.link_to(apply, 1, 0)
        palette.link_to(apply, 0, 1)
        apply.link_to(sink)
        graph.configure()

        def drain():
            while True:
                try:
                    out = sink.pull()
                except (av.BlockingIOError, av.EOFError):
                    return
                out.pts = None  # let the encoder number frames at the stream rate
                container.mux(stream.encode(out))

        for index, array in enumerate(uint8_frames(images)):
            frame = av.VideoFrame.from_ndarray(array, format="rgb24")
            frame.pts, frame.time_base = index, 1 / rate
            source.push(frame)
            drain()
            progress.update(1)
        source.push(None)
        drain()
        container.mux(stream.encode(None))
    return None


def _save_png_sequence(images, folder, tags, progress) -> SavedClip:
    """``frame_00001.png`` ... into the new ``folder``, the prompt in every frame."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    for key, value in tags.items():
        info.add_text(key, value)
    files = []
    try:
        for index, array in enumerate(uint8_frames(images), start=1):
            filename = f"frame_{index:05}.png"
            # The folder is new and ours, so "x" (exclusive create) can only fail on a bug.
            with open(folder / filename, "xb") as handle:
                Image.fromarray(array).save(handle, format="PNG", pnginfo=info,
                                            compress_level=4)
            files.append(filename)
            progress.update(1)
    except BaseException:  # including Cancel: a half sequence is not a result
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return SavedClip("png-sequence", folder, files)


_ENCODERS = {"mp4": _encode_mp4, "webm": _encode_webm, "gif": _encode_gif, "webp": _encode_webp}
