"""VideoDiT Step Cache: which steps run the model, and that turning it off changes nothing.

The rules are checked twice: on the patch's wrapper with a stand-in velocity whose output
tells which pass and step produced it, and through the real nodes on the tiny models (where
an inner call counter sees the model passes the cache let through).
"""
from __future__ import annotations

import logging

import pytest
import torch

from comfyui_videodit.core.conditioning import ModelInputs
from comfyui_videodit.core.run_info import RunInfo
from comfyui_videodit.errors import InputError
from comfyui_videodit.families.model import ModelPatch
from comfyui_videodit.families.step_cache import INPUT_CHANGE, OUTPUT_MAGNITUDE, StepCache
from comfyui_videodit.nodes.loaders import VideoDiTModelLoader
from comfyui_videodit.nodes.step_cache import VideoDiTStepCache
from comfyui_videodit.samplers.schedules import flow_sigmas

STEPS = 12


def _stand_in_run(patch: StepCache, steps: int = STEPS):
    """The wrapped stand-in velocity, its RunInfo and the list of (branch, step) it computed.

    The stand-in's v is smooth in sigma (so the change estimates see a slowly changing
    prediction, as a real model gives mid-schedule) and different per branch."""
    sigmas = tuple(float(s) for s in flow_sigmas(steps, 3.0))
    run = RunInfo(sigmas=sigmas, label="test")
    computed = []

    def velocity(x, sigma, inputs):
        computed.append((inputs.branch, run.step_of(sigma)))
        sign = 1.0 if inputs.branch == "positive" else -1.0
        return sign * (1.0 + 0.05 * sigma) * torch.ones_like(x) + 0.01 * x

    return patch.wrap_velocity(velocity, None, run), run, computed


def _sample_steps(wrapped, run, branches=("positive",)):
    x = torch.ones(1, 4, 2, 4, 4)
    outputs = []
    for sigma in run.sigmas[:-1]:
        for branch in branches:
            outputs.append((branch, wrapped(x, sigma, ModelInputs(text=torch.zeros(1, 2, 3),
                                                                  branch=branch))))
        x = x * (1.0 - 0.02)   # the latent moves a little each step
    return outputs


@pytest.mark.parametrize("measure", [INPUT_CHANGE, OUTPUT_MAGNITUDE])
def test_first_and_last_steps_always_run_and_skips_are_bounded(measure):
    wrapped, run, computed = _stand_in_run(StepCache(10.0, 0.0, 1.0, measure, max_skips=2))
    _sample_steps(wrapped, run)
    steps = [step for _, step in computed]
    assert steps[0] == 0 and steps[-1] == STEPS - 1
    assert len(steps) < STEPS                    # a generous threshold does skip
    gaps = [b - a for a, b in zip(steps, steps[1:])]
    assert max(gaps) <= 3                        # at most max_skips=2 reused in a row


@pytest.mark.parametrize("measure", [INPUT_CHANGE, OUTPUT_MAGNITUDE])
def test_threshold_zero_computes_every_step(measure):
    wrapped, run, computed = _stand_in_run(StepCache(0.0, 0.0, 1.0, measure))
    _sample_steps(wrapped, run, ("positive", "negative"))
    assert len(computed) == 2 * STEPS


def test_reuse_only_inside_the_allowed_part_of_the_schedule():
    wrapped, run, computed = _stand_in_run(StepCache(10.0, 0.5, 0.75, INPUT_CHANGE, 20))
    _sample_steps(wrapped, run)
    skipped = sorted(set(range(STEPS)) - {step for _, step in computed})
    assert skipped and all(0.5 <= step / STEPS <= 0.75 for step in skipped)


def test_positive_and_negative_passes_keep_their_own_cache():
    wrapped, run, computed = _stand_in_run(StepCache(10.0, 0.0, 1.0, INPUT_CHANGE, 3))
    outputs = _sample_steps(wrapped, run, ("positive", "negative"))
    assert {b for b, _ in computed} == {"positive", "negative"}
    for branch, v in outputs:   # a reused prediction always comes from its own pass
        assert (v.mean() > 0) == (branch == "positive")


def test_end_of_run_logs_computed_and_reused(caplog):
    wrapped, run, computed = _stand_in_run(StepCache(10.0, 0.0, 1.0, INPUT_CHANGE))
    _sample_steps(wrapped, run)
    with caplog.at_level(logging.INFO, logger="comfyui_videodit"):
        run.finish()
    reused = STEPS - len(computed)
    assert f"computed {len(computed)} of {STEPS} model passes, reused {reused}" in caplog.text


