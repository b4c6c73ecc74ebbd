"""Wan video VAE, versions 2.1 and 2.2, in the original (Wan / ComfyUI) key layout.

Attribute names mirror the checkpoint keys (``encoder.conv1``, ``encoder.downsamples.N.residual.2``,
``decoder.middle.1.to_qkv``, ``conv1``/``conv2`` ...), so loading is ``load_state_dict`` after the
diffusers rename in :mod:`model_loaders.wan_vae_keys`.

The network is causal in time and is always run in temporal chunks: the encoder sees the first
frame alone and then groups of 4 frames, the decoder one latent frame at a time. Each causal
convolution keeps the last input frames of the previous chunk in a :class:`CausalCache`, so the
result equals one pass over the whole clip while memory stays that of one chunk.

* 2.1: ``dim 96``, ``z_dim 16``, 8x spatial / 4x temporal, 3 pixel channels.
* 2.2: ``dim 160`` (decoder 256), ``z_dim 48``; pixels are folded 2x2 into 12 channels before the
  encoder ("patchify") and unfolded after the decoder, for 16x spatial; every stage carries a
  parameter-free shortcut (channel-averaging down, channel-repeating up) around its residual blocks.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

CACHED_FRAMES = 2  # a 3-tap causal time kernel needs the last two input frames


@dataclass
class WanVAEConfig:
    version: str = "2.1"                 # "2.1" | "2.2"
    dim: int = 96
    decoder_dim: int = 96
    z_dim: int = 16
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    num_res_blocks: int = 2
    temporal_downsample: tuple[bool, ...] = (False, True, True)

    @property
    def patch_size(self) -> int:
        return 2 if self.version == "2.2" else 1

    @property
    def pixel_channels(self) -> int:
        return 3 * self.patch_size ** 2

    @property
    def spatial_factor(self) -> int:
        return self.patch_size * 2 ** (len(self.dim_mult) - 1)

    @property
    def temporal_factor(self) -> int:
        return 2 ** sum(self.temporal_downsample)


@dataclass
class CausalCache:
    """What each causal layer remembers of the previous chunk (keyed by the layer itself)."""
    frames: dict = field(default_factory=dict)
    first_chunk: bool = True


class CausalConv3d(nn.Conv3d):
    """3-D convolution padded only on the past side in time; continues from ``cache``."""

    def __init__(self, in_dim: int, out_dim: int, kernel, stride=1, padding=0):
        pad = (padding,) * 3 if isinstance(padding, int) else tuple(padding)
        # space is zero-padded by the convolution itself (no padded copy of the input)
        super().__init__(in_dim, out_dim, kernel, stride=stride, padding=(0, pad[1], pad[2]))
        self.time_pad = 2 * pad[0]

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        if self.time_pad == 0:
            return super().forward(x)
        past = []
        missing = self.time_pad
        if cache is not None:
            previous = cache.frames.get(self)
            keep = x[:, :, -CACHED_FRAMES:]
            if keep.shape[2] < CACHED_FRAMES and previous is not None:
                keep = torch.cat([previous[:, :, -1:], keep], dim=2)
            elif keep.shape[2] < x.shape[2]:
                keep = keep.clone()  # a view would keep the whole chunk alive until the next one
            cache.frames[self] = keep
            if previous is not None:
                past.append(previous.to(x.dtype))
                missing -= previous.shape[2]
        if missing > 0:
            past.insert(0, x.new_zeros(x.shape[:2] + (missing,) + x.shape[3:]))
        return super().forward(torch.cat(past + [x], dim=2))


class RMSNorm(nn.Module):
    """Channel RMS norm (L2-normalise over channels, times sqrt(C) and a learned gain)."""

    def __init__(self, dim: int, images: bool = True):
        super().__init__()
        self.scale = dim ** 0.5
        self.gamma = nn.Parameter(torch.ones((dim, 1, 1) if images else (dim, 1, 1, 1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # half precision sums of squares overflow/underflow, so normalise in fp32
        normalized = F.normalize(x.float(), dim=1).to(x.dtype)
        return normalized.mul_(self.gamma * self.scale)


class ResidualBlock(nn.Module):
    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        # indices are the checkpoint's: residual.{0,3}.gamma, residual.{2,6}.weight
        self.residual = nn.Sequential(
            RMSNorm(in_dim, images=False), nn.SiLU(inplace=True), CausalConv3d(in_dim, out_dim, 3, padding=1),
            RMSNorm(out_dim, images=False), nn.SiLU(inplace=True), nn.Identity(),
            CausalConv3d(out_dim, out_dim, 3, padding=1))
        self.shortcut = CausalConv3d(in_dim, out_dim, 1) if in_dim != out_dim else nn.Identity()

    def forward(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        skip = self.shortcut(x)
        for layer in self.residual:
            x = layer(x, cache) if isinstance(layer, CausalConv3d) else layer(x)
        return x + skip


class AttentionBlock(nn.Module):
    """Single-head self-attention over the pixels of each frame."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = RMSNorm(dim)
        self.to_qkv = nn.Conv2d(dim, dim * 3, 1)
        self.proj = nn.Conv2d(dim, dim, 1)

    def forward(self, x: torch.Tensor, cache: CausalCache | None = None) -> torch.Tensor:
        b, c, t, h, w = x.shape
        frames = rearrange(x, "b c t h w -> (b t) c h w")
        q, k, v = rearrange(self.to_qkv(self.norm(frames)), "n (three c) h w -> three n 1 (h w) c",
                            three=3)
        out = F.scaled_dot_product_attention(q, k, v)
        out = self.proj(rearrange(out, "n 1 (h w) c -> n c h w", h=h))
        return x + rearrange(out, "(b t) c h w -> b c t h w", b=b)


