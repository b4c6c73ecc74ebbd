"""Model patches never leak: one loader feeding a patched and an unpatched branch.

ComfyUI caches node outputs and lets one output feed several nodes, so a patch node must return
a new model object and leave its input alone. Here one loaded model feeds two branches; the
patched branch scales some weights (as a LoRA merge would) and wraps the velocity call (as a
step cache would). The unpatched branch must give exactly the latents it gives alone, whichever
branch runs first, and the shared weights must come back bit for bit.
"""
from __future__ import annotations

import pytest
import torch

from comfyui_videodit.families.model import ModelPatch
from comfyui_videodit.nodes.loaders import VideoDiTModelLoader


class ScaleWeights(ModelPatch):
    """Multiplies the named weights by a factor (stands in for a LoRA merge)."""
    name = "scale weights"
    changes_weights = True

    def __init__(self, keys, factor):
        self.keys, self.factor = tuple(keys), factor

    def weight_updates(self, model):
        return {key: (lambda w: w * self.factor) for key in self.keys}


class CountCalls(ModelPatch):
    """Wraps the velocity call and counts calls per sampling run (stands in for a step cache)."""
    name = "count calls"

    def __init__(self):
        self.runs = []

    def wrap_velocity(self, velocity, model, run):
        calls = [0]
        self.runs.append(calls)

        def counted(x, sigma, inputs):
            calls[0] += 1
            return velocity(x, sigma, inputs)
        return counted


PATCHED_KEYS = ("blocks.0.ffn.0.weight", "blocks.1.self_attn.q.weight", "head.head.weight")


@pytest.fixture
def graph(tiny_models_dir, tiny_sampling_graph):
    return tiny_sampling_graph(tiny_models_dir, 3)


def _weights(model):
    return {k: v.detach().clone() for k, v in model.network.state_dict().items()}


@pytest.mark.parametrize("patched_first", [False, True])
def test_unpatched_branch_is_unchanged_in_either_order(graph, patched_first):
    base = VideoDiTModelLoader().load("tiny_t2v.safetensors", "fp32")[0]
    original = _weights(base)
    alone = graph(base)                      # the unpatched branch, before any patch exists

    counter = CountCalls()
    patched = base.with_patch(ScaleWeights(PATCHED_KEYS, 1.5)).with_patch(counter)
    assert base.patches == () and len(patched.patches) == 2
    assert patched.shares_weights_with(base)  # a new object, not a copy of the weights

    if patched_first:
        patched_out = graph(patched)
        unpatched_out = graph(base)
    else:
        unpatched_out = graph(base)
        patched_out = graph(patched)
    assert torch.equal(unpatched_out, alone)
    assert not torch.allclose(patched_out, alone)
    assert torch.equal(graph(patched), patched_out)     # re-applied after the other branch ran
    assert torch.equal(graph(base), alone)

    assert [calls[0] for calls in counter.runs] == [6, 6]   # fresh wrapper state per run
    base.restore_weights()
    assert all(torch.equal(v, original[k]) for k, v in _weights(base).items())


def test_patched_model_matches_a_model_with_those_weights_loaded_plainly(graph, tmp_path):
    base = VideoDiTModelLoader().load("tiny_t2v.safetensors", "fp32")[0]
    patched_out = graph(base.with_patch(ScaleWeights(PATCHED_KEYS, 0.5)))

    other = VideoDiTModelLoader().load("tiny_t2v.safetensors", "fp32")[0]
    with torch.no_grad():
        for key in PATCHED_KEYS:
            other.network.get_parameter(key).mul_(0.5)
    assert torch.equal(patched_out, graph(other))


def test_patches_stack_in_order_and_siblings_stay_apart(graph):
    base = VideoDiTModelLoader().load("tiny_t2v.safetensors", "fp32")[0]
    double = base.with_patch(ScaleWeights(PATCHED_KEYS, 2.0))
    half_of_double = double.with_patch(ScaleWeights(PATCHED_KEYS, 0.5))   # back to the original
    sibling = base.with_patch(ScaleWeights(PATCHED_KEYS, 3.0))
    alone = graph(base)
    doubled = graph(double)
    assert torch.equal(graph(half_of_double), alone)   # x2 then x0.5 is exact
    tripled = graph(sibling)
    assert not torch.allclose(doubled, tripled)
    assert torch.equal(graph(double), doubled)
    assert double.patches[0] is half_of_double.patches[0] and len(double.patches) == 1
