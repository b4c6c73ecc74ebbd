"""The denoising loop: LATENT + conditioning + model(s) -> LATENT.

This is where the pieces meet: the seed's noise (drawn on the CPU generator so a seed gives
the same clip on CPU, CUDA and MPS), latent normalisation (LATENTs are raw VAE latents; the
DiT works in normalised space), classifier-free guidance, image conditioning (Wan 2.1 I2V
channels + CLIP tokens; Wan 2.2 TI2V clean first frames with per-token timesteps), the Wan 2.2
A14B high/low-noise expert switch, progress, previews and Cancel.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..errors import InputError
from ..runtime import previews
from ..runtime.progress import Progress
from .conditioning import VideoDiTConditioning
from .latent_formats import LATENT_FORMAT_KEY, LatentFormat, get_format
from .schedules import flow_sigmas
from .solvers import SOLVERS

DEFAULT_BOUNDARY_T2V = 0.875
DEFAULT_BOUNDARY_I2V = 0.9
FIRST_FRAMES_KEY = "first_frames"   # VideoDiTConditioning.extras: normalised given latent frames


@dataclass(frozen=True)
class SamplingSettings:
    seed: int
    steps: int
    cfg: float
    shift: float
    sampler: str = "unipc"
    denoise: float = 1.0
    boundary: float | None = None     # sigma at which the low-noise expert takes over
    cfg_low_noise: float | None = None  # cfg for the low-noise expert (None: same as cfg)
    # Wan's reference samplers hand the network integer timesteps (int(sigma * 1000)); so does
    # diffusers' UniPC. False passes sigma * 1000 unrounded (diffusers' flow-match Euler does).
    integer_timesteps: bool = True


def seeded_noise(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Standard normal noise from the CPU generator: identical on every device."""
    generator = torch.Generator("cpu").manual_seed(int(seed) & 0xFFFF_FFFF_FFFF_FFFF)
    return torch.randn(shape, generator=generator, dtype=torch.float32)


def check_latent_for_model(latent: dict, fmt: LatentFormat, model_name: str) -> torch.Tensor:
    samples = latent.get("samples") if isinstance(latent, dict) else None
    if not isinstance(samples, torch.Tensor) or samples.ndim != 5:
        raise InputError("expected a video LATENT [B, C, T, h, w]", input="latent",
                         fix="connect VideoDiT Empty Latent, VideoDiT Image To Video or VAE Encode")
    made_by = latent.get(LATENT_FORMAT_KEY)
    if (made_by is not None and made_by != fmt.name) or samples.shape[1] != fmt.channels:
        what = made_by or f"{samples.shape[1]}-channel"
        raise InputError(f"this latent is {what}, but {model_name} works on {fmt.name} latents "
                         f"({fmt.channels} channels)", input="latent",
                         fix="make the latent with the VAE that belongs to this model "
                         "(Wan 2.1 models and Wan 2.2 A14B: wan_2.1_vae; Wan 2.2 5B: wan2.2_vae)")
    return samples


