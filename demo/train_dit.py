"""Train the demo text encoder and DiT together on precomputed latents of procedural clips.

* Tokenizer: a SentencePiece model trained on the training captions (pad 0, EOS 1, unk 2, as
  umT5's), later embedded in the text-encoder file as ``spiece_model``. BPE rather than umT5's
  unigram type: on this small vocabulary unigram training stops at ~100 pieces and splits
  colour words ("p", "in", "k"), BPE keeps each word whole.
* Text encoder: a tiny umT5 (our ``UMT5Encoder``), trained jointly with the DiT from scratch.
* DiT: a TI2V-type Wan DiT on the 16 Wan 2.1 latent channels. Half the training samples keep
  the first latent frame clean with timestep 0 on its tokens and no loss there, which is Wan 2.2
  TI2V's first-frame conditioning, so one model does text-to-video and image-to-video.

Flow matching as in Wan: ``x_t = (1 - s) x0 + s noise``, the network predicts ``noise - x0`` at
timestep ``1000 s``; ``s`` is drawn uniformly and shifted like the sampler's schedule. Prompts
are dropped 10% of the time (the empty prompt), so classifier-free guidance works. Weights are
averaged (EMA) and the average is what gets saved.
"""
from __future__ import annotations

import contextlib
import io
import math
import random
import time

import torch
import torch.nn.functional as F

from ..model_loaders.tokenizer import UMT5Tokenizer
from ..networks.umt5 import UMT5Config, UMT5Encoder
from ..networks.wan_dit import WanDiT, WanDiTConfig
from .captions import caption

TEXT_DIM = 128
# Patch 1x1x1 rather than Wan's 1x2x2: on 8x8 latents a 2x2 patch makes 16-pixel tokens, and
# the clips' motion (4-8 pixels per latent frame) would be a fraction of a token, which this
# small network learned to ignore (objects stood still); with one token per latent pixel it
# is a shift by one token, which attention with 3D RoPE expresses directly.
DIT_CONFIG = dict(model_type="ti2v", in_dim=16, out_dim=16, dim=192, ffn_dim=576, num_heads=3,
                  num_layers=6, text_dim=TEXT_DIM, freq_dim=64, patch_size=(1, 1, 1))
TEXT_LAYERS, TEXT_HEADS, TEXT_FF = 2, 4, 256
VOCAB_SIZE = 256
TRAIN_SHIFT = 3.0
PROMPT_DROPOUT = 0.1
FIRST_FRAME_SHARE = 0.5
CAPTION_VARIANTS = 6


def train_tokenizer(captions: list[str]) -> bytes:
    """A SentencePiece model (serialized proto) for the caption vocabulary."""
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(captions), model_writer=model, vocab_size=VOCAB_SIZE,
        hard_vocab_limit=False, model_type="bpe", character_coverage=1.0, pad_id=0,
        eos_id=1, unk_id=2, bos_id=-1, minloglevel=2, num_threads=1)
    return model.getvalue()


def build_text_encoder(vocab_size: int) -> UMT5Encoder:
    config = UMT5Config(vocab_size=vocab_size, d_model=TEXT_DIM, d_kv=TEXT_DIM // TEXT_HEADS,
                        d_ff=TEXT_FF, num_layers=TEXT_LAYERS, num_heads=TEXT_HEADS)
    encoder = UMT5Encoder(config)
    for name, p in encoder.named_parameters():  # T5-like small init
        if p.ndim == 2:
            torch.nn.init.normal_(p, std=1.0 if name.startswith("shared") else p.shape[1] ** -0.5)
    return encoder


def build_dit() -> WanDiT:
    dit = WanDiT(WanDiTConfig(**DIT_CONFIG))
    torch.nn.init.zeros_(dit.head.head.weight)  # start by predicting zero flow
    torch.nn.init.zeros_(dit.head.head.bias)
    return dit


def caption_variants(specs, seed: int) -> list[list[str]]:
    """CAPTION_VARIANTS differently worded captions of every clip."""
    return [[caption(spec, random.Random(seed * 1_000_003 + i * CAPTION_VARIANTS + v))
             for v in range(CAPTION_VARIANTS)] for i, spec in enumerate(specs)]


def encode_text(encoder: UMT5Encoder, batch_ids: list[tuple[int, ...]]) -> torch.Tensor:
    """Unpadded prompts -> ``[B, L, D]`` with rows past each prompt zero (as at inference)."""
    length = max(len(ids) for ids in batch_ids)
    ids = torch.zeros(len(batch_ids), length, dtype=torch.long)
    mask = torch.zeros(len(batch_ids), length, dtype=torch.long)
    for row, prompt in enumerate(batch_ids):
        ids[row, :len(prompt)] = torch.tensor(prompt)
        mask[row, :len(prompt)] = 1
    return encoder(ids, mask)


