"""Clips longer than one model window, without colour drift at the seams.

Wan models are trained on one clip length (81 frames; the bundled demo model on 17). Three ways
to go longer:

* ``continue``: render one window, then each next window conditioned on the last ``overlap``
  frames of the clip so far (clean first latent frames for Wan 2.2 TI2V-type models, the mask +
  image-latent channels for Wan 2.1 I2V and Wan 2.2 A14B I2V, a VACE context that keeps them
  for VACE models). A model that regenerates the shared frames (the channel and VACE models
  do) may change their colour, and that change runs on through the window; so the new
  window's shared frames are fitted, with a per-channel gain and offset (:func:`fit_colour`),
  to those frames as the model was given them (after the VAE round trip), the fit is applied
  to the whole new window, and the overlap is cross-faded into the clip. Fitting against the
  round trip rather than the clip's own frames matters: the round trip changes colour a
  little by itself, a fit against the clip "corrected" that in every window, and the
  corrections added up (three demo-model prompts at 65 frames drifted 7.4-11.6 dE instead
  of 0.8-3.6). A TI2V-type model keeps the given latents exactly, so for it the fit comes out
  as the identity and only the cross-fade acts. Drift the model adds within a window is left to
  VideoDiT Frame Consistency, which takes the segments.
* ``context windows``: one sampling run over the whole latent; every step computes the model
  on overlapping windows along latent time and blends their velocities
  (``core/context_windows.py``). No decode in between; works with any model, text-to-video too.
* ``naive``: continue from the last frame only, with no colour fit and no cross-fade (the
  usual chaining of image-to-video runs), as the baseline to compare against.

Every window is a full model window: models degrade on lengths they were not trained on, so a
length the windows cannot reach exactly is refused with the nearest reachable ones, rather than
rendered with a short last window.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from ..core.conditioning import (FIRST_FRAMES_KEY, VACE_KEY, VaceInputs,
                                 VideoDiTConditioning)
from ..core.context_windows import (WindowLayout, latent_frames, pixel_start,
                                    windowed_velocity)
from ..core.hooks import NO_HOOKS, Hooks
from ..core.latent_formats import LATENT_FORMAT_KEY
from ..core.segments import VideoSegments
from ..errors import InputError
from .denoise import SamplingSettings, sample_video
from .image_conditioning import (check_fits_in_memory, check_video_size, checked_frames,
                                  frame_count_choices)
from .vace_conditioning import vace_conditioning

CONTINUE, CONTEXT_WINDOWS, NAIVE = "continue", "context windows", "naive"
METHODS = (CONTINUE, CONTEXT_WINDOWS, NAIVE)


@dataclass
class LongVideo:
    images: torch.Tensor          # [frames, H, W, 3] float 0..1
    segment_starts: list[int]     # output frame index where each segment/window starts; [0, ...]
    overlap: int = 0              # frames each start shares (cross-faded) with the piece before

    def segments(self) -> VideoSegments:
        return VideoSegments(tuple(self.segment_starts), self.images.shape[0], self.overlap)


@dataclass(frozen=True)
class LongVideoPlan:
    """What :func:`render_long_video` will render, worked out before any model runs."""
    method: str
    length: int
    window: int
    overlap: int                  # frames each new piece takes from the clip before it
    renders: tuple[int, ...]      # frames of each sampling run, in order
    starts: tuple[int, ...]       # output frame where each piece begins
    source_frames: int = 0        # frames of the clip being extended (0: none)

    @property
    def blended(self) -> int:
        """Frames cross-faded at each join (naive chaining only drops the repeated frame)."""
        return 0 if self.method == NAIVE else self.overlap


def _is_4k1(frames: int, temporal: int) -> bool:
    return frames >= 1 and (frames - 1) % temporal == 0


def window_problems(window: int | None, overlap: int | None, *,
                    temporal_factor: int = 4) -> list[InputError]:
    """Everything wrong with a window / overlap pair (either may be None: not known yet), for
    the planner and for the nodes' queue-time checks alike."""
    tf = temporal_factor
    found = []
    if window is not None and (not _is_4k1(window, tf) or window < 1 + tf):
        found.append(InputError(f"window must be 4k+1 frames and at least {1 + tf}, got "
                                f"{window}", input="window", fix=f"use "
                                f"{frame_count_choices(max(window, 1 + tf), tf)} (Wan is trained on 81, the "
                                "demo model on 17)"))
    if overlap is not None:
        if not _is_4k1(overlap, tf):
            found.append(InputError(f"overlap must be 4k+1 frames, got {overlap}",
                                    input="overlap", fix=f"use {frame_count_choices(overlap, tf)}"))
        elif window is not None and overlap >= window:
            found.append(InputError(f"overlap ({overlap}) must be smaller than the window "
                                    f"({window})", input="overlap", fix=f"use at most "
                                    f"{window - tf}; about a fifth of the window is usual (17 "
                                    "for 81)"))
    return found


