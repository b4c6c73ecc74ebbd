"""NaN and infinity never turn into a black clip: refused at validation, at load, or at the step."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from comfyui_videodit.cli.overrides import Target, coerce_value
from comfyui_videodit.cli.validate import validate_prompt
from comfyui_videodit.errors import InputError
from comfyui_videodit.families.model import ModelPatch
from comfyui_videodit.nodes.conditioning import VideoDiTEmptyLatent
from comfyui_videodit.nodes.loaders import VideoDiTModelLoader
from comfyui_videodit.nodes.sampling import VideoDiTFlowEditSampler, VideoDiTSampler
from comfyui_videodit.nodes.text import VideoDiTTextEncode, VideoDiTTextEncoderLoader
from comfyui_videodit.nodes.vae import VideoDiTVAEEncode, VideoDiTVAELoader

from fake_comfy_server import OBJECT_INFO
from test_cli_validate import GOOD


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "nan", "-Infinity"])
def test_a_non_finite_float_widget_is_refused_at_validation(value):
    prompt = copy.deepcopy(GOOD)
    prompt["4"]["inputs"]["cfg"] = value
    problems = [str(p) for p in validate_prompt(prompt, OBJECT_INFO)]
    assert len(problems) == 1
    assert problems[0].startswith("#4 FakeSampler ('Main sampler') · cfg: ")
    assert "is not a finite number" in problems[0] and "Fix: give it an ordinary number" in problems[0]


def test_set_cfg_nan_on_the_command_line_is_refused_before_running():
    prompt = copy.deepcopy(GOOD)
    value = coerce_value("nan", Target("4", "cfg", "4.cfg"), prompt, OBJECT_INFO)
    prompt["4"]["inputs"]["cfg"] = value
    assert [p.input for p in validate_prompt(prompt, OBJECT_INFO)] == ["cfg"]


def test_a_node_called_with_nan_names_itself_and_the_input():
    with pytest.raises(InputError, match=r"^VideoDiT Sampler · cfg: nan is not a finite number"):
        VideoDiTSampler().sample(None, None, None, 1, 3, float("nan"), 5.0, "unipc", 1.0)
    with pytest.raises(InputError, match=r"VideoDiT Sampler · shift: inf"):
        VideoDiTSampler().sample(model=None, conditioning=None, latent=None, seed=1, steps=3,
                                 cfg=1.0, shift=math.inf, sampler="unipc", denoise=1.0)


@pytest.fixture()
def models(tiny_models_dir, monkeypatch):
    from comfyui_videodit.runtime import model_folders
    monkeypatch.setattr(model_folders, "_models_dir_override", tiny_models_dir)
    return tiny_models_dir


def test_nan_in_a_weights_file_is_refused_at_load_naming_file_and_tensor(models):
    state = load_file(str(models / "diffusion_models" / "tiny_t2v.safetensors"))
    name = sorted(k for k in state if k.endswith("ffn.0.weight"))[0]
    state[name][0, 0] = float("nan")
    save_file(state, str(models / "diffusion_models" / "broken_nan.safetensors"))
    try:
        with pytest.raises(InputError) as caught:
            VideoDiTModelLoader().load("broken_nan.safetensors", "fp32")
    finally:
        (models / "diffusion_models" / "broken_nan.safetensors").unlink()
    text = str(caught.value)
    assert text.startswith("VideoDiT Model Loader · model_name: broken_nan.safetensors holds NaN")
    assert name.split("model.diffusion_model.")[-1] in text and "Fix:" in text


def test_nan_in_a_vae_file_is_refused_at_load(models):
    state = load_file(str(models / "vae" / "tiny_vae21.safetensors"))
    name = sorted(k for k in state if state[k].dtype.is_floating_point)[0]
    state[name].view(-1)[0] = float("inf")
    save_file(state, str(models / "vae" / "broken_inf.safetensors"))
    try:
        with pytest.raises(InputError, match=rf"broken_inf.safetensors holds NaN or infinite "
                                             rf"numbers in tensor '{name}'"):
            VideoDiTVAELoader().load("broken_inf.safetensors", "fp32")
    finally:
        (models / "vae" / "broken_inf.safetensors").unlink()


class _NaNFromStep(ModelPatch):
    """Velocity turns NaN from the given call on (one call per step at cfg 1)."""

    name = "nan from step"

    def __init__(self, first_bad_call: int):
        self.first_bad_call = first_bad_call

    def wrap_velocity(self, velocity, model, run):
        calls = [0]

        def wrapped(x, sigma, inputs):
            calls[0] += 1
            v = velocity(x, sigma, inputs)
            return v * float("nan") if calls[0] >= self.first_bad_call else v
        return wrapped


def _text():
    encoder = VideoDiTTextEncoderLoader().load("tiny_umt5.safetensors", "fp32", "cpu")[0]
    return VideoDiTTextEncode().encode(encoder, "a red ball", "blurry")[0]


def test_the_sampler_stops_at_the_first_non_finite_step(models):
    vae = VideoDiTVAELoader().load("tiny_vae21.safetensors", "fp32")[0]
    latent = VideoDiTEmptyLatent().make(vae, 64, 64, 9, 1)[0]
    model = VideoDiTModelLoader().load("tiny_t2v.safetensors", "fp32")[0]
    broken = model.with_patch(_NaNFromStep(2))
    seen = []
    from comfyui_videodit.samplers.denoise import SamplingSettings, sample_video
    with pytest.raises(InputError, match=r"model: the latent became NaN or infinite at step 2 "
                                         r"of 4; sampling was stopped"):
        sample_video(broken, _text(), latent, SamplingSettings(1, 4, 1.0, 5.0, "euler"),
                     step_callback=lambda i, x0: seen.append(i))
    assert seen == [0]
    with pytest.raises(InputError, match=r"^VideoDiT Sampler · model: the latent became NaN"):
        VideoDiTSampler().sample(broken, _text(), latent, 1, 3, 1.0, 5.0, "unipc", 1.0)
    source = VideoDiTVAEEncode().encode(vae, torch.rand(9, 64, 64, 3))[0]
    with pytest.raises(InputError, match=r"^VideoDiT FlowEdit.*step \d+ of 6"):
        VideoDiTFlowEditSampler().edit(broken, _text(), _text(), source, 0, 6, 1.0, 1.0, 5.0,
                                       2, 0, 1)
    bad_latent = dict(latent, samples=latent["samples"].clone().fill_(float("nan")))
    with pytest.raises(InputError, match=r"latent: the input latent contains NaN"):
        VideoDiTSampler().sample(model, _text(), bad_latent, 1, 3, 1.0, 5.0, "unipc", 1.0)


def test_the_samplers_refuse_nan_when_queued_inside_comfyui_too():
    # ComfyUI calls VALIDATE_INPUTS with the widget values when the prompt is queued
    verdict = VideoDiTSampler.VALIDATE_INPUTS(cfg=float("nan"), shift=5.0, denoise=1.0)
    assert verdict == ("cfg: nan is not a finite number. Fix: give it an ordinary number (NaN "
                       "and infinity are not allowed)")
    assert "shift: 0.0 is outside 0.1..30.0" in VideoDiTSampler.VALIDATE_INPUTS(5.0, 0.0, 1.0)
    assert VideoDiTSampler.VALIDATE_INPUTS(5.0, 5.0, 1.0, boundary=None) is True
    assert "target_cfg: inf" in VideoDiTFlowEditSampler.VALIDATE_INPUTS(3.0, math.inf, 5.0)
