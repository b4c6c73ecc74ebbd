"""The prompt and workflow JSON carried inside saved media, written and read back.

Where each format keeps it, chosen so ComfyUI's own readers find it (drop the file on the
canvas to get the graph back where ComfyUI supports that format):

* mp4 / webm: container tags ``prompt`` and ``workflow`` (mp4 needs the ``use_metadata_tags``
  mux flag, as ComfyUI's SaveVideo sets; Matroska stores tag names upper-case).
* animated webp: an EXIF chunk whose strings read ``prompt:<json>`` (tag 0x0110) and
  ``workflow:<json>`` (0x010F, further keys counting down), as ComfyUI's SaveAnimatedWEBP writes.
* png: ``tEXt`` chunks named ``prompt`` / ``workflow``, as ComfyUI's SaveImage writes.
* gif: none (the format has nowhere ComfyUI would look).

Whether to embed them at all (ComfyUI's ``--disable-metadata``) is the caller's decision.
"""
from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any, Mapping

_EXIF_PROMPT_TAG = 0x0110  # "Model" in TIFF terms; ComfyUI uses it for the prompt
_EXIF_FIRST_EXTRA_TAG = 0x010F  # "Make"; then counting down for each further key


def workflow_tags(prompt: Any = None, extra_pnginfo: Mapping[str, Any] | None = None
                  ) -> dict[str, str]:
    """``{"prompt": json, "workflow": json, ...}`` from a node's hidden inputs (JSON strings)."""
    tags: dict[str, str] = {}
    if prompt is not None:
        tags["prompt"] = json.dumps(prompt)
    for key, value in (extra_pnginfo or {}).items():
        tags[str(key)] = json.dumps(value)
    return tags


def read_container_tags(path: str | Path) -> dict[str, str]:
    """Container-level tags of a video file, names lower-cased (Matroska upper-cases them)."""
    import av

    with av.open(str(path)) as container:
        return {key.lower(): value for key, value in container.metadata.items()}


def webp_exif(tags: Mapping[str, str]) -> bytes:
    """A little-endian TIFF block with one ASCII entry per tag, ``"<key>:<json>"``."""
    entries: list[tuple[int, bytes]] = []
    extra_tag = _EXIF_FIRST_EXTRA_TAG
    for key, value in tags.items():
        if key == "prompt":
            tag = _EXIF_PROMPT_TAG
        else:
            tag, extra_tag = extra_tag, extra_tag - 1
        entries.append((tag, f"{key}:{value}".encode("utf-8") + b"\0"))
    entries.sort()  # TIFF wants ascending tag order
    header = b"II*\0" + struct.pack("<I", 8)
    table_size = 2 + 12 * len(entries) + 4
    data_offset = 8 + table_size
    table = struct.pack("<H", len(entries))
    blob = b""
    for tag, text in entries:
        if len(text) <= 4:
            table += struct.pack("<HHI", tag, 2, len(text)) + text.ljust(4, b"\0")
        else:
            table += struct.pack("<HHII", tag, 2, len(text), data_offset + len(blob))
            blob += text + (b"\0" if len(text) % 2 else b"")
    return header + table + struct.pack("<I", 0) + blob


def add_webp_exif(path: str | Path, exif: bytes) -> None:
    """Append an EXIF chunk to an extended (VP8X) WebP file and set its EXIF flag."""
    data = bytearray(Path(path).read_bytes())
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP" or data[12:16] != b"VP8X":
        raise ValueError(f"{path} is not an extended WebP file; cannot add metadata")
    data[20] |= 0x08  # VP8X flags byte: EXIF present
    chunk = b"EXIF" + struct.pack("<I", len(exif)) + exif + (b"\0" if len(exif) % 2 else b"")
    data += chunk
    data[4:8] = struct.pack("<I", len(data) - 8)
    Path(path).write_bytes(bytes(data))


def read_webp_exif_tags(path: str | Path) -> dict[str, str]:
    """The ``key:value`` strings of a WebP's EXIF chunk, as ComfyUI's frontend reads them."""
    data = Path(path).read_bytes()
    offset = 12
    while offset + 8 <= len(data):
        kind, size = data[offset:offset + 4], struct.unpack("<I", data[offset + 4:offset + 8])[0]
        if kind == b"EXIF":
            return _tiff_strings(data[offset + 8:offset + 8 + size])
        offset += 8 + size + (size % 2)
    return {}


def _tiff_strings(tiff: bytes) -> dict[str, str]:
    if tiff.startswith(b"Exif\0\0"):
        tiff = tiff[6:]
    endian = "<" if tiff[:2] == b"II" else ">"
    (first,) = struct.unpack(endian + "I", tiff[4:8])
    (count,) = struct.unpack(endian + "H", tiff[first:first + 2])
    found = {}
    for index in range(count):
        entry = tiff[first + 2 + 12 * index:first + 14 + 12 * index]
        tag, kind, length = struct.unpack(endian + "HHI", entry[:8])
        if kind != 2:
            continue
        if length <= 4:
            raw = entry[8:8 + length]
        else:
            (where,) = struct.unpack(endian + "I", entry[8:12])
            raw = tiff[where:where + length]
        text = raw.rstrip(b"\0").decode("utf-8", "replace")
        key, sep, value = text.partition(":")
        if sep:
            found[key] = value
    return found


def read_png_text(path: str | Path) -> dict[str, str]:
    """``tEXt`` chunks of a PNG file."""
    from PIL import Image

    with Image.open(path) as image:
        return {str(k): v for k, v in getattr(image, "text", {}).items()}