def plan_long_video(length: int, window: int, overlap: int, method: str, *,
                    source_frames: int = 0, temporal_factor: int = 4) -> LongVideoPlan:
    """Check the frame counts and lay out the pieces; every refusal names the fix."""
    tf = temporal_factor
    if method not in METHODS:
        raise InputError(f"unknown method {method!r}", input="method",
                         fix=f"pick one of {', '.join(METHODS)}")
    if method == NAIVE:
        overlap = 1     # the last frame only, whatever the overlap widget says
    found = window_problems(window, None if method == NAIVE else overlap, temporal_factor=tf)
    if found:
        raise found[0]
    if source_frames:
        if source_frames < overlap:
            raise InputError(f"source_video has {source_frames} frames, fewer than the overlap "
                             f"({overlap})", input="source_video",
                             fix=f"give at least {overlap} frames or lower overlap")
        if length <= source_frames:
            raise InputError(f"length ({length}) must be longer than source_video "
                             f"({source_frames} frames): it counts the whole output",
                             input="length", fix=f"use a length above {source_frames}")
        if (length - source_frames) % tf:
            new = (length - source_frames) // tf * tf
            raise InputError(f"the frames added to source_video (length {length} - "
                             f"{source_frames}) must be a multiple of {tf}", input="length",
                             fix=f"use {source_frames + max(new, tf)} or "
                             f"{source_frames + new + tf}")
    else:
        if not _is_4k1(length, tf):
            raise InputError(f"length must be 4k+1 frames, got {length}", input="length",
                             fix=f"use {frame_count_choices(length, tf)}")
        if length < window:
            raise InputError(f"length ({length}) is shorter than one window ({window})",
                             input="length", fix=f"use at least {window}, or a smaller window "
                             "(one window is an ordinary render: VideoDiT Sampler)")

    stride = window - overlap
    base = source_frames or window
    if method == CONTEXT_WINDOWS:
        render = length - source_frames + overlap if source_frames else length
        layout = WindowLayout(latent_frames(window, tf), latent_frames(overlap, tf))
        offset = source_frames - overlap if source_frames else 0
        window_starts = [offset + pixel_start(s, tf)
                         for s, _ in layout.spans(latent_frames(render, tf))]
        starts = ([0] if source_frames else []) + window_starts
        return LongVideoPlan(method, length, window, overlap, (render,), tuple(starts),
                             source_frames)
    if (length - base) % stride:
        lower = base + (length - base) // stride * stride
        first = 1 if source_frames else 0
        reachable = ", ".join(str(base + k * stride) for k in range(first, first + 3))
        what = (f"source_video's {source_frames} frames" if source_frames
                else f"one window of {window}")
        nearest = (f"{lower} or {lower + stride}" if lower >= base + first * stride
                   else str(lower + stride))
        raise InputError(f"length {length} cannot be reached: from {what}, each further window "
                         f"adds {stride} frames (window {window} - overlap {overlap}), so the "
                         f"lengths are {reachable} and so on", input="length",
                         fix=f"use {nearest}, change window/overlap, or use method "
                         "'context windows' (any 4k+1 length)")
    more = (length - base) // stride
    renders = (window,) * (more + (0 if source_frames else 1))
    first_new = source_frames if source_frames else window
    # A continued piece begins where its overlap is cross-faded in; a naive one where its
    # first new frame is (its first frame repeats the clip's last and is dropped).
    lead = 0 if method == NAIVE else overlap
    starts = [0] + [first_new - lead + k * stride for k in range(more)]
    return LongVideoPlan(method, length, window, overlap, renders, tuple(starts), source_frames)


