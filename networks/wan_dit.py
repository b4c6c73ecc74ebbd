"""The Wan diffusion transformer (Wan 2.1 T2V/I2V/FLF2V/VACE, Wan 2.2 TI2V, A14B and VACE-Fun).

Module names mirror Wan's original checkpoints (``blocks.N.self_attn.q``, ``ffn.0``,
``modulation``, ``head.head`` ...), so an original or ComfyUI file loads with
``load_state_dict`` as it is, and a diffusers file after the rename in
``model_loaders/wan_dit_keys.py``.

One block, with ``e`` the per-sample (or, for TI2V, per-token) time modulation::

    x = x + gate1 * self_attn(modulate(norm1(x), shift1, scale1))      # 3-axis RoPE inside
    x = x + cross_attn(norm3(x), text [+ image])                        # norm3 has weights
    x = x + gate2 * ffn(modulate(norm2(x), shift2, scale2))

Norms, modulation and residual sums run in float32 (as the reference does); the matmuls and
attention run in the compute dtype.

VACE models (``vace_layers`` set) carry a second, shorter stack of the same blocks
(``vace_blocks.N``) over a second token stream made from the VACE context (control video
latents and mask, ``vace_patch_embedding``). The first VACE block starts that stream as
``before_proj(context tokens) + the main stream's embedded tokens``; every VACE block's output,
through its ``after_proj``, is a hint added (times the strength) to the main stream right after
main block ``vace_layers[n]``. A VACE block reads only its own stream, the embedded tokens, the
time and the text, never the main stream past the embedding, so running VACE block n right
after main block ``vace_layers[n]`` (as ComfyUI does) gives the same hints as running them all
first (as diffusers does) while keeping one VACE stream alive instead of every hint.

Two things a caller may hand to :meth:`WanDiT.forward` to run faster without changing the
numbers: the attention kernel (``networks/attention.py``) and a :class:`CrossAttentionCache`,
which keeps each block's cross-attention keys and values of one text input between calls
(they depend only on the text and the weights, not on the latent or the timestep).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .attention import Attention, sdpa
from .quantized_linear import QuantizedLinear

MODEL_TYPES = ("t2v", "i2v", "flf2v", "ti2v")
CLIP_TOKENS = 257           # CLIP ViT-H/14 tokens per image (Wan 2.1 I2V / FLF2V)
CLIP_DIM = 1280
ROPE_MAX_POSITIONS = 1024   # positions per axis the rotary tables cover
ROPE_THETA = 10000.0


@dataclass
class WanDiTConfig:
    model_type: str = "t2v"             # "t2v" | "i2v" (CLIP image tokens) | "flf2v" | "ti2v"
    in_dim: int = 16                    # noise channels (+ y channels for I2V)
    out_dim: int = 16
    dim: int = 1536
    ffn_dim: int = 8960
    num_heads: int = 12
    num_layers: int = 30
    text_dim: int = 4096
    freq_dim: int = 256
    patch_size: tuple[int, int, int] = (1, 2, 2)
    eps: float = 1e-6
    text_len: int = 512
    cross_attn_norm: bool = True        # every released model has norm3 weights
    image_dim: int = CLIP_DIM
    # CLIP image tokens in cross-attention: Wan 2.1 I2V/FLF2V yes; Wan 2.2 A14B I2V (y only) no.
    clip_input: bool | None = None      # None: from model_type
    fp8_linears: bool = False           # block linears as QuantizedLinear (fp8 weights)
    fp8_dtype: torch.dtype = field(default=torch.float8_e4m3fn)
    # VACE models: the main blocks after which VACE block 0, 1, ... adds its hint (rising from
    # 0: 1.3B every 2nd of 30, 14B every 5th of 40); empty for every other model.
    vace_layers: tuple[int, ...] = ()
    vace_in_dim: int = 96               # VACE context channels: 16 + 16 latent + 64 mask

    def __post_init__(self):
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"model_type must be one of {MODEL_TYPES}, got {self.model_type!r}")
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        self.patch_size = tuple(self.patch_size)
        if self.clip_input is None:
            self.clip_input = self.model_type in ("i2v", "flf2v")
        self.vace_layers = tuple(int(i) for i in self.vace_layers)
        layers = self.vace_layers
        if layers and (layers[0] != 0 or list(layers) != sorted(set(layers))
                       or layers[-1] >= self.num_layers):
            raise ValueError(f"vace_layers must rise from 0 and stay below num_layers "
                             f"({self.num_layers}), got {layers}")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    @property
    def has_image_input(self) -> bool:
        return bool(self.clip_input)

    @property
    def has_vace(self) -> bool:
        return bool(self.vace_layers)


def timestep_embedding(timesteps: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding ``[cos | sin]`` of flat timesteps (float64 angles, float32 out)."""
    half = dim // 2
    position = timesteps.to(torch.float64)
    frequencies = torch.pow(10000.0, -torch.arange(half, dtype=torch.float64,
                                                   device=timesteps.device) / half)
    angles = torch.outer(position, frequencies)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1).to(torch.float32)


