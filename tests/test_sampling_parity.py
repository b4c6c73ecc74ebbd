"""Our sampler against diffusers' Wan pipelines on the same tiny random weights.

Same transformer weights (a diffusers ``WanTransformer3DModel`` saved in diffusers layout and
loaded through our loader), same text embeddings, same initial noise, and for image-to-video
the same VAE and CLIP vision weights encoding the same image(s): the final latents must agree.
Covered: ``WanPipeline`` with UniPC and flow-match Euler, two experts (``boundary_ratio``),
Wan 2.2 TI2V with ``expand_timesteps`` (text-to-video through ``WanPipeline``, image-to-video
through ``WanImageToVideoPipeline``), and Wan 2.1 I2V / FLF2V through
``WanImageToVideoPipeline`` with its own CLIP image encoder.
Tolerance: max |ours - diffusers| <= 1e-4 x std of the diffusers latent (fp32); measured
2.8e-6 to 4.8e-6.
"""
from __future__ import annotations

import pytest
import torch

from comfyui_videodit.core.conditioning import VideoDiTConditioning
from comfyui_videodit.families.registry import load_model
from comfyui_videodit.families.wan import WanFamily
from comfyui_videodit.samplers.denoise import SamplingSettings, sample_video, seeded_noise
from comfyui_videodit.core.latent_formats import get_format

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
    ours = load_model(folder / "diffusion_pytorch_model.safetensors", "fp32")
    return model, ours


def text_embeddings(seed: int, tokens: int = 7) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    embeds = torch.zeros(1, WanFamily.text_spec.length, TEXT_DIM)
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
    high_call, low_call = high.network.forward, low.network.forward
    high.network.forward = lambda *a, **k: (used.append("high"), high_call(*a, **k))[1]
    low.network.forward = lambda *a, **k: (used.append("low"), low_call(*a, **k))[1]
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


def clip_processor():
    """transformers' CLIP image processor (PIL backend, the one installed without torchvision)."""
    import transformers

    return getattr(transformers, "CLIPImageProcessorPil", transformers.CLIPImageProcessor)()


def tiny_reference_vae(tmp_path, version: str, seed: int):
    """A diffusers ``AutoencoderKLWan`` with random weights, and ours loaded from its file."""
    from safetensors.torch import save_file

    from comfyui_videodit.model_loaders.wan_vae_keys import diffusers_config
    from comfyui_videodit.model_loaders.wan_vae_loader import load_wan_vae
    from comfyui_videodit.networks.wan_vae import WanVAEConfig

    fmt = get_format("wan21" if version == "2.1" else "wan22")
    config = diffusers_config(WanVAEConfig(version, dim=8, decoder_dim=8, z_dim=fmt.channels))
    # diffusers normalises with the statistics in its config; give it the real ones
    config.update(latents_mean=list(fmt.mean), latents_std=list(fmt.std))
    torch.manual_seed(seed)
    vae_ref = diffusers.AutoencoderKLWan(**config).eval()
    with torch.no_grad():
        for name, parameter in vae_ref.named_parameters():
            parameter.copy_(1 + 0.1 * torch.randn_like(parameter) if name.endswith("gamma")
                            else 0.05 * torch.randn_like(parameter))
    path = tmp_path / f"vae{version}.safetensors"
    save_file({k: v.contiguous() for k, v in vae_ref.state_dict().items()}, str(path))
    return vae_ref, load_wan_vae(path, dtype="fp32")


