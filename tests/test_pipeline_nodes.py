"""The three pipelines end to end through the nodes, on tiny models with real file layouts."""
from __future__ import annotations

import pytest
import torch

from comfyui_videodit.errors import InputError
from comfyui_videodit.nodes.clip_vision import VideoDiTCLIPVisionEncode, VideoDiTCLIPVisionLoader
from comfyui_videodit.nodes.conditioning import VideoDiTEmptyLatent, VideoDiTImageToVideo
from comfyui_videodit.nodes.loaders import VideoDiTModelLoader
from comfyui_videodit.nodes.sampling import VideoDiTFlowEditSampler, VideoDiTSampler
from comfyui_videodit.nodes.text import VideoDiTTextEncode, VideoDiTTextEncoderLoader
from comfyui_videodit.nodes.vae import VideoDiTVAEDecode, VideoDiTVAEEncode, VideoDiTVAELoader

SIZE, LENGTH = 64, 9


@pytest.fixture(autouse=True)
def _use_models(tiny_models_dir, monkeypatch):
    from comfyui_videodit.runtime import model_folders
    monkeypatch.setattr(model_folders, "_models_dir_override", tiny_models_dir)


def text(positive="a red ball rolls to the left", negative="blurry"):
    encoder = VideoDiTTextEncoderLoader().load("tiny_umt5.safetensors", "fp32", "cpu")[0]
    return VideoDiTTextEncode().encode(encoder, positive, negative)[0]


def model(name):
    return VideoDiTModelLoader().load(name, "fp32")[0]


def vae(version="21"):
    return VideoDiTVAELoader().load(f"tiny_vae{version}.safetensors", "fp32")[0]


def sample(m, cond, latent, seed=1, steps=3, cfg=3.0, sampler="unipc", denoise=1.0, **kw):
    return VideoDiTSampler().sample(m, cond, latent, seed, steps, cfg, 5.0, sampler, denoise, **kw)[0]


def test_text_to_video_decodes_to_frames_and_is_seed_deterministic():
    v = vae()
    latent = VideoDiTEmptyLatent().make(v, SIZE, SIZE, LENGTH, 1)[0]
    assert latent["samples"].shape == (1, 16, 3, 8, 8) and latent["latent_format"] == "wan21"
    m, cond = model("tiny_t2v.safetensors"), text()
    first = sample(m, cond, latent)
    again = sample(m, cond, latent)
    other = sample(m, cond, latent, seed=2)
    assert torch.equal(first["samples"], again["samples"])
    assert not torch.equal(first["samples"], other["samples"])
    frames = VideoDiTVAEDecode().decode(v, first)[0]
    assert frames.shape == (LENGTH, SIZE, SIZE, 3) and torch.isfinite(frames).all()
    for solver in ("euler", "dpmpp_2m", "flow_distilled"):
        out = sample(m, cond, latent, sampler=solver, cfg=1.0 if solver == "flow_distilled" else 3.0)
        assert torch.isfinite(out["samples"]).all()


def test_length_and_size_errors_say_what_to_use():
    with pytest.raises(InputError, match=r"VideoDiT Empty Latent · length.*use 77 or 81"):
        VideoDiTEmptyLatent().make(vae(), SIZE, SIZE, 80, 1)
    with pytest.raises(InputError, match=r"width must be a multiple of 16.*use 48 or 64"):
        VideoDiTEmptyLatent().make(vae(), 50, SIZE, LENGTH, 1)


def test_mismatched_latent_and_text_model_with_image_are_refused():
    wan22_latent = VideoDiTEmptyLatent().make(vae("22"), SIZE, SIZE, LENGTH, 1)[0]
    with pytest.raises(InputError, match="VideoDiT Sampler · latent: this latent is wan22"):
        sample(model("tiny_t2v.safetensors"), text(), wan22_latent)
    image = torch.rand(1, 80, 100, 3)
    cond, latent = VideoDiTImageToVideo().prepare(text(), vae(), image, SIZE, SIZE, LENGTH)
    with pytest.raises(InputError, match="text-to-video model and cannot use a start image"):
        sample(model("tiny_t2v.safetensors"), cond, latent)