def rope_axis_dims(head_dim: int) -> tuple[int, int, int]:
    """Channels of a head given to (frame, height, width) rotations; height = width."""
    spatial = 2 * (head_dim // 6)
    return head_dim - 2 * spatial, spatial, spatial


def rope_rotations(grid: tuple[int, int, int], head_dim: int, device: torch.device) -> torch.Tensor:
    """Unit rotations ``[tokens, 1, head_dim/2, 2]`` (float32 cos, sin) for a (frames, h, w) grid.

    Channel pair i of every head turns by position x frequency along one axis, the frame axis
    taking the first ``t_dim/2`` pairs, then height, then width. Angles are formed in float64
    like the reference's tables. Kept real (``view_as_complex`` of it is the complex form) so
    that a compiled block, which cannot take complex inputs, can use it too.
    """
    frames, height, width = grid
    tables = []
    for axis_dim, length, shape in zip(rope_axis_dims(head_dim), grid,
                                       ((frames, 1, 1), (1, height, 1), (1, 1, width))):
        if length > ROPE_MAX_POSITIONS:
            raise ValueError(f"{length} patches along one axis exceed the rotary table "
                             f"({ROPE_MAX_POSITIONS})")
        inv_freq = 1.0 / ROPE_THETA ** (torch.arange(0, axis_dim, 2, dtype=torch.float64,
                                                     device=device) / axis_dim)
        angles = torch.outer(torch.arange(length, dtype=torch.float64, device=device), inv_freq)
        tables.append(angles.reshape(*shape, -1).expand(frames, height, width, -1))
    angles = torch.cat(tables, dim=-1).reshape(frames * height * width, 1, head_dim // 2)
    return torch.view_as_real(torch.polar(torch.ones_like(angles), angles).to(torch.complex64))


def apply_rope(x: torch.Tensor, rotations: torch.Tensor, *, overwrite: bool = False
               ) -> torch.Tensor:
    """Rotate adjacent channel pairs of ``x`` [B, L, heads, D] (float32; returns float32).
    ``overwrite``: ``x`` is a float32 buffer the caller no longer needs; rotate it in place.

    Eagerly this is one complex multiply: measured on CPU it is 2.5x faster than the same
    rotation written with real cos/sin products (several elementwise passes). ``torch.compile``
    cannot generate code for complex numbers, so a compiled block takes the real form, which
    it fuses into one kernel.
    """
    pairs = x.to(torch.float32).unflatten(-1, (-1, 2))
    if torch.compiler.is_compiling():
        a, b = pairs.unbind(-1)
        cos, sin = rotations.unbind(-1)
        return torch.stack([a * cos - b * sin, a * sin + b * cos], dim=-1).flatten(-2)
    if overwrite and x.dtype == torch.float32 and not torch.is_grad_enabled():
        turned = torch.view_as_complex(pairs).mul_(torch.view_as_complex(rotations))
    else:
        turned = torch.view_as_complex(pairs) * torch.view_as_complex(rotations)
    return torch.view_as_real(turned).flatten(-2)


class RMSNorm(nn.Module):
    """RMS norm over all heads' channels together; computes and returns float32 (the caller
    casts once, after RoPE where one follows)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():  # the in-place steps below would break autograd
            return F.rms_norm(x.float(), (x.shape[-1],), self.weight.float(), self.eps)
        # F.rms_norm's steps written out, scaling a float32 copy of x in place: the same
        # numbers (bit for bit), but two fewer fresh [tokens, dim] buffers, which made it
        # 1.5x faster on CPU.
        out = x.to(torch.float32, copy=True)
        inverse_rms = out.square().mean(-1, keepdim=True).add_(self.eps).rsqrt_()
        return out.mul_(inverse_rms).mul_(self.weight.float())


class LayerNorm(nn.LayerNorm):
    """LayerNorm computed in float32, returning float32 (callers modulate in float32)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.float() if self.weight is not None else None
        bias = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps)


def _linear(config: WanDiTConfig, in_features: int, out_features: int) -> nn.Module:
    if config.fp8_linears:
        return QuantizedLinear(in_features, out_features, fp8_dtype=config.fp8_dtype)
    return nn.Linear(in_features, out_features)


def _cpu_linear_kernel():
    """oneDNN's linear with the bias (and optionally GELU) applied inside the matmul, or None.

    On CPU in bf16, ``F.linear`` first copies the bias into the whole output and GELU is a
    second pass over the FFN's widest tensor; together they cost ~15% of a forward, more than
    all the norms. oneDNN adds both while the output is still in float32 registers (one
    rounding to bf16 instead of two). It is PyTorch's own fused op (what ``torch.compile``
    emits on CPU), reached through ``torch.ops.mkldnn``; builds without it use ``F.linear``.
    """
    if not torch.backends.mkldnn.is_available():
        return None
    return getattr(torch.ops.mkldnn, "_linear_pointwise", None)


_CPU_LINEAR = _cpu_linear_kernel()


def _has_hooks(module: nn.Module) -> bool:
    return bool(module._forward_hooks or module._forward_pre_hooks
                or nn.modules.module._global_forward_hooks
                or nn.modules.module._global_forward_pre_hooks)


def _onednn_fits(layer: nn.Module, x: torch.Tensor) -> bool:
    """Whether oneDNN's fused linear computes ``layer`` here: a plain ``nn.Linear`` with bf16
    weights and input on the CPU, no hooks on it (a LoRA on fp8 layers or a patch may add its
    change with a hook), no autograd, not inside ``torch.compile`` (which cannot lower this op
    with the weights as inputs, and fuses by itself)."""
    return (_CPU_LINEAR is not None and type(layer) is nn.Linear and x.device.type == "cpu"
            and x.dtype == layer.weight.dtype == torch.bfloat16
            and (layer.bias is None or layer.bias.dtype == torch.bfloat16)
            and not torch.is_grad_enabled() and not _has_hooks(layer)
            and not torch.compiler.is_compiling())


def project(layer: nn.Module, x: torch.Tensor, *, gelu: bool = False) -> torch.Tensor:
    """``layer(x)``, then tanh-GELU when ``gelu``. Through oneDNN's fused linear where it fits
    (bias and GELU applied before the one rounding to bf16: at least as exact as the module);
    everything else (fp32, fp16, CUDA, fp8 ``QuantizedLinear``) runs the module itself."""
    if _onednn_fits(layer, x):
        if gelu:
            return _CPU_LINEAR(x, layer.weight, layer.bias, "gelu", [], "tanh")
        return _CPU_LINEAR(x, layer.weight, layer.bias, "none", [], "")
    y = layer(x)
    return F.gelu(y, approximate="tanh") if gelu else y


def _gelu_mlp(mlp: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """A ``Linear, GELU(tanh), Linear`` stack (the FFN, the text embedding), with the GELU
    fused into the first matmul where :func:`project` can."""
    first, activation, second = mlp
    if _has_hooks(mlp) or _has_hooks(activation):
        return mlp(x)
    return project(second, project(first, x, gelu=True))


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, L, heads*D] -> [B, heads, L, D] (a view)."""
    return x.unflatten(-1, (heads, -1)).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """[B, heads, L, D] -> [B, L, heads*D]."""
    return x.transpose(1, 2).flatten(2)


class CrossAttentionCache:
    """Each block's cross-attention keys and values for one text input (and its CLIP image
    tokens), kept between forward calls.

    They depend only on the text and image embeddings and the block's weights, so while
    neither changes (one sampling run) they are the same at every step. The first forward with
    an empty cache computes them inside each block as it runs (a block streamed onto the device
    computes them while its weights are there) and stores them on the compute device; later
    forwards read them and skip the text embedding and the key/value projections entirely.
    The holder decides the lifetime: it must drop the cache when the weights change (the Wan
    family keeps one per text per sampling run, see ``families/wan.py``).
    """

    def __init__(self):
        # block module -> (text k, text v[, image k, image v]) as [B, heads, tokens, head_dim]
        self._per_block: dict[nn.Module, tuple[torch.Tensor, ...]] = {}

    def complete(self, blocks) -> bool:
        return all(block in self._per_block for block in blocks)

    def get(self, block: nn.Module) -> tuple[torch.Tensor, ...] | None:
        return self._per_block.get(block)

    def put(self, block: nn.Module, keys_values: tuple[torch.Tensor, ...]) -> None:
        self._per_block[block] = keys_values

    def __len__(self) -> int:
        return len(self._per_block)


class WanSelfAttention(nn.Module):
    def __init__(self, config: WanDiTConfig):
        super().__init__()
        dim = config.dim
        self.num_heads = config.num_heads
        self.q = _linear(config, dim, dim)
        self.k = _linear(config, dim, dim)
        self.v = _linear(config, dim, dim)
        self.o = _linear(config, dim, dim)
        self.norm_q = RMSNorm(dim, config.eps)
        self.norm_k = RMSNorm(dim, config.eps)

    def forward(self, x: torch.Tensor, rope: torch.Tensor,
                attention: Attention = sdpa) -> torch.Tensor:
        heads = self.num_heads
        # The norms return fresh float32 buffers: rotated in place.
        q = apply_rope(self.norm_q(project(self.q, x)).unflatten(-1, (heads, -1)), rope,
                       overwrite=True)
        k = apply_rope(self.norm_k(project(self.k, x)).unflatten(-1, (heads, -1)), rope,
                       overwrite=True)
        v = _heads(project(self.v, x), heads)
        out = attention(q.to(x.dtype).transpose(1, 2), k.to(x.dtype).transpose(1, 2), v)
        return project(self.o, _merge_heads(out))


class WanCrossAttention(nn.Module):
    """Attention from video tokens to the text tokens, plus (I2V/FLF2V) to the CLIP tokens."""

    def __init__(self, config: WanDiTConfig):
        super().__init__()
        dim = config.dim
        self.num_heads = config.num_heads
        self.text_len = config.text_len
        self.q = _linear(config, dim, dim)
        self.k = _linear(config, dim, dim)
        self.v = _linear(config, dim, dim)
        self.o = _linear(config, dim, dim)
        self.norm_q = RMSNorm(dim, config.eps)
        self.norm_k = RMSNorm(dim, config.eps)
        self.has_image_input = config.has_image_input
        if self.has_image_input:
            self.k_img = _linear(config, dim, dim)
            self.v_img = _linear(config, dim, dim)
            self.norm_k_img = RMSNorm(dim, config.eps)

    def keys_values(self, context: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(text k, text v[, image k, image v]) as contiguous [B, heads, tokens, head_dim] in
        the context's dtype: what :meth:`forward` attends to, and what a
        :class:`CrossAttentionCache` keeps."""
        dtype, heads = context.dtype, self.num_heads
        image_tokens = context.shape[1] - self.text_len
        text = context[:, image_tokens:]
        pairs = [(self.norm_k(project(self.k, text)).to(dtype), project(self.v, text))]
        if self.has_image_input and image_tokens > 0:
            image = context[:, :image_tokens]
            pairs.append((self.norm_k_img(project(self.k_img, image)).to(dtype),
                          project(self.v_img, image)))
        # Contiguous per head: SDPA reads them faster, and a cached copy is made only once.
        return tuple(_heads(t, heads).contiguous() for pair in pairs for t in pair)

    def forward(self, x: torch.Tensor, keys_values: tuple[torch.Tensor, ...],
                attention: Attention = sdpa) -> torch.Tensor:
        q = _heads(self.norm_q(project(self.q, x)).to(x.dtype), self.num_heads)
        out = attention(q, keys_values[0], keys_values[1])
        if len(keys_values) == 4:
            out = out + attention(q, keys_values[2], keys_values[3])
        return project(self.o, _merge_heads(out))


