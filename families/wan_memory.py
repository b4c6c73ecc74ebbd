"""How many bytes one Wan DiT forward needs besides its weights, from the config and latent.

The estimate follows the network in ``networks/wan_dit.py`` tensor by tensor: what stays alive
for the whole block loop (the float32 residual stream, the time embeddings, the text context,
the rotary table), and on top of it the largest set of tensors alive at once inside one block
(the self-attention projections around the attention call, or the feed-forward's hidden layer
with its activation). It assumes a memory-efficient attention kernel (flash / memory-efficient
SDPA on CUDA, the flash kernel on CPU); a kernel that materialises the attention matrix needs
far more and is not modelled. ``bench/memory_plan.py`` checks it against peaks measured on
the CPU.
"""
from __future__ import annotations

import torch

from ..networks.wan_dit import CLIP_TOKENS, WanDiTConfig
from .memory_plan import StepMemory

FLOAT32 = 4


def wan_step_memory(config: WanDiTConfig, latent_shape: tuple[int, ...], *,
                    compute_dtype: torch.dtype, passes: int = 1) -> StepMemory:
    """One forward of ``passes`` stacked copies of a ``[B, C, T, h, w]`` latent."""
    batch, _, frames, height, width = latent_shape
    batch *= passes
    pt, ph, pw = config.patch_size
    tokens = (frames // pt) * (height // ph) * (width // pw)
    n = batch * tokens                                    # video tokens of the whole batch
    dim, ffn = config.dim, config.ffn_dim
    s = torch.empty((), dtype=compute_dtype).element_size()
    f = FLOAT32
    widen = f if s != f else 0       # the float32 copy a norm makes of a narrower input
    narrow = s if s != f else 0      # the cast back to the compute dtype (none in fp32)
    context = config.text_len + (2 * CLIP_TOKENS if config.has_image_input else 0)
    per_token_time = config.model_type == "ti2v"
    time_rows = batch * (tokens if per_token_time else 1)

    # Alive through the whole block loop. The caller keeps each block's input (the residual
    # stream before the block) until the block returns, beside the block's own new stream.
    persistent = (
        n * dim * f                                       # residual stream (block input)
        + time_rows * 7 * dim * f                         # e and e0 (6 modulation vectors)
        + batch * context * dim * s                       # projected text (+ image) tokens
        + tokens * config.head_dim * f                    # rotary table (complex64)
        + batch * config.in_dim * frames * height * width * s)  # the input latent itself
    modulation = time_rows * 6 * dim * f                  # this block's shift/scale/gate
    unit = n * dim                                        # one [B, L, dim] tensor, per byte

    # RMS norm as the CPU runs it: the float32 copy, x * rsqrt(mean(x^2)), times the weight.
    norm = widen + 2 * f
    # The phases of one block, each: what is alive at its fullest moment, per unit.
    pre_norm = max(2 * f, f + narrow)                     # layer norm, modulated, cast
    self_attention = s + max(
        s + norm,                                         # q's projection and norm
        s + s + norm,                                     # k's, with q kept
        s + 2 * f,                                        # q, k's norm and its rotation
        3 * s + s + f,                                    # q, k, v, attention output (+ f32 work)
        6 * s)                                            # ... its re-layout, projection
    attention = (3 * s + s + f) * unit
    residual = s + widen + f                              # y, y in float32, the new stream
    # After the self-attention the block holds its new stream and the self-attention output.
    held = f + s
    cross_attention = held + max(pre_norm, s + s + norm, s + 4 * s, residual)
    feed_forward = held * unit + max(
        max(pre_norm, residual) * unit,
        unit * s + 2 * n * ffn * s,                       # input, hidden, its activation
        unit * 2 * s + n * ffn * s)                       # input, activation, output
    # fp8 layers widen their weight for each call.
    dequantized = ffn * dim * s if config.fp8_linears else 0
    block_peak = modulation + dequantized + max(pre_norm * unit, self_attention * unit, residual * unit,
                                  cross_attention * unit, feed_forward)
    return StepMemory(tokens=tokens, persistent=int(persistent), block_peak=int(block_peak),
                      attention=int(attention))