def test_ti2v_text_to_video_matches_wan_pipeline_with_expanded_timesteps(tmp_path):
    """Wan 2.2 TI2V 5B without an image: diffusers hands it per-token timesteps (all equal)."""
    reference, ours = tiny_transformer(tmp_path, "ti2v", in_channels=48, seed=3)
    steps, cfg, shift, seed = 4, 3.0, 5.0, 21
    shape = (1, 48, 3, 4, 4)
    positive, negative = text_embeddings(9), text_embeddings(10)
    pipe = diffusers.WanPipeline(
        tokenizer=None, text_encoder=None, vae=None, transformer=reference,
        scheduler=diffusers.UniPCMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift),
        expand_timesteps=True)
    noise = seeded_noise(shape, seed)
    with torch.no_grad():  # no VAE in this pipeline: its default factors give a 32 px grid
        expected = pipe(prompt_embeds=positive, negative_prompt_embeds=negative,
                        latents=noise.clone(), num_inference_steps=steps, guidance_scale=cfg,
                        output_type="latent", height=32, width=32, num_frames=9).frames
    result = sample_video(ours, VideoDiTConditioning(positive=positive, negative=negative),
                          {"samples": torch.zeros(shape), "latent_format": "wan22"},
                          SamplingSettings(seed=seed, steps=steps, cfg=cfg, shift=shift))
    err = relative(get_format("wan22").normalize(result["samples"]), expected)
    assert err <= TOL, f"max error {err:.2e} x std"


def test_ti2v_image_to_video_matches_wan_i2v_pipeline_with_expanded_timesteps(tmp_path):
    """Wan 2.2 TI2V 5B image-to-video, end to end against ``WanImageToVideoPipeline`` with
    ``expand_timesteps=True``: the same 48-channel VAE weights encode the start image on both
    sides; its latent frame stays clean (per-token timestep 0) and is pasted back at the end."""
    from PIL import Image

    from comfyui_videodit.nodes.conditioning import VideoDiTImageToVideo

    reference, ours = tiny_transformer(tmp_path, "ti2v", in_channels=48, seed=4)
    vae_ref, vae = tiny_reference_vae(tmp_path, "2.2", seed=6)
    steps, cfg, shift, seed, size, frames = 5, 3.0, 5.0, 99, 64, 9
    g = torch.Generator().manual_seed(1)
    pixels = torch.randint(0, 256, (size, size, 3), generator=g, dtype=torch.uint8)
    positive, negative = text_embeddings(5), text_embeddings(6)
    noise = seeded_noise((1, 48, 3, 4, 4), seed)

    pipe = diffusers.WanImageToVideoPipeline(
        tokenizer=None, text_encoder=None, vae=vae_ref, transformer=reference,
        scheduler=diffusers.UniPCMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift),
        expand_timesteps=True)
    with torch.no_grad():
        expected = pipe(image=Image.fromarray(pixels.numpy()), prompt_embeds=positive,
                        negative_prompt_embeds=negative, latents=noise.clone(), height=size,
                        width=size, num_frames=frames, num_inference_steps=steps,
                        guidance_scale=cfg, output_type="latent").frames

    cond, latent = VideoDiTImageToVideo().prepare(
        VideoDiTConditioning(positive=positive, negative=negative), vae,
        (pixels.float() / 255)[None], size, size, frames)
    result = sample_video(ours, cond, latent,
                          SamplingSettings(seed=seed, steps=steps, cfg=cfg, shift=shift))
    got = get_format("wan22").normalize(result["samples"])
    err = relative(got, expected)
    assert err <= TOL, f"max error {err:.2e} x std"
    first = relative(got[:, :, :1], expected[:, :, :1])
    assert first <= TOL, f"given frame differs by {first:.2e} x std"