class WanAttentionBlock(nn.Module):
    def __init__(self, config: WanDiTConfig):
        super().__init__()
        dim = config.dim
        self.norm1 = LayerNorm(dim, config.eps, elementwise_affine=False)
        self.self_attn = WanSelfAttention(config)
        self.norm3 = (LayerNorm(dim, config.eps, elementwise_affine=True)
                      if config.cross_attn_norm else nn.Identity())
        self.cross_attn = WanCrossAttention(config)
        self.norm2 = LayerNorm(dim, config.eps, elementwise_affine=False)
        self.ffn = nn.Sequential(_linear(config, dim, config.ffn_dim), nn.GELU(approximate="tanh"),
                                 _linear(config, config.ffn_dim, dim))
        self.modulation = nn.Parameter(torch.zeros(1, 6, dim))

    def forward(self, x: torch.Tensor, e: torch.Tensor, context: torch.Tensor | None,
                rope: torch.Tensor, attention: Attention = sdpa,
                cross_cache: CrossAttentionCache | None = None) -> torch.Tensor:
        """x: float32 residual stream [B, L, dim]; e: [B, 1 or L, 6, dim] float32; the
        sub-layers compute in the context's dtype. ``context`` may be None when
        ``cross_cache`` already holds this block's keys and values."""
        return self.update(x, e, self._cross_keys_values(context, cross_cache), rope, attention)

    def update(self, x: torch.Tensor, e: torch.Tensor, keys_values: tuple[torch.Tensor, ...],
               rope: torch.Tensor, attention: Attention = sdpa) -> torch.Tensor:
        """The block's three residual updates of ``x``, given its cross-attention keys and
        values (their dtype is the compute dtype)."""
        dtype = keys_values[0].dtype
        shift1, scale1, gate1, shift2, scale2, gate2 = (
            self.modulation.float().unsqueeze(0) + e).unbind(2)
        y = self.self_attn(torch.addcmul(shift1, self.norm1(x), 1 + scale1).to(dtype), rope,
                           attention)
        # Sub-layer outputs are widened before joining the float32 stream: a mixed-dtype add
        # is 2x slower on CPU than the widening copy plus a float32 add.
        x = torch.addcmul(x, y.float(), gate1)
        x = x + self.cross_attn(self.norm3(x).to(dtype), keys_values, attention).float()
        y = _gelu_mlp(self.ffn, torch.addcmul(shift2, self.norm2(x), 1 + scale2).to(dtype))
        return torch.addcmul(x, y.float(), gate2)

    # Left out of a compiled block (a graph break): traced, the cache's growing dict would be
    # guarded on and recompile the block at every fill; eager, it runs once per text and run.
    @torch.compiler.disable
    def _cross_keys_values(self, context: torch.Tensor | None,
                           cross_cache: CrossAttentionCache | None) -> tuple[torch.Tensor, ...]:
        keys_values = cross_cache.get(self) if cross_cache is not None else None
        if keys_values is None:
            keys_values = self.cross_attn.keys_values(context)
            if cross_cache is not None:
                cross_cache.put(self, keys_values)
        return keys_values


