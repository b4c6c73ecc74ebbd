"""Wan VAE files -> :class:`LoadedVAE` (VIDEODIT_VAE): network, latent format, encode/decode.

Reads the original / ComfyUI layout (``wan_2.1_vae.safetensors``, ``wan2.2_vae.safetensors``,
Wan's ``Wan2.1_VAE.pth``) and the diffusers layout (``AutoencoderKLWan``,
``vae/diffusion_pytorch_model.safetensors``); 2.1 vs 2.2 is read from the key names and shapes.

Latents are *raw* (the encoder's mean, no sampling, no mean/std normalisation), exactly what
ComfyUI's own Wan VAE produces; the sampler normalises with :mod:`core.latent_formats`.

Both directions run causally in temporal chunks (encode: the first frame, then groups of 4;
decode: one latent frame at a time) with each causal convolution's last frames carried between
chunks, so memory does not grow with the clip length. Large frames can also be split into
overlapping spatial tiles that are blended linearly across the overlap; each tile keeps its own
causal cache, and the progress bar of the ``hooks`` passed in (whose update is also where
Cancel is noticed) advances after every chunk of every tile.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from ..core.hooks import NO_HOOKS, Hooks
from ..core.latent_formats import WAN21, WAN22, LatentFormat
from ..core.placement import Placement, PlacementFactory
from ..errors import InputError
from ..networks.wan_vae import CausalCache, WanVAE
from .checkpoint_file import read_header
from .detect import KIND_WAN_VAE, require_kind, strip_prefix
from .loader_core import (bf16_if_supported, chosen_dtype, device_or_cpu, network_from_state,
                          read_tensors)
from .wan_vae_keys import config_from_state, diffusers_to_original, is_diffusers_layout

INPUT = "vae_name"
DTYPE_CHOICES = ("default", "fp32", "bf16", "fp16")


@dataclass(frozen=True)
class Tiling:
    """Spatial tiles in pixels: ``size`` square tiles overlapping by ``overlap`` pixels."""
    size: int = 256
    overlap: int = 64


def snap_frame_count(frames: int) -> int:
    """The nearest valid frame count 4k+1 (at least 1)."""
    return max(1, 4 * round((frames - 1) / 4) + 1)


def snap_size(pixels: int, multiple: int) -> int:
    """The nearest multiple of ``multiple`` (at least one)."""
    return max(multiple, multiple * round(pixels / multiple))


@dataclass
class LoadedVAE:
    """VIDEODIT_VAE: the network (in its placement), its latent format and how it computes."""
    managed: Placement
    latent_format: LatentFormat
    dtype: torch.dtype
    file_name: str

    @property
    def network(self) -> WanVAE:
        return self.managed.module

    # -- validation helpers --------------------------------------------------------------------
    def check_frames(self, frames: int, *, input: str = "images") -> None:
        if (frames - 1) % 4:
            raise InputError(f"the Wan VAE needs 4k+1 frames, got {frames}", input=input,
                             fix=f"use {snap_frame_count(frames)} frames (trim or pad the clip)")

    def check_size(self, height: int, width: int, *, input: str = "images") -> None:
        multiple = self.latent_format.spatial_factor
        if height % multiple or width % multiple:
            raise InputError(
                f"width and height must be multiples of {multiple} for this VAE, got {width}x{height}",
                input=input, fix=f"resize to {snap_size(width, multiple)}x{snap_size(height, multiple)}")

    def check_latent(self, latent: dict | torch.Tensor, *, input: str = "latent") -> torch.Tensor:
        """The samples of a LATENT, refused clearly when made by the other Wan VAE."""
        samples = latent["samples"] if isinstance(latent, dict) else latent
        made_by = latent.get("latent_format") if isinstance(latent, dict) else None
        if samples.ndim != 5:
            raise InputError(f"expected a video latent [B, C, T, h, w], got shape {tuple(samples.shape)}",
                             input=input, fix="connect a LATENT from a Wan sampler or VAE Encode")
        fmt = self.latent_format
        other = {WAN21.name: WAN21, WAN22.name: WAN22}.get(made_by) if made_by else None
        if other is not None and other.name != fmt.name:
            raise InputError(
                f"this latent was made by a Wan {_version(other)} VAE ({other.channels} channels), "
                f"but the VAE loaded is {self.file_name} (Wan {_version(fmt)})", input=input,
                fix=f"load {_file_hint(other)} in VideoDiT VAE Loader")
        if samples.shape[1] != fmt.channels:
            guess = WAN22 if samples.shape[1] == WAN22.channels else WAN21
            raise InputError(f"this latent has {samples.shape[1]} channels; {self.file_name} "
                             f"expects {fmt.channels}", input=input,
                             fix=f"load {_file_hint(guess)} in VideoDiT VAE Loader"
                             if samples.shape[1] == guess.channels else
                             "connect a latent made by a Wan VAE")
        return samples

    # -- encode / decode -------------------------------------------------------------------------
    @torch.inference_mode()
    def encode(self, images: torch.Tensor, *, tile: Tiling | None = None,
               hooks: Hooks = NO_HOOKS) -> torch.Tensor:
        """IMAGE [T,H,W,3] (or [B,T,H,W,3]) 0..1 -> raw latent [B,C,t,h,w] float32 on CPU."""
        if images.ndim == 4:
            images = images[None]
        if images.ndim != 5 or images.shape[-1] != 3:
            raise InputError(f"expected images [frames, H, W, 3], got shape {tuple(images.shape)}",
                             input="images", fix="connect an IMAGE output")
        _, frames, height, width, _ = images.shape
        self.check_frames(frames)
        self.check_size(height, width)
        chunks = WanVAE.encode_chunks(frames)
        with self.managed.use() as net:
            device = next(net.parameters()).device
            pixels = images.movedim(-1, 1)  # B 3 T H W, still on CPU
            tiles = _tiles(height, width, tile, self.latent_format.spatial_factor)
            f = self.latent_format
            out = torch.zeros(f.latent_shape(images.shape[0], frames, height, width))
            weights = _blend_weights(tiles, f.spatial_factor, out.shape[-2:])
            caches = [CausalCache() for _ in tiles]
            with hooks.progress(len(chunks) * len(tiles), "VAE encode") as bar:
                for latent_at, chunk in enumerate(chunks):
                    for (ys, xs), cache, weight in zip(tiles, caches, weights):
                        piece = pixels[:, :, chunk, ys, xs].to(device, self.dtype) * 2 - 1
                        z = net.encode_chunk(piece, cache).float().cpu()
                        _add_tile(out, z, latent_at, ys, xs, f.spatial_factor, weight)
                        bar.update(1)
        return out

    @torch.inference_mode()
    def decode(self, latent: torch.Tensor | dict, *, tile: Tiling | None = None,
               hooks: Hooks = NO_HOOKS) -> torch.Tensor:
        """Raw latent [B,C,t,h,w] (or a LATENT dict) -> IMAGE [B*T,H,W,3] float32 0..1 on CPU."""
        samples = self.check_latent(latent)
        f = self.latent_format
        batch, _, steps, h, w = samples.shape
        height, width = h * f.spatial_factor, w * f.spatial_factor
        frames = (steps - 1) * f.temporal_factor + 1
        tiles = _tiles(height, width, tile, f.spatial_factor)
        out = torch.zeros(batch, 3, frames, height, width)
        with self.managed.use() as net:
            device = next(net.parameters()).device
            weights = _blend_weights(tiles, 1, (height, width))
            caches = [CausalCache() for _ in tiles]
            with hooks.progress(steps * len(tiles), "VAE decode") as bar:
                for step in range(steps):
                    first = 0 if step == 0 else 1 + (step - 1) * f.temporal_factor
                    for (ys, xs), cache, weight in zip(tiles, caches, weights):
                        lat_ys, lat_xs = _latent_slices(ys, xs, f.spatial_factor)
                        piece = samples[:, :, step:step + 1, lat_ys, lat_xs].to(device, self.dtype)
                        pixels = net.decode_chunk(piece, cache).float().clamp_(-1, 1).cpu()
                        _add_tile(out, pixels, first, ys, xs, 1, weight)
                        bar.update(1)
        images = (out.add_(1).mul_(0.5)).clamp_(0, 1)
        return images.permute(0, 2, 3, 4, 1).reshape(batch * frames, height, width, 3)


# -- tiling -------------------------------------------------------------------------------------
def _starts(length: int, tile: int, stride: int) -> list[int]:
    if length <= tile:
        return [0]
    starts = list(range(0, length - tile, stride))
    return starts + [length - tile]


def _tiles(height: int, width: int, tiling: Tiling | None, multiple: int) -> list[tuple[slice, slice]]:
    """Pixel-space tile slices (aligned to the latent grid), or one tile for the whole frame."""
    if tiling is None:
        return [(slice(0, height), slice(0, width))]
    if tiling.overlap >= tiling.size or tiling.overlap < 0:
        raise InputError(f"tile overlap ({tiling.overlap}) must be at least 0 and smaller than the "
                         f"tile size ({tiling.size})", input="tile_overlap",
                         fix=f"use an overlap below {tiling.size}, e.g. {tiling.size // 4}")
    size = max(multiple * 2, tiling.size // multiple * multiple)
    overlap = min(tiling.overlap // multiple * multiple, size - multiple)
    stride = size - overlap
    return [(slice(y, min(y + size, height)), slice(x, min(x + size, width)))
            for y in _starts(height, size, stride) for x in _starts(width, size, stride)]


def _latent_slices(ys: slice, xs: slice, factor: int) -> tuple[slice, slice]:
    return slice(ys.start // factor, ys.stop // factor), slice(xs.start // factor, xs.stop // factor)


def _ramp(start: int, stop: int, neighbours: set[tuple[int, int]]) -> torch.Tensor:
    """1-D blend weights: rise across the overlap with an earlier tile, fall across a later one."""
    weight = torch.ones(stop - start)
    for other_start, other_stop in neighbours:
        if other_start < start < other_stop <= stop:  # overlaps our start
            width = other_stop - start
            weight[:width] = torch.minimum(weight[:width], torch.arange(1, width + 1) / (width + 1))
        if start <= other_start < stop < other_stop:  # overlaps our end
            width = stop - other_start
            weight[-width:] = torch.minimum(weight[-width:], torch.arange(width, 0, -1) / (width + 1))
    return weight


def _blend_weights(tiles: list[tuple[slice, slice]], factor: int,
                   grid: tuple[int, int]) -> list[torch.Tensor | None]:
    """Per tile, its share of each output cell (shares sum to 1 wherever tiles overlap)."""
    if len(tiles) == 1:
        return [None]
    cells = [_latent_slices(ys, xs, factor) for ys, xs in tiles]
    rows = {(ys.start, ys.stop) for ys, _ in cells}
    cols = {(xs.start, xs.stop) for _, xs in cells}
    raw = [_ramp(ys.start, ys.stop, rows)[:, None] * _ramp(xs.start, xs.stop, cols)[None, :]
           for ys, xs in cells]
    total = torch.zeros(grid)
    for (ys, xs), weight in zip(cells, raw):
        total[ys, xs] += weight
    return [weight / total[ys, xs] for (ys, xs), weight in zip(cells, raw)]


def _add_tile(out: torch.Tensor, piece: torch.Tensor, t0: int, ys: slice, xs: slice, factor: int,
              weight: torch.Tensor | None) -> None:
    lys, lxs = _latent_slices(ys, xs, factor)
    target = out[:, :, t0:t0 + piece.shape[2], lys, lxs]
    if weight is None:
        target.copy_(piece)
    else:
        target.add_(piece * weight)


# -- loading ------------------------------------------------------------------------------------
def _version(fmt: LatentFormat) -> str:
    return "2.2" if fmt is WAN22 else "2.1"


def _file_hint(fmt: LatentFormat) -> str:
    return "wan2.2_vae.safetensors" if fmt is WAN22 else "wan_2.1_vae.safetensors"


def _default_dtype(device: torch.device) -> torch.dtype:
    # CPUs and older GPUs get fp32: fp16 overflows in this VAE's deep layers.
    return bf16_if_supported(device) if device.type == "cuda" else torch.float32


def load_wan_vae(path: str | Path, *, dtype: str = "default", device: torch.device | None = None,
                 place: PlacementFactory = Placement) -> LoadedVAE:
    """Read a Wan 2.1 or 2.2 VAE file (original or diffusers layout; fp32/fp16/bf16).

    ``device`` is where it will compute (None: the CPU); ``place`` wraps the network to manage
    where its weights live (the nodes pass the runtime's host-aware placement).
    """
    path = Path(path)
    device = device_or_cpu(device)
    torch_dtype = chosen_dtype(dtype, DTYPE_CHOICES, _default_dtype(device))
    require_kind(read_header(path, input=INPUT).keys(), KIND_WAN_VAE, file_name=path.name,
                 input=INPUT)
    state = read_tensors(path, input=INPUT, dtype=torch_dtype)
    prefix, _ = strip_prefix(state.keys())
    if prefix:
        state = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
    if is_diffusers_layout(state):
        state = diffusers_to_original(state)
    try:
        config = config_from_state(state)
    except (KeyError, IndexError, ZeroDivisionError) as err:
        raise InputError(f"{path.name} looks like a Wan VAE but its layout is incomplete "
                         f"(missing {err})", input=INPUT,
                         fix="use wan_2.1_vae.safetensors or wan2.2_vae.safetensors") from None
    network = network_from_state(WanVAE, config, state, file_name=path.name,
                                 fits=f"the Wan {config.version} VAE", input=INPUT,
                                 fix="use wan_2.1_vae.safetensors or wan2.2_vae.safetensors")
    fmt = WAN22 if config.version == "2.2" else WAN21
    if config.z_dim != fmt.channels or config.spatial_factor != fmt.spatial_factor:
        # small test builds share the layout but not the real channel count
        fmt = LatentFormat(name=fmt.name, channels=config.z_dim, spatial_factor=config.spatial_factor,
                           temporal_factor=config.temporal_factor, mean=(0.0,) * config.z_dim,
                           std=(1.0,) * config.z_dim)
    placement = place(network, f"Wan {config.version} VAE {path.name}", load_device=device)
    return LoadedVAE(placement, fmt, torch_dtype, path.name)
