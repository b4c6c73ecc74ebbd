"""umT5 encoder (the text encoder of the Wan models).

A T5 v1.1 encoder with two umT5 traits: every block owns its relative-position bias (T5 shares
the first block's), and the feed-forward is gated GELU (tanh approximation). No linear layer has a
bias and attention logits are not scaled by 1/sqrt(d).

Attribute names mirror the transformers / ComfyUI checkpoint keys (``shared``,
``encoder.block.N.layer.0.SelfAttention.q``, ...), so loading is a plain ``load_state_dict``
after the renames in ``model_loaders/umt5_loader.py``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


@dataclass(frozen=True)
class UMT5Config:
    vocab_size: int = 256384
    d_model: int = 4096
    d_kv: int = 64
    d_ff: int = 10240
    num_layers: int = 24
    num_heads: int = 64
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    layer_norm_epsilon: float = 1e-6

    @property
    def inner_dim(self) -> int:
        return self.d_kv * self.num_heads


UMT5_XXL = UMT5Config()


class UMT5LayerNorm(nn.Module):
    """RMS norm without mean subtraction or bias; the statistics are taken in float32."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        variance = x.float().pow(2).mean(-1, keepdim=True)
        return self.weight * (x * torch.rsqrt(variance + self.eps)).to(self.weight.dtype)


def relative_position_buckets(query_len: int, key_len: int, num_buckets: int, max_distance: int,
                              device: torch.device) -> torch.Tensor:
    """Bidirectional T5 buckets ``[query_len, key_len]`` of ``key_pos - query_pos``.

    Half the buckets hold keys after the query. Within each half, distances below a quarter of
    the buckets get their own bucket; longer ones share log-spaced buckets up to ``max_distance``.
    """
    offset = torch.arange(key_len, device=device)[None, :] - torch.arange(query_len, device=device)[:, None]
    half = num_buckets // 2
    bucket = (offset > 0).long() * half
    distance = offset.abs()
    exact = half // 2
    log_bucket = exact + (torch.log(distance.float().clamp(min=1) / exact)
                          / math.log(max_distance / exact) * (half - exact)).long()
    log_bucket = log_bucket.clamp(max=half - 1)
    return bucket + torch.where(distance < exact, distance, log_bucket)


class UMT5Attention(nn.Module):
    def __init__(self, config: UMT5Config):
        super().__init__()
        self.num_heads = config.num_heads
        self.num_buckets = config.relative_attention_num_buckets
        self.max_distance = config.relative_attention_max_distance
        self.q = nn.Linear(config.d_model, config.inner_dim, bias=False)
        self.k = nn.Linear(config.d_model, config.inner_dim, bias=False)
        self.v = nn.Linear(config.d_model, config.inner_dim, bias=False)
        self.o = nn.Linear(config.inner_dim, config.d_model, bias=False)
        self.relative_attention_bias = nn.Embedding(self.num_buckets, config.num_heads)

    def position_bias(self, length: int, device: torch.device) -> torch.Tensor:
        buckets = relative_position_buckets(length, length, self.num_buckets, self.max_distance, device)
        return rearrange(self.relative_attention_bias(buckets), "q k h -> 1 h q k")

    def forward(self, x: torch.Tensor, key_mask_bias: torch.Tensor | None) -> torch.Tensor:
        q, k, v = (rearrange(proj(x), "b l (h d) -> b h l d", h=self.num_heads)
                   for proj in (self.q, self.k, self.v))
        bias = self.position_bias(x.shape[1], x.device).float()
        if key_mask_bias is not None:
            # Added in float32 and clamped so a masked key's logit stays finite in fp16/bf16.
            bias = (bias + key_mask_bias).clamp(min=torch.finfo(x.dtype).min)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), scale=1.0)
        return self.o(rearrange(out, "b h l d -> b l (h d)"))


class UMT5GatedFeedForward(nn.Module):
    def __init__(self, config: UMT5Config):
        super().__init__()
        self.wi_0 = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.wi_1 = nn.Linear(config.d_model, config.d_ff, bias=False)
        self.wo = nn.Linear(config.d_ff, config.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.wo(F.gelu(self.wi_0(x), approximate="tanh") * self.wi_1(x))


class UMT5SelfAttentionLayer(nn.Module):
    def __init__(self, config: UMT5Config):
        super().__init__()
        self.SelfAttention = UMT5Attention(config)
        self.layer_norm = UMT5LayerNorm(config.d_model, config.layer_norm_epsilon)

    def forward(self, x: torch.Tensor, key_mask_bias: torch.Tensor | None) -> torch.Tensor:
        return x + self.SelfAttention(self.layer_norm(x), key_mask_bias)


class UMT5FeedForwardLayer(nn.Module):
    def __init__(self, config: UMT5Config):
        super().__init__()
        self.DenseReluDense = UMT5GatedFeedForward(config)
        self.layer_norm = UMT5LayerNorm(config.d_model, config.layer_norm_epsilon)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.DenseReluDense(self.layer_norm(x))


def _clamp_fp16(x: torch.Tensor) -> torch.Tensor:
    # umT5-XXL activations exceed the fp16 range in a few channels; keep them finite as the
    # reference implementations do.
    if x.dtype == torch.float16:
        limit = torch.finfo(torch.float16).max - 1000
        return x.clamp(-limit, limit)
    return x


class UMT5Block(nn.Module):
    def __init__(self, config: UMT5Config):
        super().__init__()
        self.layer = nn.ModuleList([UMT5SelfAttentionLayer(config), UMT5FeedForwardLayer(config)])

    def forward(self, x: torch.Tensor, key_mask_bias: torch.Tensor | None) -> torch.Tensor:
        x = _clamp_fp16(self.layer[0](x, key_mask_bias))
        return _clamp_fp16(self.layer[1](x))


class UMT5Stack(nn.Module):
    def __init__(self, config: UMT5Config):
        super().__init__()
        self.block = nn.ModuleList(UMT5Block(config) for _ in range(config.num_layers))
        self.final_layer_norm = UMT5LayerNorm(config.d_model, config.layer_norm_epsilon)


class UMT5Encoder(nn.Module):
    def __init__(self, config: UMT5Config):
        super().__init__()
        self.config = config
        self.shared = nn.Embedding(config.vocab_size, config.d_model)
        self.encoder = UMT5Stack(config)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None
                ) -> torch.Tensor:
        """Hidden states ``[B, L, d_model]``; rows where ``attention_mask`` is 0 are zero.

        Masked positions are excluded as keys, so a prompt encoded inside a padded batch gives
        the same rows as the prompt encoded alone.
        """
        x = self.shared(input_ids)
        key_mask_bias = None
        if attention_mask is not None:
            keep = attention_mask.bool()
            key_mask_bias = torch.zeros(keep.shape, device=x.device, dtype=torch.float32)
            key_mask_bias = rearrange(key_mask_bias.masked_fill(~keep, -math.inf),
                                      "b k -> b 1 1 k")
        for block in self.encoder.block:
            x = block(x, key_mask_bias)
        x = self.encoder.final_layer_norm(x)
        if attention_mask is not None:
            x = x * attention_mask[..., None].to(x.dtype)
        return x