# -- colour and seams ----------------------------------------------------------------------------
GAIN_LIMITS = (0.8, 1.25)   # colour drift between windows is small; more is a misfit
FIT_PIXELS = 1 << 20


def fit_colour(reference: torch.Tensor, moving: torch.Tensor, *, ridge: float = 2.5e-3,
               iterations: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``gain, offset`` ([3]) that map ``moving`` onto ``reference`` (IMAGE frames
    showing the same moment): ``moving * gain + offset`` has the reference's mean and spread.

    The overlap frames show the same moment, but not identically: the model redraws content
    (and a decode/encode round trip blurs it), and where that differs (typically the moving
    subject) a fit over every pixel explains content by colour and tints the whole window. So
    the fit is robust: it starts from the per-channel median shift and then reweights with
    Tukey's biweight on the residual (scaled by its median absolute deviation), so the pixels
    a colour change explains decide it and the redrawn ones, whose residuals stand out, get no
    say. The gain matches spreads (standard deviations) rather than regressing one clip on
    the other: texture and noise that are not shared pixel for pixel would bias a regression
    gain toward 0, and every window would come out a little flatter than the last. It is
    pulled toward 1 by ``ridge`` (a variance, in 0..1 pixel units: a spread of 0.05), so an
    overlap whose spread is mostly noise (a plain background) is matched by its offset alone
    (a gain fitted there would be extrapolated to every brighter pixel of the window), and it
    is limited to :data:`GAIN_LIMITS`. Both are compared as block means
    (:func:`_colour_scale`): a regenerated overlap comes back softer than the frames it
    continues, and fitted pixel for pixel that lost detail reads as lost contrast, so every
    window got a gain above 1 and the colours of a long clip drifted further with each one.
    """
    ref = _colour_scale(reference).reshape(-1, 3)
    mov = _colour_scale(moving).reshape(-1, 3)
    every = max(1, ref.shape[0] // FIT_PIXELS)   # a regular subsample is plenty for 6 numbers
    ref, mov = ref[::every].double(), mov[::every].double()
    gain = torch.ones(3, dtype=torch.float64)
    offset = ref.median(dim=0).values - mov.median(dim=0).values
    for _ in range(iterations):
        residual = ref - (mov * gain + offset)
        # Centred on its median: while the offset is still off, the bulk of the pixels must
        # not all look like outliers.
        residual = residual - residual.median(dim=0).values
        spread = residual.abs().median(dim=0).values
        cutoff = 4.685 * torch.clamp(1.4826 * spread, min=1.0 / 255)
        weight = (1 - (residual / cutoff) ** 2).clamp(min=0) ** 2
        total = weight.sum(dim=0).clamp(min=1e-12)
        ref_mean = (weight * ref).sum(dim=0) / total
        mov_mean = (weight * mov).sum(dim=0) / total
        ref_var = (weight * (ref - ref_mean) ** 2).sum(dim=0) / total
        mov_var = (weight * (mov - mov_mean) ** 2).sum(dim=0) / total
        gain = ((ref_var + ridge) / (mov_var + ridge)).sqrt().clamp(*GAIN_LIMITS)
        offset = ref_mean - gain * mov_mean
    return gain.float(), offset.float()


def _colour_scale(frames: torch.Tensor) -> torch.Tensor:
    """IMAGE frames as means of square blocks, about 16 across the shorter side: the scale of
    colour and shading, where detail (which a regenerated frame softens) has averaged out."""
    block = max(1, min(frames.shape[1], frames.shape[2]) // 16)
    pooled = torch.nn.functional.avg_pool2d(frames.movedim(-1, 1).float(), block, stride=block)
    return pooled.movedim(1, -1)


def apply_colour(frames: torch.Tensor, gain: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    return (frames * gain + offset).clamp(0, 1)


def crossfade(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """Blend two runs of the same ``n`` frames: from mostly ``before`` to mostly ``after``
    (weights 1/(n+1) ... n/(n+1), so neither end is a hard switch)."""
    n = before.shape[0]
    ramp = torch.arange(1, n + 1, dtype=before.dtype).div(n + 1).view(n, 1, 1, 1)
    return before * (1 - ramp) + after * ramp


# -- conditioning a continued window --------------------------------------------------------------
def _takes_first_frames(model) -> bool:
    """A TI2V-type model: continued from clean first latent frames (neither VACE nor the
    mask + image channels)."""
    return not (model.image_inputs.vace or model.image_inputs.channels)


def continuation_conditioning(model, vae, conditioning: VideoDiTConditioning,
                              given: torch.Tensor, frames: int, *,
                              given_latent: torch.Tensor | None = None,
                              hooks: Hooks = NO_HOOKS) -> VideoDiTConditioning:
    """``conditioning`` for a window of ``frames`` frames whose first ``len(given)`` frames
    (4k+1 of them) are ``given`` (IMAGE), in the form ``model`` was trained with.

    Unlike VideoDiT Image To Video this gives several frames, so motion carries over and not
    just a still: TI2V-type models get their latents as clean first latent frames; channel
    models (Wan 2.1 I2V, A14B I2V) get mask 1 on those frames and their latents in the image
    channels, the rest grey with mask 0. CLIP image tokens, if any, stay those of the original
    start image: they say what the subject looks like, which should not drift either. A VACE
    model instead gets a VACE context that keeps the given frames and regenerates the rest.
    ``given_latent``: the raw latent of ``given``, when the caller has encoded it already.
    """
    fmt = vae.latent_format
    tf = fmt.temporal_factor
    count, height, width = given.shape[0], given.shape[1], given.shape[2]
    extras = {k: v for k, v in conditioning.extras.items()
              if k not in (FIRST_FRAMES_KEY, VACE_KEY)}
    base = conditioning.replace(extras=extras)
    if model.image_inputs.vace:
        control = torch.full((frames, height, width, 3), 0.5)
        control[:count] = given
        mask = torch.ones(frames, height, width)
        mask[:count] = 0
        old = conditioning.extras.get(VACE_KEY)
        strength = old.strength if isinstance(old, VaceInputs) else 1.0
        return vace_conditioning(vae, base, width, height, frames, strength=strength,
                                 control_video=control, control_mask=mask, hooks=hooks)[0]
    if model.image_inputs.channels:
        pixels = torch.full((frames, height, width, 3), 0.5)
        pixels[:count] = given
        latents = fmt.normalize(vae.encode(pixels, hooks=hooks))      # [1, C, t, h, w]
        t, h, w = latents.shape[2:]
        # One mask value per video frame, the first frame counted tf times (as the model
        # was trained: its latent frame stands for tf frames like every other).
        mask = torch.zeros(1, frames + tf - 1, h, w)
        mask[:, :count + tf - 1] = 1
        mask = mask.view(1, t, tf, h, w).transpose(1, 2)
        return base.replace(concat_latent=torch.cat([mask, latents], dim=1))
    if given_latent is None:
        given_latent = vae.encode(given, hooks=hooks)
    extras[FIRST_FRAMES_KEY] = fmt.normalize(given_latent)
    return base.replace(concat_latent=None, extras=extras)


# -- checks ---------------------------------------------------------------------------------------
def check_source_video(source_video, width: int, height: int) -> torch.Tensor | None:
    if source_video is None:
        return None
    frames = checked_frames(source_video, "source_video", single_image=False,
                            fix="connect a clip, e.g. from VideoDiT Load Video")
    if tuple(frames.shape[1:3]) != (height, width):
        raise InputError(f"source_video is {frames.shape[2]}x{frames.shape[1]} but width x "
                         f"height is {width}x{height}", input="source_video",
                         fix=f"set width {frames.shape[2]} and height {frames.shape[1]} (if the "
                         "model takes that size), or load the clip at the size you render with "
                         "VideoDiT Load Video's size settings")
    return frames


def check_long_video_inputs(model, conditioning: VideoDiTConditioning, vae, plan: LongVideoPlan,
                            width: int, height: int, *, model_low_noise=None) -> None:
    """Everything that can be refused before a model runs."""
    if vae.latent_format != model.latent_format:
        raise InputError(f"{vae.file_name} makes {vae.latent_format.name} latents but "
                         f"{model.file_name} works on {model.latent_format.name}", input="vae",
                         fix=model.family.vae_hint)
    check_video_size(vae, width, height, plan.window)
    check_fits_in_memory(width, height, plan.length)
    takes = model.image_inputs
    continues = plan.method != CONTEXT_WINDOWS or plan.source_frames > 0
    if continues and not (takes.any or takes.vace):
        if plan.source_frames:
            raise InputError(f"{model.file_name} is a text-to-video model: it cannot continue "
                             "source_video from its last frames", input="source_video",
                             fix="load an image-to-video (or VACE) model to extend a clip")
        raise InputError(f"{model.file_name} is a text-to-video model: it cannot continue a "
                         "clip from its last frames", input="method",
                         fix="use method 'context windows', which works with any model, or "
                         "load an image-to-video (or VACE) model")
    vace = conditioning.extras.get(VACE_KEY)
    if isinstance(vace, VaceInputs):
        first = latent_frames(plan.renders[0], model.latent_format.temporal_factor)
        if plan.method == CONTEXT_WINDOWS and vace.reference_frames:
            raise InputError("context windows cannot use VACE reference images: they come "
                             "before the clip's frames and belong to no single window",
                             input="conditioning", fix="remove the reference images from "
                             "VideoDiT VACE Conditioning, or use method 'continue'")
        if plan.source_frames:
            raise InputError("source_video replaces the first window, so the VACE context made "
                             "for it would go unused", input="conditioning",
                             fix="connect VideoDiT Text Encode directly; the continued windows "
                             "get their own VACE context")
        covered = vace.context.shape[2] - vace.reference_frames
        if covered != first:
            what = "clip" if plan.method == CONTEXT_WINDOWS else "first window"
            raise InputError(f"the VACE context covers {covered} latent frames but the {what} "
                             f"has {first}", input="conditioning",
                             fix=f"set VideoDiT VACE Conditioning's length to {plan.renders[0]}")
    if takes.channels and not plan.source_frames:
        first = latent_frames(plan.renders[0], model.latent_format.temporal_factor)
        given = conditioning.concat_latent
        if given is None:
            raise InputError(f"{model.file_name} is an image-to-video model and needs a start "
                             "image for the first window", input="conditioning",
                             fix=f"put VideoDiT Image To Video (length {plan.renders[0]}) "
                             "between the text encode node and this node, or connect "
                             "source_video")
        if given.shape[2] != first:
            made_for = (given.shape[2] - 1) * model.latent_format.temporal_factor + 1
            raise InputError(f"the start image was prepared for {made_for} frames but the "
                             f"first window has {plan.renders[0]}", input="conditioning",
                             fix=f"set VideoDiT Image To Video's length to {plan.renders[0]}")
    if model_low_noise is not None and not model.pairs_with(model_low_noise):
        raise InputError(f"{model_low_noise.file_name} does not pair with {model.file_name}",
                         input="model_low_noise", fix=model.family.expert_pair_hint)


# -- rendering ------------------------------------------------------------------------------------
class _WindowedModel:
    """``model`` whose velocity is computed in context windows and fused: what the VideoDiT
    Context Windows patch does, without making the sampler layer depend on the patch classes.
    Everything else is the model's own."""

    def __init__(self, model, layout: WindowLayout):
        self._model = model
        self._layout = layout

    def __getattr__(self, name):
        return getattr(self._model, name)

    def run(self, run=None):
        return windowed_velocity(self._model.run(run), self._layout)


@torch.no_grad()   # nothing here is trained; callers outside a node need not remember
def render_long_video(model, conditioning, vae, *, width, height, length, window, overlap, method,
                      seed, steps, cfg, shift, sampler, color_match=True, source_video=None,
                      model_low_noise=None, boundary=None, hooks=None) -> LongVideo:
    """Render ``length`` frames (``source_video`` included, when given) in windows of
    ``window`` frames (see the module for the methods). Each sampling run gets seed ``seed +
    i`` for its index ``i``, so the first window is what VideoDiT Sampler makes with ``seed``."""
    hooks = hooks or NO_HOOKS
    source = check_source_video(source_video, width, height)
    fmt = model.latent_format
    plan = plan_long_video(int(length), int(window), int(overlap), method,
                           source_frames=0 if source is None else source.shape[0],
                           temporal_factor=fmt.temporal_factor)
    check_long_video_inputs(model, conditioning, vae, plan, width, height,
                            model_low_noise=model_low_noise)
    settings = SamplingSettings(seed=int(seed), steps=int(steps), cfg=float(cfg),
                                shift=float(shift), sampler=sampler, boundary=boundary)
    if plan.method == CONTEXT_WINDOWS:
        layout = WindowLayout(latent_frames(plan.window, fmt.temporal_factor),
                              latent_frames(plan.overlap, fmt.temporal_factor))
        model = _WindowedModel(model, layout)
        if model_low_noise is not None:
            model_low_noise = _WindowedModel(model_low_noise, layout)

    out = torch.empty(plan.length, height, width, 3)
    filled = 0
    if source is not None:
        out[:source.shape[0]] = source
        filled = source.shape[0]
    for index, frames in enumerate(plan.renders):
        hooks.check_interrupt()
        given = out[filled - plan.overlap:filled] if filled else None
        matched = given is not None and color_match and plan.method != NAIVE
        # The given frames' latent, encoded once: a TI2V-type model is conditioned on it, and
        # the colour fit decodes it again (below).
        given_latent = (vae.encode(given, hooks=hooks)
                        if matched or (given is not None and _takes_first_frames(model))
                        else None)
        cond = conditioning if given is None else continuation_conditioning(
            model, vae, conditioning, given, frames, given_latent=given_latent, hooks=hooks)
        shape = list(fmt.latent_shape(1, frames, height, width))
        vace = cond.extras.get(VACE_KEY)
        if isinstance(vace, VaceInputs):   # its reference images sit in front of the clip
            shape[2] += vace.reference_frames
        latent = {"samples": torch.zeros(shape), LATENT_FORMAT_KEY: fmt.name}
        sampled = sample_video(model, cond, latent,
                               dataclasses.replace(settings, seed=settings.seed + index),
                               model_low_noise=model_low_noise, hooks=hooks)
        piece = vae.decode(sampled, hooks=hooks)
        # The given frames as the model saw them: through the VAE and back. That round trip
        # changes colour a little by itself, and a TI2V-type model keeps those latents
        # exactly, so a fit against the clip's own frames would "correct" the round trip's
        # error on every window, and every window would carry it further.
        shown = vae.decode(given_latent, hooks=hooks) if matched else None
        filled = _join(out, filled, piece, plan, color_match, shown)
    return LongVideo(out, list(plan.starts), plan.blended)


def _join(out: torch.Tensor, filled: int, piece: torch.Tensor, plan: LongVideoPlan,
          color_match: bool, shown: torch.Tensor | None = None) -> int:
    """Write ``piece`` after the ``filled`` frames of ``out``; returns the new count.

    ``shown``: the shared frames as the model was given them (after the VAE round trip); the
    colour fit maps the piece's shared frames onto these, so it undoes what the model changed
    and nothing else. Without it, onto the clip's frames themselves."""
    if filled == 0:
        out[:piece.shape[0]] = piece
        return piece.shape[0]
    if plan.method == NAIVE:
        out[filled:filled + piece.shape[0] - 1] = piece[1:]
        return filled + piece.shape[0] - 1
    shared = plan.overlap
    before = out[filled - shared:filled]
    if color_match:
        gain, offset = fit_colour(before if shown is None else shown, piece[:shared])
        piece = apply_colour(piece, gain, offset)
    out[filled - shared:filled] = crossfade(before, piece[:shared])
    out[filled:filled + piece.shape[0] - shared] = piece[shared:]
    return filled + piece.shape[0] - shared
