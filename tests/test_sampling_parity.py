"""Our sampler against diffusers' Wan pipelines and schedulers on the same tiny random weights.

Same transformer weights (a diffusers ``WanTransformer3DModel`` saved in diffusers layout and
loaded through our loader), same text embeddings, same initial noise: the final latents must
agree. Tolerance: max |ours - diffusers| <= 1e-4 x std of the diffusers latent (fp32).
"""
from __future__ import annotations

import pytest
import torch

from comfyui_videodit.model_loaders.wan_dit_loader import load_wan_dit
from comfyui_videodit.samplers.conditioning import TEXT_LEN, VideoDiTConditioning
from comfyui_videodit.samplers.denoise import (FIRST_FRAMES_KEY, SamplingSettings,
                                               sample_video, seeded_noise)
from comfyui_videodit.samplers.latent_formats import get_format

diffusers = pytest.importorskip("diffusers")

TOL = 1e-4
TEXT_DIM = 32


def tiny_transformer(tmp_path, name: str, *, in_channels: int = 16, seed: int = 0):
    torch.manual_seed(seed)
    model = diffusers.WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=128,
        in_channels=in_channels, out_channels=in_channels if in_channels != 36 else 16,
        text_dim=TEXT_DIM, freq_dim=32, ffn_dim=64, num_layers=2, cross_attn_norm=True,
        eps=1e-6).eval()
    for parameter in model.parameters():  # random but well-scaled, so every path matters
        parameter.data.normal_(0, 0.05)
    folder = tmp_path / name
    model.save_pretrained(folder, safe_serialization=True)
    ours = load_wan_dit(folder / "diffusion_pytorch_model.safetensors", "fp32")
    return model, ours


def text_embeddings(seed: int, tokens: int = 7) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    embeds = torch.zeros(1, TEXT_LEN, TEXT_DIM)
    embeds[:, :tokens] = torch.randn(1, tokens, TEXT_DIM, generator=g)
    return embeds


def run_pipeline(pipe, latents, positive, negative, steps, cfg, **kwargs):
    with torch.no_grad():
        return pipe(prompt_embeds=positive, negative_prompt_embeds=negative, latents=latents.clone(),
                    num_inference_steps=steps, guidance_scale=cfg, output_type="latent",
                    height=latents.shape[-2] * 8, width=latents.shape[-1] * 8,
                    num_frames=(latents.shape[2] - 1) * 4 + 1, **kwargs).frames


def relative(ours: torch.Tensor, reference: torch.Tensor) -> float:
    return float((ours - reference).abs().max() / reference.std())


@pytest.fixture(scope="module")
def t2v_setup(tmp_path_factory):
    return tiny_transformer(tmp_path_factory.mktemp("t2v"), "t2v")


@pytest.mark.parametrize("sampler", ["unipc", "euler"])
def test_text_to_video_matches_wan_pipeline(t2v_setup, sampler):
    reference, ours = t2v_setup
    steps, cfg, shift, seed = 6, 4.0, 3.0, 1234
    shape = (1, 16, 3, 8, 8)
    positive, negative = text_embeddings(1), text_embeddings(2, tokens=3)
    if sampler == "unipc":
        scheduler = diffusers.UniPCMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, num_train_timesteps=1000,
            flow_shift=shift)
    else:
        scheduler = diffusers.FlowMatchEulerDiscreteScheduler(shift=shift)
    pipe = diffusers.WanPipeline(tokenizer=None, text_encoder=None, vae=None,
                                 transformer=reference, scheduler=scheduler)
    if sampler == "euler":  # diffusers' Euler builds its sigmas differently; give it ours
        from comfyui_videodit.samplers.schedules import flow_sigmas
        sigmas = flow_sigmas(steps, shift)[:-1]
        unshifted = (sigmas / (shift - (shift - 1) * sigmas)).tolist()
        original = scheduler.set_timesteps
        scheduler.set_timesteps = lambda n, device=None, **kw: original(
            sigmas=unshifted, device=device)
    noise = seeded_noise(shape, seed)
    expected = run_pipeline(pipe, noise, positive, negative, steps, cfg)

    fmt = get_format("wan21")
    cond = VideoDiTConditioning(positive=positive, negative=negative)
    latent = {"samples": torch.zeros(shape), "latent_format": "wan21"}
    settings = SamplingSettings(seed=seed, steps=steps, cfg=cfg, shift=shift, sampler=sampler,
                                integer_timesteps=(sampler == "unipc"))
    result = sample_video(ours, cond, latent, settings)
    got = fmt.normalize(result["samples"])
    err = relative(got, expected)
    assert err <= TOL, f"{sampler}: max error {err:.2e} x std"


