"""Encoded prompts kept for reuse, so an unchanged prompt is never run through umT5 twice.

umT5-XXL takes seconds per prompt on a GPU and much longer on a CPU, and graphs are re-queued
with the same text all the time. Entries are keyed by a hash of (text encoder identity, dtype,
cleaned prompt): the identity hashes the weight files' headers, sizes and first/last bytes plus
the tokenizer, so a different or re-downloaded encoder never reuses stale embeddings.

Two levels: an in-memory LRU bounded by entry count and bytes, and optionally a folder of small
safetensors files (survives restarts). Embeddings are stored unpadded (``[tokens, D]`` float32);
padding to the model's text length happens on use. The process-wide cache object and the
default folder are the runtime's (``runtime/prompt_cache.py``).
"""
from __future__ import annotations

import hashlib
import logging
import os
from collections import OrderedDict
from pathlib import Path

import torch

log = logging.getLogger(__name__)

_FORMAT_VERSION = "1"


def prompt_key(encoder_identity: str, dtype: torch.dtype, text: str) -> str:
    digest = hashlib.sha256()
    for part in (_FORMAT_VERSION, encoder_identity, str(dtype), text):
        digest.update(part.encode("utf-8"))
        digest.update(b"\0")
    return digest.hexdigest()


class PromptCache:
    def __init__(self, *, max_entries: int = 64, max_bytes: int = 512 * 1024 * 1024):
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._bytes = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str, *, disk_dir: Path | None = None) -> torch.Tensor | None:
        embedding = self._entries.get(key)
        if embedding is not None:
            self._entries.move_to_end(key)
            self.hits += 1
            return embedding
        if disk_dir is not None:
            embedding = self._read_disk(disk_dir, key)
            if embedding is not None:
                self._remember(key, embedding)
                self.hits += 1
                return embedding
        self.misses += 1
        return None

    def put(self, key: str, embedding: torch.Tensor, *, disk_dir: Path | None = None) -> None:
        embedding = embedding.detach().to("cpu", torch.float32).contiguous()
        self._remember(key, embedding)
        if disk_dir is not None:
            self._write_disk(disk_dir, key, embedding)

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0
        self.hits = self.misses = 0

    def _remember(self, key: str, embedding: torch.Tensor) -> None:
        if key in self._entries:
            self._bytes -= _nbytes(self._entries.pop(key))
        self._entries[key] = embedding
        self._bytes += _nbytes(embedding)
        while self._entries and (len(self._entries) > self.max_entries or self._bytes > self.max_bytes):
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= _nbytes(evicted)

    @staticmethod
    def _disk_path(disk_dir: Path, key: str) -> Path:
        return disk_dir / key[:2] / f"{key}.safetensors"

    def _read_disk(self, disk_dir: Path, key: str) -> torch.Tensor | None:
        path = self._disk_path(disk_dir, key)
        if not path.is_file():
            return None
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            return load_file(path)["embedding"]
        except (SafetensorError, KeyError, OSError) as err:
            log.warning("VideoDiT: ignoring unreadable cached prompt %s (%s)", path, err)
            return None

    def _write_disk(self, disk_dir: Path, key: str, embedding: torch.Tensor) -> None:
        from safetensors.torch import save_file

        path = self._disk_path(disk_dir, key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(f".{os.getpid()}.partial")
            save_file({"embedding": embedding}, partial)
            os.replace(partial, path)  # readers never see a half-written file
        except OSError as err:
            log.warning("VideoDiT: could not write the prompt cache at %s (%s)", path, err)


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()