def compact_context(context: torch.Tensor, lengths: list[int], text_len: int
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Text rows for training without 512 padding rows: the prompt rows plus one zero row.

    At inference the DiT sees each prompt zero-padded to ``text_len`` rows; the padding rows are
    identical, so attention to them equals attention to one of them with its logit raised by
    ``log(count)``. Returns ``(context [B, L+1, D], attention bias [B, L+1])`` with that single
    padding row per prompt (``-inf`` for the rest), which gives the same output at a fraction of
    the cost (checked against the padded forward in the tests).
    """
    batch, length, dim = context.shape
    context = torch.cat([context, context.new_zeros(batch, 1, dim)], dim=1)
    bias = torch.full((batch, length + 1), -math.inf)
    for row, n in enumerate(lengths):
        bias[row, :n] = 0.0
        bias[row, n] = math.log(text_len - n)
    return context, bias


@contextlib.contextmanager
def padding_as_bias(dit: WanDiT, bias: torch.Tensor):
    """Run ``dit`` on a :func:`compact_context` instead of a 512-row padded one."""
    def embed_only(context, clip_features, dtype):
        return dit.text_embedding(context.to(dtype))

    def keys_values(attn, context):
        heads = attn.num_heads
        k = attn.norm_k(attn.k(context)).to(context.dtype).unflatten(-1, (heads, -1))
        v = attn.v(context).unflatten(-1, (heads, -1))
        return k.transpose(1, 2), v.transpose(1, 2)

    def cross_attention(attn, x, keys_values, attention=None):
        q = attn.norm_q(attn.q(x)).to(x.dtype).unflatten(-1, (attn.num_heads, -1)).transpose(1, 2)
        k, v = keys_values
        mask = bias[:, None, None, :].to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return attn.o(out.transpose(1, 2).flatten(2))

    dit._context = embed_only
    for block in dit.blocks:
        attn = block.cross_attn
        attn.keys_values = (lambda a: lambda c: keys_values(a, c))(attn)
        attn.forward = (lambda a: lambda x, kv, attention=None: cross_attention(a, x, kv))(attn)
    try:
        yield
    finally:
        del dit._context
        for block in dit.blocks:
            del block.cross_attn.forward, block.cross_attn.keys_values


def shifted(u: torch.Tensor, shift: float) -> torch.Tensor:
    return shift * u / (1 + (shift - 1) * u)


def train_dit(latents: torch.Tensor, captions: list[list[str]], spiece: bytes, *, steps: int,
              seed: int = 0, batch: int = 16, lr: float = 6e-4, ema_decay: float = 0.998,
              first_frame_weight: float = 1.0, init: tuple[dict, dict] | None = None,
              log=print) -> tuple[UMT5Encoder, WanDiT]:
    """``latents``: ``[N, 16, T, h, w]`` normalised (model-space) latents of the clips.

    ``first_frame_weight`` scales the loss on latent frame 0 of text-to-video samples: that
    frame alone fixes where the object starts, and with too little weight the model drew it
    faintly and let the object fade in, which reads as growing rather than moving.
    ``init``: (text encoder, DiT) state dicts to continue from instead of a fresh start; they
    must have been trained with the same ``spiece``.
    """
    torch.manual_seed(seed)
    rng = random.Random(seed)
    tokenizer = UMT5Tokenizer(spiece, source="demo")
    tokens = [[tokenizer.encode(c).ids for c in variants] for variants in captions]
    empty = tokenizer.encode("").ids
    encoder, dit = build_text_encoder(tokenizer.vocab_size), build_dit()
    if init is not None:
        encoder.load_state_dict(init[0])
        dit.load_state_dict(init[1])
    params = list(encoder.parameters()) + list(dit.parameters())
    ema = [p.detach().clone() for p in params]
    optimiser = torch.optim.AdamW(params, lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
    _, _, frames, height, width = latents.shape
    _, ph, pw = dit.config.patch_size
    per_frame = (height // ph) * (width // pw)
    start, running = time.monotonic(), None
    for step in range(steps):
        progress = step / steps
        for group in optimiser.param_groups:
            group["lr"] = lr * min(1.0, (step + 1) / 100) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))
        index = [rng.randrange(len(latents)) for _ in range(batch)]
        x0 = latents[index].float()
        prompts = [empty if rng.random() < PROMPT_DROPOUT else rng.choice(tokens[i]) for i in index]
        sigma = shifted(torch.rand(batch), TRAIN_SHIFT)
        noise = torch.randn_like(x0)
        s = sigma.view(-1, 1, 1, 1, 1)
        x_t = (1 - s) * x0 + s * noise
        target = noise - x0
        timestep = (sigma * 1000).view(-1, 1).repeat(1, frames * per_frame)
        first = torch.rand(batch) < FIRST_FRAME_SHARE
        x_t[first, :, 0] = x0[first, :, 0]
        timestep[first, :per_frame] = 0.0
        weight = torch.ones_like(x0)
        weight[:, :, 0] = first_frame_weight
        weight[first, :, 0] = 0.0
        context, bias = compact_context(encode_text(encoder, prompts), [len(p) for p in prompts],
                                        dit.config.text_len)
        with padding_as_bias(dit, bias):
            pred = dit(x_t, timestep, context)
        loss = ((pred - target) ** 2 * weight).sum() / weight.sum()
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimiser.step()
        decay = min(ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for average, p in zip(ema, params):
                average.lerp_(p.detach(), 1 - decay)
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if (step + 1) % 50 == 0:
            log(f"dit step {step + 1}/{steps} loss {running:.4f} "
                f"({time.monotonic() - start:.0f}s)")
    with torch.no_grad():
        for average, p in zip(ema, params):
            p.copy_(average)
    log(f"dit trained: {steps} steps in {time.monotonic() - start:.0f}s")
    encoder.eval().requires_grad_(False)
    dit.eval().requires_grad_(False)
    return encoder, dit