def test_image_to_video_with_clip_features_wan21_i2v():
    clip = VideoDiTCLIPVisionLoader().load("tiny_clip_vision.safetensors", "fp32")[0]
    image = torch.rand(1, 72, 96, 3)
    clip_out = VideoDiTCLIPVisionEncode().encode(clip, image, "none")[0]
    cond, latent = VideoDiTImageToVideo().prepare(text(), vae(), image, SIZE, SIZE, LENGTH,
                                                  clip_vision_output=clip_out)
    assert cond.concat_latent.shape == (1, 20, 3, 8, 8)
    assert cond.concat_latent[:, :4, 0].eq(1).all() and cond.concat_latent[:, :4, 1:].eq(0).all()
    assert cond.clip_features.shape[1] == 257
    out = sample(model("tiny_i2v.safetensors"), cond, latent)
    assert out["samples"].shape == (1, 16, 3, 8, 8) and torch.isfinite(out["samples"]).all()


def test_image_to_video_first_frame_stays_given_for_ti2v():
    v = vae("22")
    image = torch.rand(1, 64, 64, 3)
    cond, latent = VideoDiTImageToVideo().prepare(text(), v, image, SIZE, SIZE, LENGTH)
    out = sample(model("tiny_ti2v.safetensors"), cond, latent)
    direct = v.encode(image)
    assert torch.allclose(out["samples"][:, :, :1], direct, atol=1e-5)


def test_sdedit_and_flowedit_edit_an_encoded_clip():
    v = vae()
    clip = torch.rand(LENGTH, SIZE, SIZE, 3)
    source = VideoDiTVAEEncode().encode(v, clip)[0]
    m = model("tiny_t2v.safetensors")
    edited = sample(m, text("a green ball"), source, denoise=0.4)
    assert edited["samples"].shape == source["samples"].shape
    # lower denoise stays closer to the source
    light = sample(m, text("a green ball"), source, denoise=0.1)
    dist = lambda a: float((a["samples"] - source["samples"]).abs().mean())  # noqa: E731
    assert dist(light) < dist(edited)
    flow = VideoDiTFlowEditSampler().edit(m, text("a red ball"), text("a green ball"), source,
                                          0, 6, 2.0, 4.0, 5.0, 2, 1, 1)[0]
    assert flow["samples"].shape == source["samples"].shape and torch.isfinite(flow["samples"]).all()
    with pytest.raises(InputError, match="skip_steps must be below steps"):
        VideoDiTFlowEditSampler().edit(m, text(), text(), source, 0, 4, 2.0, 4.0, 5.0, 4, 0, 1)


def test_two_experts_through_the_node():
    latent = VideoDiTEmptyLatent().make(vae(), SIZE, SIZE, LENGTH, 1)[0]
    out = sample(model("tiny_t2v.safetensors"), text(), latent, steps=4,
                 model_low_noise=model("tiny_t2v_low.safetensors"), boundary=0.9)
    single = sample(model("tiny_t2v.safetensors"), text(), latent, steps=4)
    assert not torch.equal(out["samples"], single["samples"])
    own_cfg = sample(model("tiny_t2v.safetensors"), text(), latent, steps=4,
                     model_low_noise=model("tiny_t2v_low.safetensors"), boundary=0.9,
                     cfg_low_noise=1.5)
    assert not torch.equal(out["samples"], own_cfg["samples"])


def test_cancel_mid_sampling_stops_within_a_step_and_a_rerun_matches_a_clean_run():
    from comfyui_videodit.errors import Interrupted
    from comfyui_videodit.runtime import progress
    from comfyui_videodit.runtime.hooks import host_hooks
    from comfyui_videodit.samplers.denoise import SamplingSettings, sample_video

    m, cond = model("tiny_t2v.safetensors"), text()
    latent = VideoDiTEmptyLatent().make(vae(), SIZE, SIZE, LENGTH, 1)[0]
    settings = SamplingSettings(seed=3, steps=6, cfg=3.0, shift=5.0)
    clean = sample_video(m, cond, latent, settings)

    calls = []
    network = m.network
    forward = network.forward
    network.forward = lambda *a, **k: (calls.append(1), forward(*a, **k))[1]

    def cancel_at_second_step(step, x0):
        if step == 1:
            progress.request_interrupt()

    try:
        with pytest.raises(Interrupted):
            sample_video(m, cond, latent, settings, step_callback=cancel_at_second_step,
                         hooks=host_hooks())
    finally:
        del network.forward
    assert len(calls) == 2 * 2     # two steps (cond + uncond each) ran, none after the cancel
    again = sample_video(m, cond, latent, settings)
    assert torch.equal(again["samples"], clean["samples"])