# -- through the nodes, on the tiny models --------------------------------------------------------

class CountPasses(ModelPatch):
    """Inner wrapper: records the noise level of every model pass that really runs."""
    name = "count passes"

    def __init__(self):
        self.runs = []

    def wrap_velocity(self, velocity, model, run):
        seen = []
        self.runs.append((run.label, seen))

        def counted(x, sigma, inputs):
            seen.append((inputs.branch, run.step_of(sigma)))
            return velocity(x, sigma, inputs)
        return counted


@pytest.fixture
def graph(tiny_models_dir, tiny_sampling_graph):
    return tiny_sampling_graph(tiny_models_dir, STEPS)


def _cached(model, threshold, measure=INPUT_CHANGE, start=0.0):
    return VideoDiTStepCache().apply(model, threshold, start, 1.0, measure, 3)[0]


@pytest.mark.parametrize("measure", [INPUT_CHANGE, OUTPUT_MAGNITUDE])
def test_threshold_zero_equals_no_cache_bit_for_bit(graph, measure):
    base = VideoDiTModelLoader().load("tiny_t2v.safetensors", "fp32")[0]
    counter = CountPasses()
    assert torch.equal(graph(_cached(base.with_patch(counter), 0.0, measure)), graph(base))
    assert len(counter.runs[0][1]) == 2 * STEPS


def test_cache_skips_model_passes_and_leaves_its_input_model_alone(graph):
    base = VideoDiTModelLoader().load("tiny_t2v.safetensors", "fp32")[0]
    alone = graph(base)
    counter = CountPasses()
    cached = _cached(base.with_patch(counter), 1.0)
    assert base.patches == ()
    out = graph(cached)
    passes = counter.runs[0][1]
    assert len(passes) < 2 * STEPS
    for branch in ("positive", "negative"):
        steps = [step for b, step in passes if b == branch]
        assert steps[0] == 0 and steps[-1] == STEPS - 1
    assert torch.isfinite(out).all() and not torch.equal(out, alone)
    assert torch.equal(graph(base), alone)
    # A second run starts with an empty cache: the same passes, the same result.
    assert torch.equal(graph(cached), out) and counter.runs[1][1] == passes


def test_each_expert_starts_with_an_empty_cache(graph):
    loader = VideoDiTModelLoader()
    high_counter, low_counter = CountPasses(), CountPasses()
    high = _cached(loader.load("tiny_t2v.safetensors", "fp32")[0].with_patch(high_counter), 1.0)
    low = _cached(loader.load("tiny_t2v_low.safetensors", "fp32")[0].with_patch(low_counter), 1.0)
    graph(high, low=low)
    (high_label, high_passes), (low_label, low_passes) = high_counter.runs[0], low_counter.runs[0]
    assert (high_label, low_label) == ("high-noise expert", "low-noise expert")
    first_low_step = min(step for _, step in low_passes)
    assert first_low_step > 0 and max(step for _, step in high_passes) < first_low_step
    # The low-noise expert computes its first step (nothing cached from the other expert) and
    # the schedule's last step.
    for branch in ("positive", "negative"):
        steps = [step for b, step in low_passes if b == branch]
        assert steps[0] == first_low_step and steps[-1] == STEPS - 1


def test_cfg_one_makes_one_model_pass_per_step(graph):
    counter = CountPasses()
    graph(VideoDiTModelLoader().load("tiny_t2v.safetensors", "fp32")[0].with_patch(counter),
          cfg=1.0)
    assert [step for _, step in counter.runs[0][1]] == list(range(STEPS))


def test_stacked_cfg_passes_equal_separate_ones(graph, monkeypatch):
    base = VideoDiTModelLoader().load("tiny_t2v.safetensors", "fp32")[0]
    separate = graph(base)
    monkeypatch.setenv("VIDEODIT_CFG_BATCH", "1")
    counter = CountPasses()
    stacked = graph(base.with_patch(counter))
    assert [b for b, _ in counter.runs[0][1]] == ["both"] * STEPS
    assert (stacked - separate).abs().max() <= 1e-5 * separate.abs().max()


def test_bad_settings_name_the_input():
    node = VideoDiTStepCache()
    with pytest.raises(InputError, match="end_percent") as err:
        node.apply(object(), 0.1, 0.8, 0.2, INPUT_CHANGE, 3)
    assert "VideoDiT Step Cache" in str(err.value)
    with pytest.raises(InputError, match="measure"):
        node.apply(object(), 0.1, 0.0, 1.0, "psychic", 3)
