"""Step cache: skip the model on steps where its prediction would barely change.

Along a rectified-flow trajectory the predicted velocity ``v`` changes slowly over long
stretches of the schedule (the path from noise to clip is nearly straight there). A step cache
computes ``v`` on some steps and, on the steps in between, hands back the last computed ``v``
of the same guidance pass instead of running the network. The solver still takes every step,
so only the model evaluations are saved.

Which steps are reused is decided from an estimate of how much ``v`` has changed since it was
last computed; once the estimate, accumulated step by step, reaches ``threshold`` the model
runs again. Two estimates (``measure``):

* ``input change``: the relative L1 change of the model's input latent from one step to the
  next, scaled by how strongly the output responded to input changes between the last two
  computed steps (the idea of TeaCache and EasyCache, measured on the latent itself so it
  works for any model family).
* ``output magnitude``: the ratio of the mean absolute ``v`` between the last two computed
  steps, taken as the per-step rate; the error estimate grows by ``|1 - accumulated ratio|``
  per reused step (the idea of MagCache, with the ratio measured during the run instead of
  calibrated beforehand).

Rules that hold whatever the threshold: the first and the last step of the schedule are always
computed; each guidance pass (positive, negative, or both stacked) keeps its own cache; a
fresh cache is made for every sampling run and for each expert (the wrapper is built per run);
a step outside ``start_percent``..``end_percent`` of the steps is computed; at most
``max_skips`` steps in a row are reused; threshold 0 reuses nothing. At the end of a run one
log line says how many passes were computed and how many reused.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from ..core.conditioning import ModelInputs
from ..core.run_info import RunInfo
from .model import ModelPatch, Velocity, VideoModel

log = logging.getLogger("comfyui_videodit")

INPUT_CHANGE = "input change"
OUTPUT_MAGNITUDE = "output magnitude"
MEASURES = (INPUT_CHANGE, OUTPUT_MAGNITUDE)


def _relative_l1(new: torch.Tensor, old: torch.Tensor) -> float:
    scale = old.abs().mean().item()
    return (new - old).abs().mean().item() / max(scale, 1e-12)


@dataclass
class _PassCache:
    """What one guidance pass remembers between steps."""
    last_input: torch.Tensor | None = None        # the latent the previous step saw
    computed_input: torch.Tensor | None = None    # the latent at the last computed step
    computed_output: torch.Tensor | None = None   # v at the last computed step
    response: float | None = None                 # output change per input change (input measure)
    step_ratio: float | None = None               # |v| ratio per step (output measure)
    computed_step: int | None = None
    accumulated: float = 0.0                      # estimated change since the last computation
    ratio_product: float = 1.0                    # output measure: ratio over the reused steps
    skips_in_a_row: int = 0
    computed: int = 0
    reused: int = 0


class StepCache(ModelPatch):
    name = "step cache"

    def __init__(self, threshold: float, start_percent: float = 0.0, end_percent: float = 1.0,
                 measure: str = INPUT_CHANGE, max_skips: int = 3):
        if measure not in MEASURES:
            raise ValueError(f"measure must be one of {MEASURES}, got {measure!r}")
        if not 0.0 <= start_percent <= end_percent <= 1.0:
            raise ValueError("need 0 <= start_percent <= end_percent <= 1")
        self.threshold = float(threshold)
        self.start_percent = float(start_percent)
        self.end_percent = float(end_percent)
        self.measure = measure
        self.max_skips = int(max_skips)

    def describe(self) -> str:
        return (f"step cache ({self.measure}, threshold {self.threshold:g}, steps "
                f"{self.start_percent:.0%}-{self.end_percent:.0%})")

    def may_reuse(self, step: int | None, steps: int) -> bool:
        """Whether ``step`` (0-based, of ``steps``) may be served from the cache at all."""
        if step is None or self.threshold <= 0.0 or step == 0 or step >= steps - 1:
            return False
        return self.start_percent <= step / steps <= self.end_percent

    def wrap_velocity(self, velocity: Velocity, model: VideoModel, run: RunInfo) -> Velocity:
        passes: dict[str, _PassCache] = {}   # one cache per guidance pass and latent shape

        def cached(x: torch.Tensor, sigma: float, inputs: ModelInputs) -> torch.Tensor:
            key = f"{inputs.branch} {tuple(x.shape)}"
            state = passes.setdefault(key, _PassCache())
            step = run.step_of(sigma)
            change, product = (self._estimate(state, x) if self.may_reuse(step, run.steps)
                               else (float("inf"), 1.0))
            if change < self.threshold:
                state.accumulated, state.ratio_product = change, product
                state.skips_in_a_row += 1
                state.reused += 1
                state.last_input = x
                return state.computed_output
            v = velocity(x, sigma, inputs)
            self._remember(state, x, v, step)
            return v

        run.on_finish(lambda: self._log(run, passes))
        return cached

    # -- the change estimate -------------------------------------------------------------------
    def _estimate(self, state: _PassCache, x: torch.Tensor) -> tuple[float, float]:
        """(accumulated estimated change of v if this step is reused, the output measure's
        ratio product then); inf when the model must run."""
        never = (float("inf"), 1.0)
        if state.computed_output is None or state.skips_in_a_row >= self.max_skips:
            return never
        if self.measure == INPUT_CHANGE:
            if state.response is None:
                return never
            return (state.accumulated + state.response * _relative_l1(x, state.last_input),
                    1.0)
        if state.step_ratio is None:
            return never
        product = state.ratio_product * state.step_ratio
        return state.accumulated + abs(1.0 - product), product

    def _remember(self, state: _PassCache, x: torch.Tensor, v: torch.Tensor,
                  step: int | None) -> None:
        if state.computed_output is not None:
            if self.measure == INPUT_CHANGE:
                moved = _relative_l1(x, state.computed_input)
                changed = _relative_l1(v, state.computed_output)
                state.response = changed / moved if moved > 0 else None
            elif step is not None and state.computed_step is not None and step > state.computed_step:
                ratio = v.abs().mean().item() / max(state.computed_output.abs().mean().item(), 1e-12)
                state.step_ratio = ratio ** (1.0 / (step - state.computed_step))
        state.computed_input = state.last_input = x
        state.computed_output = v
        state.computed_step = step
        state.accumulated = 0.0
        state.ratio_product = 1.0
        state.skips_in_a_row = 0
        state.computed += 1

    def _log(self, run: RunInfo, passes: dict[str, _PassCache]) -> None:
        computed = sum(s.computed for s in passes.values())
        reused = sum(s.reused for s in passes.values())
        if computed + reused == 0:
            return
        per_pass = ", ".join(f"{key.split(' ')[0]} {s.computed}/{s.computed + s.reused}"
                             for key, s in passes.items())
        log.info("VideoDiT step cache (%s): computed %d of %d model passes, reused %d (%s)",
                 run.label, computed, computed + reused, reused, per_pass)