class WanVaceBlock(WanAttentionBlock):
    """A block of the VACE branch (``vace_blocks.N``): an ordinary Wan block over the VACE
    stream, which also hands back ``after_proj`` of its output, the hint for the main stream.
    The first one (the only one with ``before_proj``) starts the stream from the embedded VACE
    context and the main stream's embedded tokens."""

    def __init__(self, config: WanDiTConfig, *, first: bool):
        super().__init__(config)
        self.before_proj = _linear(config, config.dim, config.dim) if first else None
        self.after_proj = _linear(config, config.dim, config.dim)

    def forward(self, c: torch.Tensor, x: torch.Tensor | None, e: torch.Tensor,
                context: torch.Tensor | None, rope: torch.Tensor, attention: Attention = sdpa,
                cross_cache: CrossAttentionCache | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(new VACE stream, float32; hint [B, L, dim] in the compute dtype).

        c: the VACE stream (float32), or for the first block the embedded VACE context (any
        dtype); x: the main stream's embedded tokens (float32), read by the first block only.
        """
        keys_values = self._cross_keys_values(context, cross_cache)
        dtype = keys_values[0].dtype
        if self.before_proj is not None:
            c = project(self.before_proj, c.to(dtype)).float() + x
        c = self.update(c, e, keys_values, rope, attention)
        return c, project(self.after_proj, c.to(dtype))


class Head(nn.Module):
    def __init__(self, config: WanDiTConfig):
        super().__init__()
        self.norm = LayerNorm(config.dim, config.eps, elementwise_affine=False)
        self.head = nn.Linear(config.dim, config.out_dim * math.prod(config.patch_size))
        self.modulation = nn.Parameter(torch.zeros(1, 2, config.dim))

    def forward(self, x: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        # x: float32 residual stream; e: [B, 1 or L, dim] float32 (time embedding, unprojected)
        # The small output projection runs in float32: the prediction feeds the solver's
        # update directly, and bf16 rounding of it would be the largest error left.
        shift, scale = (self.modulation.float().unsqueeze(0) + e.unsqueeze(2)).unbind(2)
        return F.linear(torch.addcmul(shift, self.norm(x), 1 + scale), self.head.weight.float(),
                        self.head.bias.float())


class MLPProj(nn.Module):
    """CLIP image tokens -> model width (Wan 2.1 I2V); FLF2V adds a learned position per token."""

    def __init__(self, config: WanDiTConfig):
        super().__init__()
        in_dim, out_dim = config.image_dim, config.dim
        self.proj = nn.Sequential(LayerNorm(in_dim), nn.Linear(in_dim, in_dim), nn.GELU(),
                                  nn.Linear(in_dim, out_dim), LayerNorm(out_dim))
        if config.model_type == "flf2v":
            self.emb_pos = nn.Parameter(torch.zeros(1, 2 * CLIP_TOKENS, in_dim))

    def forward(self, image_embeds: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "emb_pos"):
            tokens = self.emb_pos.shape[1]
            if image_embeds.shape[1] != tokens:  # [2B, 257, C] -> [B, 514, C] (first, last)
                image_embeds = image_embeds.reshape(-1, tokens, image_embeds.shape[-1])
            image_embeds = image_embeds + self.emb_pos.to(image_embeds.dtype)
        norm_in, fc1, act, fc2, norm_out = self.proj
        hidden = fc1(norm_in(image_embeds).to(fc1.weight.dtype))
        return norm_out(fc2(act(hidden)))


class WanDiT(nn.Module):
    def __init__(self, config: WanDiTConfig):
        super().__init__()
        self.config = config
        dim = config.dim
        self.patch_embedding = nn.Conv3d(config.in_dim, dim, kernel_size=config.patch_size,
                                         stride=config.patch_size)
        self.text_embedding = nn.Sequential(nn.Linear(config.text_dim, dim),
                                            nn.GELU(approximate="tanh"), nn.Linear(dim, dim))
        self.time_embedding = nn.Sequential(nn.Linear(config.freq_dim, dim), nn.SiLU(),
                                            nn.Linear(dim, dim))
        self.time_projection = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        self.blocks = nn.ModuleList(WanAttentionBlock(config) for _ in range(config.num_layers))
        self.head = Head(config)
        if config.has_image_input:
            self.img_emb = MLPProj(config)
        if config.has_vace:
            self.vace_patch_embedding = nn.Conv3d(config.vace_in_dim, dim,
                                                  kernel_size=config.patch_size,
                                                  stride=config.patch_size)
            self.vace_blocks = nn.ModuleList(WanVaceBlock(config, first=n == 0)
                                             for n in range(len(config.vace_layers)))

    @property
    def compute_dtype(self) -> torch.dtype:
        return self.patch_embedding.weight.dtype

    def blocks_in_run_order(self) -> list[nn.Module]:
        """Every transformer block, main and VACE, in the order :meth:`forward` runs them:
        VACE block n right after main block ``vace_layers[n]``. (Block streaming fetches them
        in this order; ``block_calls`` follows it.)"""
        vace_after = dict(zip(self.config.vace_layers, getattr(self, "vace_blocks", ())))
        order: list[nn.Module] = []
        for index, block in enumerate(self.blocks):
            order.append(block)
            if index in vace_after:
                order.append(vace_after[index])
        return order

    def forward(self, x: torch.Tensor, timestep: torch.Tensor, context: torch.Tensor, *,
                y: torch.Tensor | None = None,
                clip_features: torch.Tensor | None = None,
                vace_context: torch.Tensor | None = None,
                vace_strength: float = 1.0,
                attention: Attention = sdpa,
                cross_cache: CrossAttentionCache | None = None,
                block_calls: Sequence[Callable] | None = None) -> torch.Tensor:
        """Flow prediction ``[B, out_dim, T, h, w]`` in ``x``'s dtype.

        timestep: ``[B]`` (sigma x 1000) or ``[B, tokens]`` per patch token (Wan 2.2 TI2V: the
        given first-frame tokens carry 0), tokens ordered frame, row, column.
        context: ``[B, <=text_len, text_dim]`` text embeddings, zero-padded to text_len here.
        y: ``[B, C_y, T, h, w]`` concatenated to x on channels (Wan 2.1 I2V mask + image latent).
        clip_features: ``[B, 257, 1280]`` CLIP tokens (I2V) or ``[B, 514, 1280]`` (FLF2V).
        vace_context: ``[B or 1, vace_in_dim, T, H, W]`` (VACE models), the same frames and size
        as ``x``; None runs a VACE model without its VACE blocks (the base model).
        vace_strength: scale of every VACE hint.
        attention: the kernel for every attention (``networks/attention.py``).
        cross_cache: keys and values of this same ``context`` / ``clip_features`` kept from an
        earlier call (filled on the first); when it holds every block's, the text is not
        embedded again.
        block_calls: what to call instead of each block (the same block compiled), one per
        block of :meth:`blocks_in_run_order`, in that order.
        """
        cfg = self.config
        out_dtype = x.dtype
        dtype = self.compute_dtype
        if y is not None:
            x = torch.cat([x, y.to(x.device, x.dtype)], dim=1)
        if x.shape[1] != cfg.in_dim:
            raise ValueError(f"the model takes {cfg.in_dim} input channels (noise + y), got "
                             f"{x.shape[1]}")
        batch, _, frames, height, width = x.shape
        pt, ph, pw = cfg.patch_size
        grid = (frames // pt, height // ph, width // pw)
        tokens = math.prod(grid)

        vace = None
        if vace_context is not None:
            vace = self._vace_tokens(vace_context, x.shape, dtype)
        order = self.blocks_in_run_order()
        calls = order if block_calls is None else list(block_calls)
        if len(calls) != len(order):
            raise ValueError(f"block_calls has {len(calls)} entries for {len(order)} blocks")
        if vace is None and cfg.has_vace:  # the VACE blocks are left out
            order, calls = zip(*[(b, c) for b, c in zip(order, calls)
                                 if not isinstance(b, WanVaceBlock)])

        x = self.patch_embedding(x.to(self.patch_embedding.weight.device, dtype))
        # The residual stream stays float32 (as in Wan's own code); sub-layers compute in dtype.
        x = rearrange(x, "b c f h w -> b (f h w) c").float()
        rope = rope_rotations(grid, cfg.head_dim, x.device)

        e, e0 = self._time_embeddings(timestep, batch, tokens, x.device)
        if cross_cache is not None and cross_cache.complete(order):
            context = None
        else:
            context = self._context(context, clip_features, dtype)

        embedded = x   # the main stream's tokens, which the first VACE block reads
        for block, call in zip(order, calls):
            if isinstance(block, WanVaceBlock):
                vace, hint = call(vace, embedded, e0, context, rope, attention, cross_cache)
                embedded = None   # read once: free it
                x = torch.add(x, hint.float(), alpha=vace_strength)
            else:
                x = call(x, e0, context, rope, attention, cross_cache)

        x = self.head(x, e)
        x = rearrange(x, "b (f h w) (pf ph pw c) -> b c (f pf) (h ph) (w pw)",
                      f=grid[0], h=grid[1], w=grid[2], pf=pt, ph=ph, pw=pw)
        return x.to(out_dtype)

    def _vace_tokens(self, vace_context: torch.Tensor, latent_shape: torch.Size,
                     dtype: torch.dtype) -> torch.Tensor:
        """The embedded VACE context ``[B, tokens, dim]`` (compute dtype)."""
        cfg = self.config
        if not cfg.has_vace:
            raise ValueError("vace_context was given, but this model has no VACE blocks")
        batch, _, *size = latent_shape
        if vace_context.ndim != 5 or vace_context.shape[1] != cfg.vace_in_dim:
            raise ValueError(f"vace_context must be [B, {cfg.vace_in_dim}, T, H, W], got "
                             f"{tuple(vace_context.shape)}")
        if list(vace_context.shape[2:]) != size or vace_context.shape[0] not in (1, batch):
            raise ValueError(f"vace_context {tuple(vace_context.shape)} does not match the latent "
                             f"{tuple(latent_shape)} (same batch or 1, frames, height, width)")
        weight = self.vace_patch_embedding.weight
        c = self.vace_patch_embedding(vace_context.to(weight.device, dtype))
        return rearrange(c, "b c f h w -> b (f h w) c").expand(batch, -1, -1)

    def _time_embeddings(self, timestep: torch.Tensor, batch: int, tokens: int,
                         device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(e [B, 1|L, dim], e0 [B, 1|L, 6, dim]) in float32, as the reference computes them."""
        timestep = torch.as_tensor(timestep, device=device)
        if timestep.ndim == 0:
            timestep = timestep.expand(batch)
        if timestep.ndim == 1:
            timestep = timestep[:, None]
        if timestep.ndim != 2 or timestep.shape[0] != batch or timestep.shape[1] not in (1, tokens):
            raise ValueError(f"timestep must be [B] or [B, {tokens}] (one per patch token), got "
                             f"{tuple(timestep.shape)}")
        per_token = timestep.shape[1]
        sinusoid = timestep_embedding(timestep.flatten(), self.config.freq_dim)
        e = _float32_mlp(self.time_embedding, sinusoid)
        # The 6x wider projection runs in the weights' dtype: widening its weight each step
        # would cost more than the whole time embedding (diffusers and ComfyUI do the same).
        projection = self.time_projection[1].weight.dtype
        e0 = self.time_projection(e.to(projection)).float()
        return (e.reshape(batch, per_token, -1),
                e0.reshape(batch, per_token, 6, self.config.dim))

    def _context(self, context: torch.Tensor, clip_features: torch.Tensor | None,
                 dtype: torch.dtype) -> torch.Tensor:
        text_len = self.config.text_len
        if context.shape[1] > text_len:
            raise ValueError(f"context has {context.shape[1]} tokens; the model takes {text_len}")
        if context.shape[1] < text_len:
            context = F.pad(context, (0, 0, 0, text_len - context.shape[1]))
        device = self.patch_embedding.weight.device
        context = _gelu_mlp(self.text_embedding, context.to(device, dtype))
        if self.config.has_image_input and clip_features is not None:
            image = self.img_emb(clip_features.to(device, dtype)).to(dtype)
            context = torch.cat([image, context], dim=1)
        return context


def _float32_mlp(mlp: nn.Sequential, x: torch.Tensor) -> torch.Tensor:
    """Run a small Linear/activation stack in float32 whatever the weights' dtype."""
    for layer in mlp:
        if isinstance(layer, nn.Linear):
            x = F.linear(x, layer.weight.float(), layer.bias.float())
        else:
            x = layer(x)
    return x
