"""The denoising loop: LATENT + conditioning + model(s) -> LATENT.

This is where the pieces meet: the seed's noise (drawn on the CPU generator so a seed gives
the same clip on CPU, CUDA and MPS), latent normalisation (LATENTs are raw VAE latents; the
DiT works in normalised space), classifier-free guidance, image conditioning (extra input
channels + CLIP tokens, or clean first frames, whichever the model takes), the VACE context
(both guidance passes see it; the reference-image frames it puts in front of the latent are cut
from the result), the high/low-noise expert switch (Wan 2.2 A14B), progress, previews and
Cancel.

The model is a VIDEODIT_MODEL (``families/model.py``); the loop asks it for its latent format,
text spec and image inputs and calls only its ``run()`` velocity, so it never names a family.
Progress, previews and Cancel come in as :class:`..core.hooks.Hooks`.
"""
from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..core.conditioning import (FIRST_FRAMES_KEY, VACE_KEY, ModelInputs, VaceInputs,
                                 VideoDiTConditioning)
from ..core.finite import all_finite
from ..core.hooks import NO_HOOKS, Hooks
from ..core.latent_formats import LATENT_FORMAT_KEY, LatentFormat
from ..core.latent_preview import preview_image
from ..core.run_info import RunInfo
from ..errors import InputError
from .schedules import flow_sigmas
from .solvers import SOLVERS

DEFAULT_BOUNDARY_T2V = 0.875
DEFAULT_BOUNDARY_I2V = 0.9


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
    # Stack the positive and negative passes in one batch (None: as VIDEODIT_CFG_BATCH says).
    batch_cfg: bool | None = None