class GuidedModel:
    """One expert as a clean-sample predictor ``x0 = x - sigma * v`` with CFG applied."""

    def __init__(self, model, cond: VideoDiTConditioning, cfg: float, batch: int,
                 integer_timesteps: bool):
        self.model = model
        self.cfg = float(cfg)
        self.integer_timesteps = integer_timesteps
        if self.cfg != 1.0 and cond.negative is None:
            raise InputError("cfg is not 1 but the conditioning has no negative prompt",
                             input="cfg", fix="set cfg to 1 or encode a negative prompt")
        self.positive = _batched(cond.positive, batch)
        self.negative = _batched(cond.negative, batch) if self.cfg != 1.0 else None
        self.y = _batched(cond.concat_latent, batch) if cond.concat_latent is not None else None
        self.clip = _batched(cond.clip_features, batch) if cond.clip_features is not None else None
        if model.config.in_dim != model.config.out_dim and self.y is None:
            raise InputError(f"{model.file_name} is an image-to-video model and needs a start image",
                             input="conditioning", fix="put VideoDiT Image To Video between the "
                             "text encode node and the sampler")

    def timestep(self, sigma: float) -> float:
        t = sigma * 1000.0
        return float(math.floor(t)) if self.integer_timesteps else t

    def velocity(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with self.model.managed.use() as net:
            device, dtype = next(net.parameters()).device, self.model.compute_dtype
            extra = {}
            if self.y is not None:
                extra["y"] = self.y.to(device, dtype)
            if self.clip is not None and self.model.config.has_image_input:
                extra["clip_features"] = self.clip.to(device, dtype)
            xs, ts = x.to(device, dtype), t.to(device)
            cond = net(xs, ts, self.positive.to(device, dtype), **extra).float()
            if self.negative is None:
                return cond.to(x.device)
            uncond = net(xs, ts, self.negative.to(device, dtype), **extra).float()
            return (uncond + self.cfg * (cond - uncond)).to(x.device)


def build_denoiser(experts: list[tuple[GuidedModel, float]], first_frames: torch.Tensor | None,
                   on_expert: Callable[[GuidedModel], None] | None = None):
    """``denoiser(x, sigma) -> x0``. ``experts`` is [(model, min timestep)], highest noise first.

    Given first frames (Wan 2.2 TI2V) are pasted into x before every call, their tokens get
    timestep 0, and x0 keeps them exactly.
    """
    active: list[GuidedModel | None] = [None]

    def denoiser(x: torch.Tensor, sigma: float) -> torch.Tensor:
        t_value = experts[0][0].timestep(sigma)
        model = next(m for m, t_min in experts if t_value >= t_min)
        if model is not active[0]:
            if on_expert is not None:
                on_expert(model)
            active[0] = model
        batch = x.shape[0]
        if first_frames is None:
            t = torch.full((batch,), t_value)
        else:
            x = x.clone()
            k = first_frames.shape[2]
            x[:, :, :k] = first_frames.to(x.dtype)
            t = _per_token_timesteps(x.shape, k, t_value, model.model.config.patch_size)
        v = model.velocity(x, t)
        x0 = x - sigma * v
        if first_frames is not None:
            x0[:, :, :first_frames.shape[2]] = first_frames.to(x0.dtype)
        return x0

    return denoiser


def sample_video(model, conditioning: VideoDiTConditioning, latent: dict,
                 settings: SamplingSettings, *, model_low_noise=None,
                 node_id: str | None = None,
                 step_callback: Callable[[int, torch.Tensor], None] | None = None) -> dict:
    """Run the sampler and return a new LATENT (raw VAE space, same shape as ``latent``)."""
    fmt = get_format(model.latent_format)
    raw = check_latent_for_model(latent, fmt, model.file_name).float()
    if settings.sampler not in SOLVERS:
        raise InputError(f"unknown sampler {settings.sampler!r}", input="sampler",
                         fix=f"pick one of {', '.join(SOLVERS)}")
    if model_low_noise is not None:
        if model_low_noise.latent_format != model.latent_format or \
                model_low_noise.config.in_dim != model.config.in_dim:
            raise InputError(f"{model_low_noise.file_name} does not pair with {model.file_name}",
                             input="model_low_noise",
                             fix="use the high-noise and low-noise files of the same Wan 2.2 A14B model")
    sigmas = flow_sigmas(settings.steps, settings.shift, denoise=settings.denoise)
    noise = seeded_noise(tuple(raw.shape), settings.seed)
    clean = fmt.normalize(raw)
    x = noise.clone() if settings.denoise >= 1.0 else \
        (1 - float(sigmas[0])) * clean + float(sigmas[0]) * noise

    conditioning = image_conditioning_for(model, conditioning)
    first_frames = conditioning.extras.get(FIRST_FRAMES_KEY)
    if first_frames is not None:
        first_frames = _batched(first_frames, raw.shape[0]).float()

    batch = raw.shape[0]
    high = GuidedModel(model, conditioning, settings.cfg, batch, settings.integer_timesteps)
    experts = [(high, -math.inf)]
    if model_low_noise is not None:
        boundary = settings.boundary if settings.boundary is not None else (
            DEFAULT_BOUNDARY_I2V if conditioning.concat_latent is not None or first_frames is not None
            else DEFAULT_BOUNDARY_T2V)
        low_cfg = settings.cfg_low_noise if settings.cfg_low_noise is not None else settings.cfg
        low = GuidedModel(model_low_noise, conditioning, low_cfg, batch, settings.integer_timesteps)
        experts = [(high, boundary * 1000.0), (low, -math.inf)]

    def swap_in(expert: GuidedModel) -> None:
        # Only one expert stays on the compute device: the other waits in system memory.
        for other, _ in experts:
            if other is not expert:
                other.model.managed.offload()

    denoiser = build_denoiser(experts, first_frames, swap_in)
    extra_noise = _noise_stream(tuple(raw.shape), settings.seed)

    with Progress(len(sigmas) - 1, "sampling", node_id) as bar:
        def on_step(i: int, x_now: torch.Tensor, x0: torch.Tensor) -> None:
            if step_callback is not None:
                step_callback(i, x0)
            bar.update(1, preview=previews.latent_preview(x0, fmt.name)
                       if previews.previews_enabled() else None)

        solver = SOLVERS[settings.sampler]
        kwargs = {"noise": extra_noise} if settings.sampler == "flow_distilled" else {}
        x = solver(denoiser, x, sigmas, on_step, **kwargs)

    if first_frames is not None:
        x[:, :, :first_frames.shape[2]] = first_frames
    out = dict(latent)
    out.pop("noise_mask", None)
    out["samples"] = fmt.denormalize(x.float()).cpu()
    out[LATENT_FORMAT_KEY] = fmt.name
    return out


def image_conditioning_for(model, cond: VideoDiTConditioning) -> VideoDiTConditioning:
    """Keep the form of image conditioning this model was trained with, drop the other.

    VideoDiT Image To Video prepares both: extra input channels (Wan 2.1 I2V/FLF2V, Wan 2.2 A14B
    I2V) and clean first latent frames (Wan 2.2 TI2V-style models, per-token timesteps).
    """
    takes_channels = model.config.in_dim != model.config.out_dim
    takes_first_frames = model.config.model_type == "ti2v"
    has_image = cond.concat_latent is not None or FIRST_FRAMES_KEY in cond.extras
    if has_image and not (takes_channels or takes_first_frames):
        raise InputError(f"{model.file_name} is a text-to-video model and cannot use a start image",
                         input="conditioning", fix="load an image-to-video model (Wan 2.1 I2V, "
                         "Wan 2.2 TI2V 5B or A14B I2V) or remove VideoDiT Image To Video")
    if takes_channels:
        return cond.replace(extras={k: v for k, v in cond.extras.items() if k != FIRST_FRAMES_KEY})
    return cond.replace(concat_latent=None)


def _batched(tensor: torch.Tensor | None, batch: int) -> torch.Tensor | None:
    if tensor is None or tensor.shape[0] == batch:
        return tensor
    if tensor.shape[0] == 1:
        return tensor.expand(batch, *tensor.shape[1:])
    raise InputError(f"conditioning has batch {tensor.shape[0]} but the latent has batch {batch}",
                     input="conditioning", fix="use batch size 1 or matching batch sizes")


def _per_token_timesteps(shape, given_frames: int, t_value: float, patch) -> torch.Tensor:
    """[B, tokens]: 0 for the tokens of the given first latent frames, t elsewhere."""
    batch, _, frames, height, width = shape
    pt, ph, pw = patch
    per_frame = (height // ph) * (width // pw)
    t = torch.full((batch, (frames // pt) * per_frame), t_value)
    t[:, :(given_frames // pt) * per_frame] = 0.0
    return t


def _noise_stream(shape: tuple[int, ...], seed: int):
    """Fresh noise for re-noising samplers, reproducible from the seed."""
    generator = torch.Generator("cpu").manual_seed((int(seed) + 1) & 0xFFFF_FFFF_FFFF_FFFF)
    return lambda: torch.randn(shape, generator=generator)


def flowedit_video(model, source: VideoDiTConditioning, target: VideoDiTConditioning,
                   source_latent: dict, *, seed: int, steps: int, source_cfg: float,
                   target_cfg: float, shift: float, skip_steps: int, refine_steps: int,
                   n_avg: int, node_id: str | None = None) -> dict:
    """FlowEdit on a source LATENT (see samplers/flowedit.py); returns the edited LATENT."""
    from .flowedit import flowedit

    fmt = get_format(model.latent_format)
    raw = check_latent_for_model(source_latent, fmt, model.file_name).float()
    if not 0 <= skip_steps < steps:
        raise InputError(f"skip_steps must be below steps ({steps}), got {skip_steps}",
                         input="skip_steps", fix=f"use a value from 0 to {steps - 1}; fewer "
                         "skipped steps give a stronger edit")
    if refine_steps > steps - skip_steps:
        raise InputError(f"refine_steps ({refine_steps}) exceeds the steps left after skipping "
                         f"({steps - skip_steps})", input="refine_steps", fix="lower it (0 is usual)")
    batch = raw.shape[0]
    guided_source = GuidedModel(model, source, source_cfg, batch, True)
    guided_target = GuidedModel(model, target, target_cfg, batch, True)

    def velocity(guided: GuidedModel):
        return lambda x, sigma: guided.velocity(
            x, torch.full((x.shape[0],), guided.timestep(sigma)))

    sigmas = flow_sigmas(steps, shift)
    noise = _noise_stream(tuple(raw.shape), seed - 1)
    with Progress(steps - skip_steps, "FlowEdit", node_id) as bar:
        def on_step(i: int, current: torch.Tensor) -> None:
            bar.update(1, preview=previews.latent_preview(current, fmt.name)
                       if previews.previews_enabled() else None)

        edited = flowedit(velocity(guided_source), velocity(guided_target), fmt.normalize(raw),
                          sigmas, skip_steps=skip_steps, refine_steps=refine_steps, n_avg=n_avg,
                          noise=noise, callback=on_step)
    out = dict(source_latent)
    out.pop("noise_mask", None)
    out["samples"] = fmt.denormalize(edited).cpu()
    out[LATENT_FORMAT_KEY] = fmt.name
    return out