@pytest.mark.parametrize("variant", ["i2v", "flf2v"])
def test_wan21_image_to_video_matches_wan_i2v_pipeline(tmp_path, variant):
    """Wan 2.1 I2V (start image) and FLF2V (start + end image) end to end against
    ``WanImageToVideoPipeline``: the same CLIP vision weights encode the image(s) on both sides
    (diffusers through transformers' CLIP image processor, ours through VideoDiT CLIP Vision
    Encode with crop=center), the same VAE weights make the mask + image-latent channels.
    At 224 x 224 neither side resizes anything, so the inputs are bit-identical."""
    import transformers
    from PIL import Image
    from safetensors.torch import save_file

    from comfyui_videodit.model_loaders.clip_vision_loader import load_clip_vision
    from comfyui_videodit.nodes.clip_vision import VideoDiTCLIPVisionEncode
    from comfyui_videodit.nodes.conditioning import VideoDiTImageToVideo

    clip_dim = 48
    torch.manual_seed(5)
    transformer = diffusers.WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=128, in_channels=36,
        out_channels=16, text_dim=TEXT_DIM, freq_dim=32, ffn_dim=64, num_layers=2,
        cross_attn_norm=True, image_dim=clip_dim, added_kv_proj_dim=256,
        pos_embed_seq_len=2 * 257 if variant == "flf2v" else None).eval()
    for parameter in transformer.parameters():
        parameter.data.normal_(0, 0.05)
    transformer.save_pretrained(tmp_path / variant, safe_serialization=True)
    ours = load_model(tmp_path / variant / "diffusion_pytorch_model.safetensors", "fp32")
    assert ours.config.model_type == variant

    vae_ref, vae = tiny_reference_vae(tmp_path, "2.1", seed=7)

    torch.manual_seed(4)
    clip_ref = transformers.CLIPVisionModel(transformers.CLIPVisionConfig(
        hidden_size=clip_dim, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4,
        image_size=224, patch_size=14, hidden_act="gelu")).eval()
    save_file({k: v.contiguous() for k, v in clip_ref.state_dict().items()
               if not k.endswith("position_ids")}, str(tmp_path / "clip.safetensors"))
    # the head count is not in the weights' shapes: a config next to the file gives it
    clip_ref.config.to_json_file(tmp_path / "clip.json")
    clip = load_clip_vision(tmp_path / "clip.safetensors", dtype="fp32")

    steps, cfg, shift, seed, size, frames = 4, 3.0, 3.0, 11, 224, 5
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (2, size, size, 3), generator=g, dtype=torch.uint8)
    positive, negative = text_embeddings(7), text_embeddings(8)
    noise = seeded_noise((1, 16, 2, size // 8, size // 8), seed)
    last = variant == "flf2v"

    pipe = diffusers.WanImageToVideoPipeline(
        tokenizer=None, text_encoder=None, vae=vae_ref, transformer=transformer,
        image_encoder=clip_ref, image_processor=clip_processor(),
        scheduler=diffusers.UniPCMultistepScheduler(
            prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=shift))
    clip_tokens = []
    encode_image = pipe.encode_image
    pipe.encode_image = lambda *a, **k: clip_tokens.append(encode_image(*a, **k)) or clip_tokens[0]
    with torch.no_grad():
        expected = pipe(image=Image.fromarray(images[0].numpy()),
                        last_image=Image.fromarray(images[1].numpy()) if last else None,
                        prompt_embeds=positive, negative_prompt_embeds=negative,
                        latents=noise.clone(), height=size, width=size, num_frames=frames,
                        num_inference_steps=steps, guidance_scale=cfg, output_type="latent").frames

    start, end = (images[:1].float() / 255), (images[1:].float() / 255)
    clip_out = VideoDiTCLIPVisionEncode().encode(clip, start, "center",
                                                 end_image=end if last else None)[0]
    # the image tokens enter through small cross-attention weights, so check them on their own
    assert relative(clip_out.penultimate, clip_tokens[0]) <= TOL
    cond, latent = VideoDiTImageToVideo().prepare(
        VideoDiTConditioning(positive=positive, negative=negative), vae, start, size, size,
        frames, end_image=end if last else None, clip_vision_output=clip_out)
    result = sample_video(ours, cond, latent,
                          SamplingSettings(seed=seed, steps=steps, cfg=cfg, shift=shift))
    err = relative(get_format("wan21").normalize(result["samples"]), expected)
    assert err <= TOL, f"{variant}: max error {err:.2e} x std"