class Resample(nn.Module):
    """2x spatial (and optionally 2x temporal) down- or up-sampling."""

    def __init__(self, dim: int, mode: str, up_dim: int | None = None):
        super().__init__()
        self.mode = mode
        if mode.startswith("upsample"):
            self.resample = nn.Sequential(nn.Upsample(scale_factor=(2.0, 2.0), mode="nearest-exact"),
                                          nn.Conv2d(dim, up_dim or dim // 2, 3, padding=1))
            if mode == "upsample3d":
                self.time_conv = CausalConv3d(dim, dim * 2, (3, 1, 1), padding=(1, 0, 0))
        else:
            self.resample = nn.Sequential(nn.ZeroPad2d((0, 1, 0, 1)),
                                          nn.Conv2d(dim, dim, 3, stride=(2, 2)))
            if mode == "downsample3d":
                self.time_conv = CausalConv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1))

    def forward(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        if self.mode == "upsample3d":
            if self.time_conv not in cache.frames:
                # the first chunk is the lone first frame: it is not doubled in time; the next
                # chunk starts from a zero past
                cache.frames[self.time_conv] = torch.zeros_like(x[:, :, :1]).expand(
                    -1, -1, CACHED_FRAMES, -1, -1)
            else:
                x = rearrange(self.time_conv(x, cache), "b (two c) t h w -> b c (t two) h w",
                              two=2)
        t = x.shape[2]
        x = self.resample(rearrange(x, "b c t h w -> (b t) c h w"))
        x = rearrange(x, "(b t) c h w -> b c t h w", t=t)
        if self.mode == "downsample3d":
            previous = cache.frames.get(self.time_conv)
            cache.frames[self.time_conv] = x[:, :, -1:].clone()
            if previous is not None:  # the first frame passes through; later ones pair up
                x = self.time_conv(torch.cat([previous, x], dim=2))
        return x


def _avg_down(x: torch.Tensor, out_dim: int, factor_t: int, factor_s: int) -> torch.Tensor:
    """2.2 shortcut: fold time/space into channels, then average groups down to ``out_dim``."""
    x = F.pad(x, (0, 0, 0, 0, (-x.shape[2]) % factor_t, 0))
    x = rearrange(x, "b c (t ft) (h fh) (w fw) -> b (c ft fh fw) t h w",
                  ft=factor_t, fh=factor_s, fw=factor_s)
    return rearrange(x, "b (o g) t h w -> b o g t h w", o=out_dim).mean(dim=2)


def _dup_up(x: torch.Tensor, out_dim: int, factor_t: int, factor_s: int,
            first_chunk: bool) -> torch.Tensor:
    """2.2 shortcut: repeat channels, then unfold them into time/space."""
    repeats = out_dim * factor_t * factor_s * factor_s // x.shape[1]
    x = x.repeat_interleave(repeats, dim=1)
    x = rearrange(x, "b (c ft fh fw) t h w -> b c (t ft) (h fh) (w fw)",
                  ft=factor_t, fh=factor_s, fw=factor_s)
    return x[:, :, factor_t - 1:] if first_chunk else x


class DownResidualBlock(nn.Module):
    """2.2 encoder stage: residual blocks + resample, plus an averaging shortcut."""

    def __init__(self, in_dim: int, out_dim: int, num_res_blocks: int, temporal: bool, down: bool):
        super().__init__()
        self.out_dim, self.factor_t, self.factor_s = out_dim, 2 if temporal else 1, 2 if down else 1
        layers: list[nn.Module] = []
        for _ in range(num_res_blocks):
            layers.append(ResidualBlock(in_dim, out_dim))
            in_dim = out_dim
        if down:
            layers.append(Resample(out_dim, "downsample3d" if temporal else "downsample2d"))
        self.downsamples = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        shortcut = _avg_down(x, self.out_dim, self.factor_t, self.factor_s)
        for layer in self.downsamples:
            x = layer(x, cache)
        return x + shortcut


class UpResidualBlock(nn.Module):
    """2.2 decoder stage: residual blocks + resample, plus a repeating shortcut."""

    def __init__(self, in_dim: int, out_dim: int, num_blocks: int, temporal: bool, up: bool):
        super().__init__()
        self.out_dim, self.up = out_dim, up
        self.factor_t = 2 if temporal else 1
        layers: list[nn.Module] = []
        for _ in range(num_blocks):
            layers.append(ResidualBlock(in_dim, out_dim))
            in_dim = out_dim
        if up:
            layers.append(Resample(out_dim, "upsample3d" if temporal else "upsample2d",
                                   up_dim=out_dim))
        self.upsamples = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        shortcut = _dup_up(x, self.out_dim, self.factor_t, 2, cache.first_chunk) if self.up else 0
        for layer in self.upsamples:
            x = layer(x, cache)
        return x + shortcut


def _middle(dim: int) -> nn.Sequential:
    return nn.Sequential(ResidualBlock(dim, dim), AttentionBlock(dim), ResidualBlock(dim, dim))


def _head(dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(RMSNorm(dim, images=False), nn.SiLU(inplace=True), CausalConv3d(dim, out_dim, 3, padding=1))


def _run(layers, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
    for layer in layers:
        x = layer(x) if isinstance(layer, nn.SiLU | RMSNorm) else layer(x, cache)
    return x


def _changes_time(layer: nn.Module) -> bool:
    if isinstance(layer, Resample):
        return layer.mode.endswith("3d")
    return isinstance(layer, DownResidualBlock | UpResidualBlock) and layer.factor_t == 2


def _run_frame_by_frame(layers, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
    """Layers that keep the frame count are causal frame by frame, so a chunk can go through
    them one frame at a time with the cache carrying the past: the same numbers, and only one
    full-resolution frame of activations alive at once."""
    if not layers:
        return x
    return torch.cat([_run(layers, x[:, :, i:i + 1], cache) for i in range(x.shape[2])], dim=2)


class Encoder3d(nn.Module):
    def __init__(self, cfg: WanVAEConfig):
        super().__init__()
        dims = [cfg.dim * m for m in (1,) + tuple(cfg.dim_mult)]
        last = len(cfg.dim_mult) - 1
        self.conv1 = CausalConv3d(cfg.pixel_channels, dims[0], 3, padding=1)
        layers: list[nn.Module] = []
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            temporal = i < last and cfg.temporal_downsample[i]
            if cfg.version == "2.2":
                layers.append(DownResidualBlock(in_dim, out_dim, cfg.num_res_blocks, temporal,
                                                down=i != last))
                continue
            for _ in range(cfg.num_res_blocks):
                layers.append(ResidualBlock(in_dim, out_dim))
                in_dim = out_dim
            if i != last:
                layers.append(Resample(out_dim, "downsample3d" if temporal else "downsample2d"))
        self.downsamples = nn.Sequential(*layers)
        self.middle = _middle(dims[-1])
        self.head = _head(dims[-1], cfg.z_dim * 2)

    def forward(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        layers = [self.conv1, *self.downsamples, *self.middle, *self.head]
        split = next(i for i, layer in enumerate(layers + [None]) if layer is None or _changes_time(layer))
        x = _run_frame_by_frame(layers[:split], x, cache)  # the full-resolution stages
        return _run(layers[split:], x, cache)


class Decoder3d(nn.Module):
    def __init__(self, cfg: WanVAEConfig):
        super().__init__()
        mult = tuple(cfg.dim_mult)
        dims = [cfg.decoder_dim * m for m in (mult[-1],) + mult[::-1]]
        temporal_upsample = tuple(cfg.temporal_downsample)[::-1]
        last = len(mult) - 1
        self.conv1 = CausalConv3d(cfg.z_dim, dims[0], 3, padding=1)
        self.middle = _middle(dims[0])
        layers: list[nn.Module] = []
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            temporal = i < last and temporal_upsample[i]
            if cfg.version == "2.2":
                layers.append(UpResidualBlock(in_dim, out_dim, cfg.num_res_blocks + 1, temporal,
                                              up=i != last))
                continue
            if i > 0:  # 2.1's upsampling convolution halves the channels
                in_dim //= 2
            for _ in range(cfg.num_res_blocks + 1):
                layers.append(ResidualBlock(in_dim, out_dim))
                in_dim = out_dim
            if i != last:
                layers.append(Resample(out_dim, "upsample3d" if temporal else "upsample2d"))
        self.upsamples = nn.Sequential(*layers)
        self.head = _head(dims[-1], cfg.pixel_channels)

    def forward(self, x: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        layers = [self.conv1, *self.middle, *self.upsamples, *self.head]
        split = max((i + 1 for i, layer in enumerate(layers) if _changes_time(layer)), default=0)
        x = _run(layers[:split], x, cache)
        return _run_frame_by_frame(layers[split:], x, cache)  # the full-resolution stages


class WanVAE(nn.Module):
    """Encoder/decoder pair. Pixels in and out are [B, 3, T, H, W] in -1..1."""

    def __init__(self, cfg: WanVAEConfig):
        super().__init__()
        self.config = cfg
        self.encoder = Encoder3d(cfg)
        self.conv1 = CausalConv3d(cfg.z_dim * 2, cfg.z_dim * 2, 1)
        self.conv2 = CausalConv3d(cfg.z_dim, cfg.z_dim, 1)
        self.decoder = Decoder3d(cfg)

    # -- one chunk at a time; the caller owns the cache and the chunk loop ------------------
    def patchify(self, pixels: torch.Tensor) -> torch.Tensor:
        p = self.config.patch_size
        return rearrange(pixels, "b c t (h q) (w r) -> b (c r q) t h w", q=p, r=p)

    def unpatchify(self, pixels: torch.Tensor) -> torch.Tensor:
        p = self.config.patch_size
        return rearrange(pixels, "b (c r q) t h w -> b c t (h q) (w r)", q=p, r=p)

    def encode_chunk(self, pixels: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        """Pixel frames (1 for the first chunk, then 4) -> the latent mean for them."""
        out = self.encoder(self.patchify(pixels), cache)
        cache.first_chunk = False
        return self.conv1(out)[:, :self.config.z_dim]

    def decode_chunk(self, latent: torch.Tensor, cache: CausalCache) -> torch.Tensor:
        """One latent frame -> its pixel frames (1 for the first, then 4), unclamped."""
        out = self.decoder(self.conv2(latent), cache)
        cache.first_chunk = False
        return self.unpatchify(out)

    @staticmethod
    def encode_chunks(frames: int) -> list[slice]:
        """Frame ranges of the encoder's chunks: the first frame, then groups of 4."""
        return [slice(0, 1)] + [slice(s, s + 4) for s in range(1, frames, 4)]