def test_two_experts_switch_where_diffusers_does(tmp_path):
    high_ref, high = tiny_transformer(tmp_path, "high", seed=1)
    low_ref, low = tiny_transformer(tmp_path, "low", seed=2)
    steps, cfg, shift, seed, boundary = 8, 3.0, 5.0, 7, 0.875
    shape = (1, 16, 2, 8, 8)
    positive, negative = text_embeddings(3), text_embeddings(4)
    scheduler = diffusers.UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift)
    pipe = diffusers.WanPipeline(tokenizer=None, text_encoder=None, vae=None,
                                 transformer=high_ref, transformer_2=low_ref,
                                 scheduler=scheduler, boundary_ratio=boundary)
    noise = seeded_noise(shape, seed)
    expected = run_pipeline(pipe, noise, positive, negative, steps, cfg, guidance_scale_2=cfg)

    used = []
    high_call, low_call = high.managed.module.forward, low.managed.module.forward
    high.managed.module.forward = lambda *a, **k: (used.append("high"), high_call(*a, **k))[1]
    low.managed.module.forward = lambda *a, **k: (used.append("low"), low_call(*a, **k))[1]
    result = sample_video(high, VideoDiTConditioning(positive=positive, negative=negative),
                          {"samples": torch.zeros(shape)},
                          SamplingSettings(seed=seed, steps=steps, cfg=cfg, shift=shift,
                                           boundary=boundary), model_low_noise=low)
    err = relative(get_format("wan21").normalize(result["samples"]), expected)
    assert err <= TOL, f"max error {err:.2e} x std"
    timesteps = [int(t) for t in scheduler.timesteps]
    switch = next(i for i, t in enumerate(timesteps) if t < boundary * 1000)
    assert used[: 2 * switch] == ["high"] * (2 * switch)   # cond + uncond per step
    assert set(used[2 * switch:]) == {"low"}


def test_first_frame_conditioning_matches_ti2v_pipeline(tmp_path):
    """Wan 2.2 TI2V: the given first latent frame stays clean through per-token timesteps."""
    reference, ours = tiny_transformer(tmp_path, "ti2v", in_channels=48)
    steps, cfg, shift, seed = 5, 3.0, 5.0, 99
    shape = (1, 48, 3, 4, 4)
    positive, negative = text_embeddings(5), text_embeddings(6)
    fmt = get_format("wan22")
    given = torch.randn(1, 48, 1, 4, 4)  # a normalised first-frame latent
    noise = seeded_noise(shape, seed)

    # diffusers' TI2V recipe (WanImageToVideoPipeline with expand_timesteps): paste the given
    # frame before every call, its tokens at t=0, and paste it again at the end.
    scheduler = diffusers.UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift)
    scheduler.set_timesteps(steps)
    mask = torch.ones(shape)
    mask[:, :, :1] = 0
    condition = torch.zeros(shape)
    condition[:, :, :1] = given
    latents = noise.clone()
    with torch.no_grad():
        for t in scheduler.timesteps:
            model_input = (1 - mask) * condition + mask * latents
            timestep = (mask[0, 0][:, ::2, ::2] * t).flatten()[None]
            cond = reference(model_input, timestep, positive, return_dict=False)[0]
            uncond = reference(model_input, timestep, negative, return_dict=False)[0]
            flow = uncond + cfg * (cond - uncond)
            latents = scheduler.step(flow, t, latents, return_dict=False)[0]
    expected = (1 - mask) * condition + mask * latents

    cond = VideoDiTConditioning(positive=positive, negative=negative,
                                extras={FIRST_FRAMES_KEY: given})
    result = sample_video(ours, cond, {"samples": torch.zeros(shape), "latent_format": "wan22"},
                          SamplingSettings(seed=seed, steps=steps, cfg=cfg, shift=shift))
    got = fmt.normalize(result["samples"])
    assert torch.allclose(got[:, :, :1], given, atol=1e-5)
    err = relative(got, expected)
    assert err <= TOL, f"max error {err:.2e} x std"