def seeded_noise(shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Standard normal noise from the CPU generator: identical on every device."""
    generator = torch.Generator("cpu").manual_seed(int(seed) & 0xFFFF_FFFF_FFFF_FFFF)
    return torch.randn(shape, generator=generator, dtype=torch.float32)


def check_latent_for_model(latent: dict, model) -> torch.Tensor:
    fmt, model_name = model.latent_format, model.file_name
    samples = latent.get("samples") if isinstance(latent, dict) else None
    if not isinstance(samples, torch.Tensor) or samples.ndim != 5:
        raise InputError("expected a video LATENT [B, C, T, h, w]", input="latent",
                         fix="connect VideoDiT Empty Latent, VideoDiT Image To Video or VAE Encode")
    made_by = latent.get(LATENT_FORMAT_KEY)
    if (made_by is not None and made_by != fmt.name) or samples.shape[1] != fmt.channels:
        what = made_by or f"{samples.shape[1]}-channel"
        raise InputError(f"this latent is {what}, but {model_name} works on {fmt.name} latents "
                         f"({fmt.channels} channels)", input="latent",
                         fix=model.family.vae_hint)
    return samples


def check_finite(x: torch.Tensor, step: int | None, steps: int) -> None:
    """Stop at the first NaN/infinite latent instead of sampling on and decoding a black clip.

    ``step`` is the 0-based step just taken (None: the input latent). One reduction per step.
    """
    if all_finite(x):
        return
    if step is None:
        raise InputError("the input latent contains NaN or infinite values", input="latent",
                         fix="check the node that made it (VAE Encode of a broken image, or an "
                         "earlier sampler that failed)")
    raise InputError(f"the latent became NaN or infinite at step {step + 1} of {steps}; "
                     "sampling was stopped", input="model",
                     fix="check the settings (cfg, shift) for extreme values and load the model "
                     "with a wider weight dtype (bf16 or fp32 instead of fp16/fp8); a checkpoint "
                     "that was saved broken gives this at every seed")


class GuidedModel:
    """One expert as a clean-sample predictor ``x0 = x - sigma * v`` with CFG applied.

    At cfg 1 it makes one model pass per step. Otherwise the positive and negative passes run
    one after the other, or stacked into one batch when ``batch_cfg`` (same numbers, one pass
    with twice the activations: faster where the device is not already saturated).
    """

    def __init__(self, model, cond: VideoDiTConditioning, cfg: float, batch: int,
                 integer_timesteps: bool, *, sigmas=(), label: str = "model",
                 batch_cfg: bool = False, model_input: str = "model"):
        self.model = model
        self.cfg = float(cfg)
        self.integer_timesteps = integer_timesteps
        self.batch_cfg = bool(batch_cfg)
        if self.cfg != 1.0 and cond.negative is None:
            raise InputError("cfg is not 1 but the conditioning has no negative prompt",
                             input="cfg", fix="set cfg to 1 or encode a negative prompt")
        spec = model.family.text_spec
        self.positive = _batched(spec.fit(cond.positive), batch)
        self.negative = _batched(spec.fit(cond.negative), batch) if self.cfg != 1.0 else None
        self.y = _batched(cond.concat_latent, batch) if cond.concat_latent is not None else None
        self.clip = _batched(cond.clip_features, batch) if cond.clip_features is not None else None
        if model.image_inputs.required and self.y is None:
            raise InputError(f"{model.file_name} is an image-to-video model and needs a start image",
                             input="conditioning", fix="put VideoDiT Image To Video between the "
                             "text encode node and the sampler")
        vace = vace_inputs_for(model, cond, model_input)
        # Both guidance passes see the same VACE context (as in VACE's own pipelines).
        self.vace = _batched(vace.context, batch) if vace is not None else None
        self.vace_strength = float(vace.strength) if vace is not None else 1.0
        if self.batch_cfg and self.negative is not None:
            # Stacked once per run, so every step hands the model the same tensors (the
            # family's per-run caches recognise them by identity).
            self._stacked_inputs = (torch.cat([self.positive, self.negative]),
                                    _stacked(self.y, 2), _stacked(self.clip, 2),
                                    _stacked(self.vace, 2))
        self.run = RunInfo(sigmas=tuple(float(s) for s in sigmas), label=label)
        self._velocity = model.run(self.run)

    def finish(self) -> None:
        """End of the sampling run: patches log what they did, per-run state is dropped."""
        self.run.finish()

    def timestep(self, sigma: float) -> float:
        """The expert switch compares noise levels on the models' 0-1000 timestep scale."""
        t = sigma * 1000.0
        return float(math.floor(t)) if self.integer_timesteps else t

    def velocity(self, x: torch.Tensor, sigma: float, first_frames: int = 0) -> torch.Tensor:
        def inputs(text: torch.Tensor, branch: str, y=self.y, clip=self.clip,
                   vace=self.vace) -> ModelInputs:
            return ModelInputs(text=text, concat_latent=y, clip_features=clip,
                               first_frames=first_frames,
                               integer_timesteps=self.integer_timesteps, branch=branch,
                               vace_context=vace, vace_strength=self.vace_strength)

        if self.negative is None:
            return self._velocity(x, sigma, inputs(self.positive, "positive")).to(x.device)
        if self.batch_cfg:
            text, y, clip, vace = self._stacked_inputs
            both = self._velocity(torch.cat([x, x]), sigma, inputs(text, "both", y, clip, vace))
            cond, uncond = both.chunk(2)
        else:
            cond = self._velocity(x, sigma, inputs(self.positive, "positive"))
            uncond = self._velocity(x, sigma, inputs(self.negative, "negative"))
        return (uncond + self.cfg * (cond - uncond)).to(x.device)


def build_denoiser(experts: list[tuple[GuidedModel, float]], first_frames: torch.Tensor | None,
                   on_expert: Callable[[GuidedModel], None] | None = None):
    """``denoiser(x, sigma) -> x0``. ``experts`` is [(model, min timestep)], highest noise first.

    Given first frames (Wan 2.2 TI2V) are pasted into x before every call, their tokens get
    timestep 0 (the family sees how many in ``ModelInputs.first_frames``), and x0 keeps them
    exactly.
    """
    active: list[GuidedModel | None] = [None]

    def denoiser(x: torch.Tensor, sigma: float) -> torch.Tensor:
        t_value = experts[0][0].timestep(sigma)
        model = next(m for m, t_min in experts if t_value >= t_min)
        if model is not active[0]:
            if on_expert is not None:
                on_expert(model)
            active[0] = model
        given = 0
        if first_frames is not None:
            x = x.clone()
            given = first_frames.shape[2]
            x[:, :, :given] = first_frames.to(x.dtype)
        v = model.velocity(x, sigma, given)
        x0 = x - sigma * v
        if first_frames is not None:
            x0[:, :, :given] = first_frames.to(x0.dtype)
        return x0

    return denoiser


def _step_reporter(bar, fmt: LatentFormat, hooks: Hooks):
    def report(x0: torch.Tensor) -> None:
        bar.update(1, preview=preview_image(x0, fmt) if hooks.previews else None)
    return report


def sample_video(model, conditioning: VideoDiTConditioning, latent: dict,
                 settings: SamplingSettings, *, model_low_noise=None, hooks: Hooks = NO_HOOKS,
                 step_callback: Callable[[int, torch.Tensor], None] | None = None) -> dict:
    """Run the sampler and return a new LATENT (raw VAE space, same shape as ``latent``).

    ``model`` (and ``model_low_noise``) is a VIDEODIT_MODEL (``families.model.VideoModel``).
    """
    fmt = model.latent_format
    raw = check_latent_for_model(latent, model).float()
    check_finite(raw, None, settings.steps)
    if settings.sampler not in SOLVERS:
        raise InputError(f"unknown sampler {settings.sampler!r}", input="sampler",
                         fix=f"pick one of {', '.join(SOLVERS)}")
    if model_low_noise is not None and not model.pairs_with(model_low_noise):
        raise InputError(f"{model_low_noise.file_name} does not pair with {model.file_name}",
                         input="model_low_noise",
                         fix=model.family.expert_pair_hint)
    sigmas = flow_sigmas(settings.steps, settings.shift, denoise=settings.denoise)
    noise = seeded_noise(tuple(raw.shape), settings.seed)
    clean = fmt.normalize(raw)
    x = noise.clone() if settings.denoise >= 1.0 else \
        (1 - float(sigmas[0])) * clean + float(sigmas[0]) * noise

    conditioning = image_conditioning_for(model, conditioning)
    vace = check_vace_fits(model, conditioning, raw.shape)
    first_frames = conditioning.extras.get(FIRST_FRAMES_KEY)
    if first_frames is not None:
        first_frames = _batched(first_frames, raw.shape[0]).float()

    batch = raw.shape[0]
    batch_cfg = settings.batch_cfg if settings.batch_cfg is not None else \
        cfg_batching_setting() is True
    high = GuidedModel(model, conditioning, settings.cfg, batch, settings.integer_timesteps,
                       sigmas=sigmas, label="high-noise expert" if model_low_noise else "model",
                       batch_cfg=batch_cfg)
    experts = [(high, -math.inf)]
    if model_low_noise is not None:
        boundary = settings.boundary if settings.boundary is not None else (
            DEFAULT_BOUNDARY_I2V if conditioning.concat_latent is not None or first_frames is not None
            else DEFAULT_BOUNDARY_T2V)
        low_cfg = settings.cfg_low_noise if settings.cfg_low_noise is not None else settings.cfg
        low = GuidedModel(model_low_noise, conditioning, low_cfg, batch, settings.integer_timesteps,
                          sigmas=sigmas, label="low-noise expert", batch_cfg=batch_cfg,
                          model_input="model_low_noise")
        experts = [(high, boundary * 1000.0), (low, -math.inf)]

    def swap_in(expert: GuidedModel) -> None:
        # Only one expert stays on the compute device: the other waits in system memory.
        for other, _ in experts:
            if other is not expert:
                other.model.offload()

    denoiser = build_denoiser(experts, first_frames, swap_in)
    # The reference images only guide the model: the clip starts after them.
    reference_frames = vace.reference_frames if vace is not None else 0
    extra_noise = _noise_stream(tuple(raw.shape), settings.seed)

    with hooks.progress(len(sigmas) - 1, "sampling") as bar:
        report = _step_reporter(bar, fmt, hooks)

        def on_step(i: int, x_now: torch.Tensor, x0: torch.Tensor) -> None:
            check_finite(x0, i, len(sigmas) - 1)
            x0 = x0[:, :, reference_frames:]   # previews show the clip, as the result will
            if step_callback is not None:
                step_callback(i, x0)
            report(x0)

        solver = SOLVERS[settings.sampler]
        kwargs = {"noise": extra_noise} if settings.sampler == "flow_distilled" else {}
        try:
            x = solver(denoiser, x, sigmas, on_step, **kwargs)
        finally:
            for expert, _ in experts:
                expert.finish()

    if first_frames is not None:
        x[:, :, :first_frames.shape[2]] = first_frames
    x = x[:, :, reference_frames:]
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
    takes = model.image_inputs
    has_image = cond.concat_latent is not None or FIRST_FRAMES_KEY in cond.extras
    if has_image and not takes.any and takes.vace:
        raise InputError(f"{model.file_name} is a VACE model: it takes its images through VACE "
                         "conditioning, not VideoDiT Image To Video", input="conditioning",
                         fix="remove VideoDiT Image To Video and give the image to VideoDiT VACE "
                         "Conditioning (as the first frame of the control video, or as a "
                         "reference image)")
    if has_image and not takes.any:
        raise InputError(f"{model.file_name} is a text-to-video model and cannot use a start image",
                         input="conditioning", fix=model.family.image_model_hint)
    if takes.channels:
        return cond.replace(extras={k: v for k, v in cond.extras.items() if k != FIRST_FRAMES_KEY})
    return cond.replace(concat_latent=None)


def vace_inputs_for(model, cond: VideoDiTConditioning, model_input: str = "model"
                    ) -> VaceInputs | None:
    """The VACE inputs ``model`` runs with: None for a model without VACE blocks. Refuses a
    VACE model without VACE conditioning and VACE conditioning for any other model."""
    vace = cond.extras.get(VACE_KEY)
    channels = model.image_inputs.vace_channels
    if vace is None:
        if channels:
            raise InputError(f"{model.file_name} is a VACE model and needs VACE conditioning",
                             input="conditioning", fix="put VideoDiT VACE Conditioning between "
                             "the text encode and the sampler")
        return None
    if not channels:
        raise InputError(f"the conditioning carries a VACE context (from VideoDiT VACE "
                         f"Conditioning), but {model.file_name} is not a VACE model",
                         input=model_input, fix=model.family.vace_model_hint)
    context = vace.context
    if not isinstance(context, torch.Tensor) or context.ndim != 5 or context.shape[1] != channels:
        shape = (tuple(context.shape) if isinstance(context, torch.Tensor)
                 else type(context).__name__)
        raise InputError(f"the VACE context must be [B, {channels}, T, h, w], got {shape}",
                         input="conditioning", fix="make the conditioning with VideoDiT VACE "
                         "Conditioning and the VAE that belongs to this model")
    return vace


def check_vace_fits(model, cond: VideoDiTConditioning, latent_shape: tuple[int, ...]
                    ) -> VaceInputs | None:
    """The VACE inputs ``model`` runs with (see :func:`vace_inputs_for`), checked against the
    latent to be sampled: the same latent frames (reference frames included) and size, batch 1
    or the latent's."""
    vace = vace_inputs_for(model, cond)
    if vace is None:
        return None
    context = vace.context
    batch, _, frames, height, width = latent_shape
    if tuple(context.shape[2:]) != (frames, height, width):
        c_frames, c_height, c_width = context.shape[2:]
        raise InputError(f"the VACE context from VideoDiT VACE Conditioning covers {c_frames} "
                         f"latent frames of {c_width}x{c_height}, but the latent has {frames} "
                         f"of {width}x{height}", input="latent",
                         fix="connect the latent output of VideoDiT VACE Conditioning (it holds "
                         "the reference-image frames too), or give that node this latent's "
                         "width, height and length")
    if context.shape[0] not in (1, batch):
        raise InputError(f"the VACE context has batch {context.shape[0]} but the latent has "
                         f"batch {batch}", input="conditioning",
                         fix="use batch size 1 or matching batch sizes")
    if not 0 <= vace.reference_frames < frames:
        raise InputError(f"the VACE conditioning marks {vace.reference_frames} of the latent's "
                         f"{frames} frames as reference images, leaving no video frame",
                         input="conditioning", fix="connect VideoDiT VACE Conditioning's own "
                         "latent output, which has room for the video after the references")
    return vace


def cfg_batching_setting() -> bool | None:
    """``VIDEODIT_CFG_BATCH``: 1 stacks the positive and negative passes in one batch, 0 keeps
    them apart, unset ("auto") leaves it to the memory plan. On a CPU the matmuls of one pass
    already keep every core busy, so stacking only doubles the activation memory; on a GPU
    one pass of a small clip leaves the device idle part of the time, and stacking helps when
    the plan shows the doubled activations fit without streaming more blocks."""
    value = os.environ.get("VIDEODIT_CFG_BATCH", "auto").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    return None


def _stacked(tensor: torch.Tensor | None, copies: int) -> torch.Tensor | None:
    return tensor if tensor is None or copies == 1 else torch.cat([tensor] * copies)


def _batched(tensor: torch.Tensor | None, batch: int) -> torch.Tensor | None:
    if tensor is None or tensor.shape[0] == batch:
        return tensor
    if tensor.shape[0] == 1:
        return tensor.expand(batch, *tensor.shape[1:])
    raise InputError(f"conditioning has batch {tensor.shape[0]} but the latent has batch {batch}",
                     input="conditioning", fix="use batch size 1 or matching batch sizes")


def _noise_stream(shape: tuple[int, ...], seed: int):
    """Fresh noise for re-noising samplers, reproducible from the seed."""
    generator = torch.Generator("cpu").manual_seed((int(seed) + 1) & 0xFFFF_FFFF_FFFF_FFFF)
    return lambda: torch.randn(shape, generator=generator)


def flowedit_video(model, source: VideoDiTConditioning, target: VideoDiTConditioning,
                   source_latent: dict, *, seed: int, steps: int, source_cfg: float,
                   target_cfg: float, shift: float, skip_steps: int, refine_steps: int,
                   n_avg: int, hooks: Hooks = NO_HOOKS) -> dict:
    """FlowEdit on a source LATENT (see samplers/flowedit.py); returns the edited LATENT."""
    from .flowedit import flowedit

    fmt = model.latent_format
    raw = check_latent_for_model(source_latent, model).float()
    if model.image_inputs.vace:
        raise InputError(f"{model.file_name} is a VACE model; FlowEdit edits with a "
                         "text-to-video model", input="model",
                         fix="load the text-to-video model, or edit with VideoDiT VACE "
                         "Conditioning and VideoDiT Sampler")
    for name, cond in (("source_conditioning", source), ("target_conditioning", target)):
        if VACE_KEY in cond.extras:
            raise InputError("FlowEdit does not take VACE conditioning", input=name,
                             fix="connect VideoDiT Text Encode directly, or edit with VideoDiT "
                             "VACE Conditioning and VideoDiT Sampler")
    if not 0 <= skip_steps < steps:
        raise InputError(f"skip_steps must be below steps ({steps}), got {skip_steps}",
                         input="skip_steps", fix=f"use a value from 0 to {steps - 1}; fewer "
                         "skipped steps give a stronger edit")
    if refine_steps > steps - skip_steps:
        raise InputError(f"refine_steps ({refine_steps}) exceeds the steps left after skipping "
                         f"({steps - skip_steps})", input="refine_steps", fix="lower it (0 is usual)")
    batch = raw.shape[0]
    sigmas = flow_sigmas(steps, shift)
    batch_cfg = cfg_batching_setting() is True
    guided_source = GuidedModel(model, source, source_cfg, batch, True, sigmas=sigmas,
                                label="source", batch_cfg=batch_cfg)
    guided_target = GuidedModel(model, target, target_cfg, batch, True, sigmas=sigmas,
                                label="target", batch_cfg=batch_cfg)

    noise = _noise_stream(tuple(raw.shape), seed - 1)
    with hooks.progress(steps - skip_steps, "FlowEdit") as bar:
        report = _step_reporter(bar, fmt, hooks)

        def on_step(i: int, current: torch.Tensor) -> None:
            check_finite(current, i, steps)
            report(current)

        check_finite(raw, None, steps)
        try:
            edited = flowedit(guided_source.velocity, guided_target.velocity, fmt.normalize(raw),
                              sigmas, skip_steps=skip_steps, refine_steps=refine_steps,
                              n_avg=n_avg, noise=noise, callback=on_step)
        finally:
            guided_source.finish()
            guided_target.finish()
    out = dict(source_latent)
    out.pop("noise_mask", None)
    out["samples"] = fmt.denormalize(edited).cpu()
    out[LATENT_FORMAT_KEY] = fmt.name
    return out
