"""VideoDiT VACE Conditioning: the VACE context against diffusers' WanVACEPipeline, its pixel
rules (fit, mask, references) and its errors.

The context is compared with what ``WanVACEPipeline`` builds from the same inputs through its
own ``preprocess_conditions``, ``prepare_video_latents`` and ``prepare_masks``, with the same
tiny random VAE weights on both sides. Tolerance: max |ours - diffusers| <= 1e-4 x std of the
diffusers context (fp32).
"""
from __future__ import annotations

import pytest
import torch

from comfyui_videodit.core.conditioning import VACE_KEY, VaceInputs, VideoDiTConditioning
from comfyui_videodit.errors import InputError
from comfyui_videodit.nodes.vace import VideoDiTVACEConditioning
from comfyui_videodit.samplers.vace_conditioning import (control_pixels, fold_mask,
                                                         reference_canvas, vace_conditioning)

diffusers = pytest.importorskip("diffusers")
from PIL import Image  # noqa: E402  (after the skip: PIL comes with diffusers' extras)

from test_sampling_parity import TEXT_DIM, relative, text_embeddings, tiny_reference_vae  # noqa: E402

TOL = 1e-4
WIDTH, HEIGHT, LENGTH = 48, 32, 9


def tiny_vace_transformer(seed: int = 0):
    """A diffusers ``WanVACETransformer3DModel`` with random, well-scaled weights."""
    torch.manual_seed(seed)
    model = diffusers.WanVACETransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=128, in_channels=16,
        out_channels=16, text_dim=TEXT_DIM, freq_dim=32, ffn_dim=64, num_layers=3,
        cross_attn_norm=True, vace_layers=[0, 2], vace_in_channels=96).eval()
    for parameter in model.parameters():
        parameter.data.normal_(0, 0.05)
    return model


@pytest.fixture(scope="module")
def vaes(tmp_path_factory):
    """(diffusers AutoencoderKLWan, our LoadedVAE) with the same weights."""
    return tiny_reference_vae(tmp_path_factory.mktemp("vace_vae"), "2.1", seed=3)


@pytest.fixture(scope="module")
def pipe(vaes):
    return diffusers.WanVACEPipeline(
        tokenizer=None, text_encoder=None, vae=vaes[0], transformer=tiny_vace_transformer(),
        scheduler=diffusers.UniPCMultistepScheduler(prediction_type="flow_prediction",
                                                    use_flow_sigmas=True, flow_shift=3.0))


def random_pixels(seed: int, *shape: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, shape, generator=g, dtype=torch.uint8)


def moving_box_masks(frames: int = LENGTH) -> torch.Tensor:
    """Binary masks [frames, H, W]: a box that moves right, not on the 8-pixel grid."""
    masks = torch.zeros(frames, HEIGHT, WIDTH)
    for t in range(frames):
        masks[t, 5:21, 3 + 3 * t:17 + 3 * t] = 1
    return masks


def as_pil(pixels: torch.Tensor) -> Image.Image:
    return Image.fromarray(pixels.numpy())


def diffusers_context(pipe, video=None, masks=None, references=None, length=LENGTH):
    """The context WanVACEPipeline.__call__ builds from PIL inputs (its steps 5, unchanged)."""
    video_pil = None if video is None else [as_pil(frame) for frame in video]
    mask_pil = None if masks is None else [
        as_pil((mask[..., None].expand(-1, -1, 3) * 255).to(torch.uint8)) for mask in masks]
    refs_pil = None if references is None else [as_pil(image) for image in references]
    with torch.no_grad():
        video_t, mask_t, refs_t = pipe.preprocess_conditions(
            video_pil, mask_pil, refs_pil, 1, HEIGHT, WIDTH, length, torch.float32, "cpu")
        latents = pipe.prepare_video_latents(video_t, mask_t, refs_t, None, "cpu")
        folded = pipe.prepare_masks(mask_t, refs_t, None)
    return torch.cat([latents, folded], dim=1)


def our_context(vae, video=None, masks=None, references=None, **kwargs):
    cond = VideoDiTConditioning(positive=text_embeddings(1), negative=text_embeddings(2))
    out, latent = vace_conditioning(
        vae, cond, WIDTH, HEIGHT, LENGTH,
        control_video=None if video is None else video.float() / 255,
        control_mask=masks,
        reference_images=None if references is None else torch.stack(
            [image.float() / 255 for image in references]), **kwargs)
    return out.extras[VACE_KEY], latent