def test_wan21_image_to_video_matches_wan_i2v_pipeline(tmp_path):
    """Wan 2.1 I2V: mask + image-latent channels and CLIP tokens, vs WanImageToVideoPipeline."""
    from PIL import Image

    from comfyui_videodit.model_loaders.wan_vae_keys import diffusers_config
    from comfyui_videodit.model_loaders.wan_vae_loader import load_wan_vae
    from comfyui_videodit.networks.clip_vision import CLIPVisionOutput
    from comfyui_videodit.networks.wan_vae import WanVAEConfig
    from comfyui_videodit.samplers.image_conditioning import image_to_video
    from safetensors.torch import save_file

    clip_dim = 48
    torch.manual_seed(5)
    transformer = diffusers.WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=128, in_channels=36,
        out_channels=16, text_dim=TEXT_DIM, freq_dim=32, ffn_dim=64, num_layers=2,
        cross_attn_norm=True, image_dim=clip_dim, added_kv_proj_dim=256).eval()
    for parameter in transformer.parameters():
        parameter.data.normal_(0, 0.05)
    transformer.save_pretrained(tmp_path / "i2v", safe_serialization=True)
    ours = load_wan_dit(tmp_path / "i2v" / "diffusion_pytorch_model.safetensors", "fp32")

    vae_ref = diffusers.AutoencoderKLWan(**diffusers_config(WanVAEConfig("2.1", dim=8, decoder_dim=8,
                                                                         z_dim=16))).eval()
    with torch.no_grad():  # Wan 2.1 latent statistics are diffusers' defaults
        for name, parameter in vae_ref.named_parameters():
            parameter.copy_(1 + 0.1 * torch.randn_like(parameter) if name.endswith("gamma")
                            else 0.05 * torch.randn_like(parameter))
    save_file({k: v.contiguous() for k, v in vae_ref.state_dict().items()},
              str(tmp_path / "vae.safetensors"))
    vae = load_wan_vae(tmp_path / "vae.safetensors", dtype="fp32")

    steps, cfg, shift, seed, size, frames = 4, 3.0, 3.0, 11, 64, 9
    g = torch.Generator().manual_seed(0)
    pixels = torch.randint(0, 256, (size, size, 3), generator=g, dtype=torch.uint8)
    image_embeds = torch.randn(1, 257, clip_dim, generator=g)
    positive, negative = text_embeddings(7), text_embeddings(8)
    noise = seeded_noise((1, 16, 3, 8, 8), seed)

    pipe = diffusers.WanImageToVideoPipeline(
        tokenizer=None, text_encoder=None, vae=vae_ref, transformer=transformer,
        scheduler=diffusers.UniPCMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift))
    # The pipeline refuses an image together with precomputed CLIP features; both sides must
    # use the same features (CLIP itself is compared with transformers elsewhere).
    pipe.check_inputs = lambda *args, **kwargs: None
    with torch.no_grad():
        expected = pipe(image=Image.fromarray(pixels.numpy()), prompt_embeds=positive,
                        negative_prompt_embeds=negative, image_embeds=image_embeds,
                        latents=noise.clone(), height=size, width=size, num_frames=frames,
                        num_inference_steps=steps, guidance_scale=cfg, output_type="latent").frames

    start = (pixels.float() / 255)[None]
    cond, latent = image_to_video(vae, VideoDiTConditioning(positive=positive, negative=negative),
                                  start, size, size, frames,
                                  clip_vision_output=CLIPVisionOutput(image_embeds))
    result = sample_video(ours, cond, latent,
                          SamplingSettings(seed=seed, steps=steps, cfg=cfg, shift=shift))
    err = relative(get_format("wan21").normalize(result["samples"]), expected)
    assert err <= TOL, f"max error {err:.2e} x std"
