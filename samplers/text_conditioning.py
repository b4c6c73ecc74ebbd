"""Prompts -> VIDEODIT_CONDITIONING, through the prompt cache; and ComfyUI's native CONDITIONING.

Both paths end in the same form: ``[1, text_len, D]`` float32 embeddings whose rows past the
real token count are zero (Wan: 512 rows; the length comes from the family's text spec).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.conditioning import VideoDiTConditioning
from ..core.prompt_cache import PromptCache, prompt_key
from ..core.text import clean_prompt
from ..errors import InputError

log = logging.getLogger(__name__)

UMT5_DIM = 4096


@dataclass(frozen=True)
class EncodedPrompt:
    embedding: torch.Tensor   # [tokens, D] float32, unpadded
    cached: bool


def encode_prompt(encoder, text: str, *, cache: PromptCache,
                  disk_dir: Path | None = None) -> EncodedPrompt:
    """One prompt's unpadded embedding, from the cache when the same text was encoded before."""
    cleaned = clean_prompt(text)
    key = prompt_key(encoder.identity, encoder.dtype, cleaned)
    hit = cache.get(key, disk_dir=disk_dir)
    if hit is not None:
        if hit.shape[0] >= encoder.tokenizer.max_length:
            encoder.tokenizer.encode(cleaned, clean=False)  # repeat the truncation warning
        return EncodedPrompt(hit, True)
    tokens = encoder.tokenizer.encode(cleaned, clean=False)
    embedding = encoder.run(tokens.ids)
    cache.put(key, embedding, disk_dir=disk_dir)
    return EncodedPrompt(embedding, False)


def pad_to_text_len(embedding: torch.Tensor, text_len: int) -> torch.Tensor:
    """``[tokens, D]`` -> ``[1, text_len, D]`` with zero rows after the real tokens."""
    padded = embedding.new_zeros(1, text_len, embedding.shape[-1])
    count = min(embedding.shape[0], text_len)
    padded[0, :count] = embedding[:count]
    return padded


def encode_conditioning(encoder, positive: str, negative: str, *, text_len: int,
                        cache: PromptCache, disk_dir: Path | None = None) -> VideoDiTConditioning:
    pos = encode_prompt(encoder, positive, cache=cache, disk_dir=disk_dir)
    neg = encode_prompt(encoder, negative, cache=cache, disk_dir=disk_dir)
    return VideoDiTConditioning(
        positive=pad_to_text_len(pos.embedding, text_len),
        negative=pad_to_text_len(neg.embedding, text_len),
        positive_text=positive, negative_text=negative,
        positive_tokens=pos.embedding.shape[0], negative_tokens=neg.embedding.shape[0])


def from_native_conditioning(positive, negative=None, *, text_len: int) -> VideoDiTConditioning:
    """ComfyUI CONDITIONING from CLIPLoader(type=wan) + CLIP Text Encode -> ours.

    Native Wan conditioning is ``[[cond, {...}]]`` with ``cond`` ``[1, max(512, n), 4096]`` and
    rows past the prompt zeroed, so the conversion is a trim (or zero-pad) to ``text_len`` rows.
    """
    pos, pos_tokens = _native_tensor(positive, "positive", text_len)
    neg, neg_tokens = ((None, 0) if negative is None
                       else _native_tensor(negative, "negative", text_len))
    if neg is not None and neg.shape[0] != pos.shape[0] and neg.shape[0] != 1:
        raise InputError(f"positive has batch {pos.shape[0]} but negative has {neg.shape[0]}",
                         input="negative", fix="encode one prompt per conditioning")
    return VideoDiTConditioning(positive=pos, negative=neg, positive_tokens=pos_tokens,
                                negative_tokens=neg_tokens)


def _native_tensor(conditioning, input: str, text_len: int) -> tuple[torch.Tensor, int]:
    if not isinstance(conditioning, (list, tuple)) or not conditioning:
        raise InputError("expected ComfyUI CONDITIONING (a list of [tensor, dict])", input=input,
                         fix="connect the output of ComfyUI's CLIP Text Encode")
    if len(conditioning) > 1:
        raise InputError(f"this CONDITIONING holds {len(conditioning)} entries (from Conditioning "
                         "Combine/Concat or area nodes); only a single prompt can be converted",
                         input=input, fix="connect CLIP Text Encode directly")
    entry = conditioning[0]
    cond = entry[0] if isinstance(entry, (list, tuple)) and entry else None
    if not isinstance(cond, torch.Tensor) or cond.ndim != 3:
        raise InputError("the CONDITIONING entry has no [batch, tokens, dim] tensor", input=input,
                         fix="connect the output of ComfyUI's CLIP Text Encode")
    if cond.shape[-1] != UMT5_DIM:
        raise InputError(f"this CONDITIONING has width {cond.shape[-1]}, but Wan reads umT5 "
                         f"embeddings of width {UMT5_DIM}", input=input,
                         fix="load umt5_xxl with ComfyUI's Load CLIP node set to type 'wan'")
    cond = cond.detach().to("cpu", torch.float32)
    nonzero = cond.abs().amax(dim=(0, 2)) > 0
    tokens = int(nonzero.nonzero().max()) + 1 if nonzero.any() else 0
    if tokens > text_len:
        log.warning("VideoDiT: the %s prompt is %d tokens long; the model reads %d, so the last "
                    "%d are dropped. Shorten the prompt to keep all of it.", input, tokens,
                    text_len, tokens - text_len)
    padded = cond.new_zeros(cond.shape[0], text_len, cond.shape[-1])
    keep = min(cond.shape[1], text_len)
    padded[:, :keep] = cond[:, :keep]
    return padded, min(tokens, text_len)