def test_inpaint_context_matches_wan_vace_pipeline(pipe, vaes):
    """Control clip + moving mask: kept and regenerated parts encoded apart, mask folded."""
    video, masks = random_pixels(1, LENGTH, HEIGHT, WIDTH, 3), moving_box_masks()
    expected = diffusers_context(pipe, video, masks)
    vace, latent = our_context(vaes[1], video, masks)
    assert vace.context.shape == expected.shape == (1, 96, 3, HEIGHT // 8, WIDTH // 8)
    assert relative(vace.context, expected) <= TOL
    assert torch.equal(vace.context[:, 32:], expected[:, 32:])   # the mask channels, exactly
    assert vace.reference_frames == 0
    assert latent["samples"].shape == (1, 16, 3, HEIGHT // 8, WIDTH // 8)
    assert not latent["samples"].any() and latent["latent_format"] == "wan21"


def test_control_video_context_matches_wan_vace_pipeline(pipe, vaes):
    """A control video without a mask: everything is regenerated, following the video."""
    video = random_pixels(2, LENGTH, HEIGHT, WIDTH, 3)
    expected = diffusers_context(pipe, video)
    vace, _ = our_context(vaes[1], video)
    assert relative(vace.context, expected) <= TOL
    assert torch.equal(vace.context[:, 32:], torch.ones_like(vace.context[:, 32:]))


@pytest.mark.parametrize("sizes", [[(HEIGHT, WIDTH)], [(24, 16)], [(16, 40), (16, 40)]],
                         ids=["frame-sized", "letterboxed", "two"])
def test_reference_images_context_matches_wan_vace_pipeline(pipe, vaes, sizes):
    """Reference-to-video: references letterboxed on white, each one latent frame in front of
    the (grey) video with zero reactive and mask channels. Several references come as one IMAGE
    batch (so of one size); Wan's code puts them in the order given, diffusers prepends each in
    turn, i.e. reversed: it gets them reversed."""
    references = [random_pixels(10 + i, h, w, 3) for i, (h, w) in enumerate(sizes)]
    expected = diffusers_context(pipe, references=references[::-1])
    vace, latent = our_context(vaes[1], references=references)
    count = len(references)
    assert vace.reference_frames == count
    assert vace.context.shape == expected.shape == (1, 96, 3 + count, HEIGHT // 8, WIDTH // 8)
    assert relative(vace.context, expected) <= TOL
    assert not vace.context[:, 16:32, :count].any() and not vace.context[:, 32:, :count].any()
    assert latent["samples"].shape[2] == 3 + count


def test_reference_with_inpaint_matches_wan_vace_pipeline(pipe, vaes):
    video, masks = random_pixels(4, LENGTH, HEIGHT, WIDTH, 3), moving_box_masks()
    reference = random_pixels(5, 16, 24, 3)
    expected = diffusers_context(pipe, video, masks, [reference])
    vace, _ = our_context(vaes[1], video, masks, [reference])
    assert relative(vace.context, expected) <= TOL


def test_mask_folds_each_pixel_of_a_block_into_its_own_channel():
    mask = torch.zeros(LENGTH, HEIGHT, WIDTH)
    mask[4, 13, 22] = 1          # frame 4, block (1, 2), pixel (5, 6) inside the block
    mask[7, 0, 47] = 1           # frame 7, block (0, 5), pixel (0, 7)
    mask[2, 9, 9] = 1            # frame 2: no latent frame samples it
    folded = fold_mask(mask, 8, 4)
    assert folded.shape == (64, 3, HEIGHT // 8, WIDTH // 8)
    lit = {tuple(i) for i in folded.nonzero().tolist()}
    # latent frame i samples pixel frame floor((i + 0.5) * 9 / 3) = 1, 4, 7
    assert lit == {(5 * 8 + 6, 1, 1, 2), (0 * 8 + 7, 2, 0, 5)}


def test_reference_is_scaled_to_fit_and_centred_on_white():
    image = torch.zeros(16, 16, 3)                          # black square
    canvas = reference_canvas(image, WIDTH, HEIGHT)          # 32 high: scale 2
    assert canvas.shape == (HEIGHT, WIDTH, 3)
    assert torch.equal(canvas[:, 8:40], torch.zeros(HEIGHT, 32, 3))
    assert torch.equal(canvas[:, :8], torch.ones(HEIGHT, 8, 3))
    assert torch.equal(canvas[:, 40:], torch.ones(HEIGHT, 8, 3))
    big = torch.rand(320, 320, 3)                            # shrinking is antialiased
    assert reference_canvas(big, WIDTH, HEIGHT)[:, 8:40].std() < big.std() / 3


def test_pad_fits_the_clip_inside_and_regenerates_only_the_border():
    clip = torch.rand(LENGTH, 32, 32, 3)
    video, mask = control_pixels(clip, None, 64, 32, LENGTH, fit="pad")
    assert torch.equal(video[:, :, 16:48], clip)             # same height: no resampling
    assert torch.all(video[:, :, :16] == 0.5) and torch.all(video[:, :, 48:] == 0.5)
    assert not mask[:, :, 16:48].any() and mask[:, :, :16].all() and mask[:, :, 48:].all()
    # with a mask, the clip keeps the mask's own regions and the border is still regenerated
    given = torch.zeros(1, 32, 32)
    given[:, :, :8] = 1
    _, mask = control_pixels(clip, given, 64, 32, LENGTH, fit="pad")
    assert mask[:, :, 16:24].all() and not mask[:, :, 24:48].any() and mask[:, :, 48:].all()


def test_crop_and_stretch_fill_the_frame_and_masks_stay_binary():
    clip = torch.rand(LENGTH, 40, 40, 3)
    soft = torch.full((1, 40, 40), 0.4)
    soft[:, :, 20:] = 0.9
    for fit in ("crop", "stretch"):
        video, mask = control_pixels(clip, soft, WIDTH, HEIGHT, LENGTH, fit=fit)
        assert video.shape == (LENGTH, HEIGHT, WIDTH, 3) and mask.shape == (LENGTH, HEIGHT, WIDTH)
        assert set(mask.unique().tolist()) == {0.0, 1.0}
        assert not mask[:, :, :20].any() and mask[:, :, 28:].all()
    video, mask = control_pixels(None, None, WIDTH, HEIGHT, LENGTH)
    assert torch.all(video == 0.5) and mask.all()            # nothing given: grey, regenerate


def test_a_mask_video_loaded_as_image_is_read_as_its_grey_level(vaes):
    masks = moving_box_masks()
    as_image = masks[..., None].expand(-1, -1, -1, 3) * 0.9 + 0.05   # like a compressed video
    video = torch.rand(LENGTH, HEIGHT, WIDTH, 3)
    cond = VideoDiTConditioning(positive=text_embeddings(1))
    a = vace_conditioning(vaes[1], cond, WIDTH, HEIGHT, LENGTH, control_video=video,
                          control_mask=masks)[0].extras[VACE_KEY].context
    b = vace_conditioning(vaes[1], cond, WIDTH, HEIGHT, LENGTH, control_video=video,
                          control_mask=as_image)[0].extras[VACE_KEY].context
    assert torch.equal(a, b)


def test_node_leaves_its_input_conditioning_alone(vaes):
    cond = VideoDiTConditioning(positive=text_embeddings(1), negative=text_embeddings(2),
                                extras={"other": 1})
    out, latent = VideoDiTVACEConditioning().prepare(
        cond, vaes[1], WIDTH, HEIGHT, LENGTH, 0.7, "crop",
        reference_images=torch.rand(1, 20, 20, 3))
    assert cond.extras == {"other": 1}
    assert out.extras["other"] == 1 and isinstance(out.extras[VACE_KEY], VaceInputs)
    assert out.extras[VACE_KEY].strength == 0.7 and out.positive is cond.positive
    assert latent["samples"].shape == (1, 16, 4, HEIGHT // 8, WIDTH // 8)


def _error(vae, **kwargs) -> InputError:
    cond = kwargs.pop("conditioning", VideoDiTConditioning(positive=text_embeddings(1)))
    args = dict(width=WIDTH, height=HEIGHT, length=LENGTH, strength=1.0, fit="crop")
    args.update({k: kwargs.pop(k) for k in list(kwargs) if k in args})
    with pytest.raises(InputError) as caught:
        VideoDiTVACEConditioning().prepare(cond, vae, **args, **kwargs)
    assert str(caught.value).startswith("VideoDiT VACE Conditioning · ")
    return caught.value


def test_bad_inputs_are_refused_before_encoding(vaes, monkeypatch):
    vae = vaes[1]
    monkeypatch.setattr(vae, "encode", lambda *a, **k: pytest.fail("encoded a bad input"))
    clip = torch.rand(LENGTH, HEIGHT, WIDTH, 3)

    err = _error(vae, control_video=torch.rand(20, HEIGHT, WIDTH, 3))
    assert err.input == "control_video" and "20 frames" in err.problem
    assert "length to 17" in err.fix and "frame_limit to 17" in err.fix and "to 9" in err.fix
    err = _error(vae, control_video=torch.rand(5, HEIGHT, WIDTH, 3))
    assert err.input == "control_video" and err.fix == "set length to 5"
    err = _error(vae, control_video=clip, control_mask=torch.ones(3, HEIGHT, WIDTH))
    assert err.input == "control_mask" and "3 frames" in err.problem
    err = _error(vae, control_video=clip, control_mask=torch.ones(1, 16, 16))
    assert err.input == "control_mask" and "16x16" in err.problem and "48x32" in err.problem
    err = _error(vae, reference_images=torch.rand(4, 16, 16, 3))
    assert err.input == "reference_images" and "at most 3" in err.problem
    bad = clip.clone()
    bad[2, 3, 4, 1] = float("nan")
    assert _error(vae, control_video=bad).input == "control_video"
    assert _error(vae, control_mask=torch.full((1, 8, 8), float("inf"))).input == "control_mask"
    err = _error(vae, control_video=clip, fit="pad")         # nothing to pad, no mask
    assert err.input == "fit" and "nothing generated" in err.problem
    assert _error(vae, length=10).input == "length"
    assert _error(vae, width=40).input == "width"
    assert _error(vae, strength=float("nan")).input == "strength"
    err = _error(vae, control_video=torch.rand(LENGTH, HEIGHT, WIDTH))
    assert err.input == "control_video" and "expected IMAGE" in err.problem
    chained = VideoDiTConditioning(positive=text_embeddings(1),
                                   extras={VACE_KEY: VaceInputs(torch.zeros(1))})
    assert _error(vae, conditioning=chained).input == "conditioning"
    assert _error(vae, conditioning="text").input == "conditioning"


def test_a_wan22_vae_is_refused(tmp_path):
    from tiny_models import write_vae

    from comfyui_videodit.model_loaders.wan_vae_loader import load_wan_vae

    vae22 = load_wan_vae(write_vae(tmp_path, "vae22.safetensors", "2.2"), dtype="fp32")
    err = _error(vae22, width=64, height=64)
    assert err.input == "vae" and "wan_2.1_vae" in err.fix


def test_queue_time_checks_cover_size_length_and_strength():
    check = VideoDiTVACEConditioning.VALIDATE_INPUTS
    assert check(width=832, height=480, length=81, strength=1.0) is True
    assert "4k+1" in check(width=832, height=480, length=80, strength=1.0)
    assert "strength" in check(width=832, height=480, length=81, strength=11.0)
    assert "multiple of 16" in check(width=830, height=480, length=81, strength=1.0)


# -- end to end: our loader and sampler against WanVACEPipeline --------------------------------
@pytest.fixture(scope="module")
def vace_models(pipe, tmp_path_factory):
    """(diffusers pipeline, our model loaded from the pipeline transformer's saved file)."""
    from comfyui_videodit.families.registry import load_model

    folder = tmp_path_factory.mktemp("vace_dit")
    pipe.transformer.save_pretrained(folder, safe_serialization=True)
    return pipe, load_model(folder / "diffusion_pytorch_model.safetensors", "fp32")


@pytest.mark.slow
@pytest.mark.parametrize("case", ["inpaint", "control", "reference"])
def test_sampling_with_vace_matches_wan_vace_pipeline(vace_models, vaes, case):
    """Same transformer, VAE, text embeddings and noise: the final latents agree, with the
    reference frame dropped from ours as diffusers drops it before decoding."""
    from comfyui_videodit.core.latent_formats import get_format
    from comfyui_videodit.samplers.denoise import SamplingSettings, sample_video, seeded_noise

    pipe, ours = vace_models
    steps, cfg, shift, seed, strength = 4, 3.0, 3.0, 17, 0.8
    video = masks = references = None
    if case in ("inpaint", "control"):
        video = random_pixels(20, LENGTH, HEIGHT, WIDTH, 3)
    if case == "inpaint":
        masks = moving_box_masks()
    if case == "reference":
        references = [random_pixels(21, 24, 16, 3)]
    refs = 0 if references is None else len(references)
    positive, negative = text_embeddings(3), text_embeddings(4, tokens=3)
    noise = seeded_noise((1, 16, 3 + refs, HEIGHT // 8, WIDTH // 8), seed)
    with torch.no_grad():
        expected = pipe(
            video=None if video is None else [as_pil(frame) for frame in video],
            mask=None if masks is None else [
                as_pil((mask[..., None].expand(-1, -1, 3) * 255).to(torch.uint8))
                for mask in masks],
            reference_images=None if references is None else as_pil(references[0]),
            conditioning_scale=strength, prompt_embeds=positive,
            negative_prompt_embeds=negative, latents=noise.clone(), height=HEIGHT, width=WIDTH,
            num_frames=LENGTH, num_inference_steps=steps, guidance_scale=cfg,
            output_type="latent").frames[:, :, refs:]

    cond, latent = VideoDiTVACEConditioning().prepare(
        VideoDiTConditioning(positive=positive, negative=negative), vaes[1], WIDTH, HEIGHT,
        LENGTH, strength, "crop",
        control_video=None if video is None else video.float() / 255, control_mask=masks,
        reference_images=None if references is None else references[0][None].float() / 255)
    assert latent["samples"].shape == noise.shape
    result = sample_video(ours, cond, latent,
                          SamplingSettings(seed=seed, steps=steps, cfg=cfg, shift=shift))
    got = get_format("wan21").normalize(result["samples"])
    assert got.shape == expected.shape
    err = relative(got, expected)
    assert err <= TOL, f"{case}: max error {err:.2e} x std"
