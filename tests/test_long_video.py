"""Long videos: context windows inside one sampling run, continuation window after window, and
naive chaining; the window layout, colour matching, seams and the errors.

The window arithmetic and the seam handling are checked on their own with known numbers; the
whole paths run on the tiny random models (tests/tiny_models.py), where the conditioning the
model receives is recorded by an inner patch; one slow test renders with the demo model.
"""
from __future__ import annotations

import pytest
import torch

from comfyui_videodit.core.conditioning import VACE_KEY, ModelInputs, VaceInputs
from comfyui_videodit.core.context_windows import WindowLayout, windowed_velocity
from comfyui_videodit.core.run_info import RunInfo
from comfyui_videodit.errors import InputError
from comfyui_videodit.families.model import ModelPatch
from comfyui_videodit.families.step_cache import StepCache
from comfyui_videodit.samplers import long_video as lv
from comfyui_videodit.samplers.schedules import flow_sigmas


# -- window layout -------------------------------------------------------------------------------

@pytest.mark.parametrize("window, overlap, frames", [
    (21, 5, 21), (21, 5, 37), (21, 5, 40), (5, 2, 13), (5, 4, 9), (3, 1, 11), (4, 3, 30),
    (21, 5, 7)])
def test_window_weights_sum_to_one_and_every_frame_is_covered(window, overlap, frames):
    layout = WindowLayout(window, overlap)
    spans = layout.spans(frames)
    weights = layout.weights(frames)
    assert spans[0][0] == 0 and spans[-1][1] == frames
    assert all(stop - start == min(window, frames) for start, stop in spans)
    for (_, stop), (start, _) in zip(spans, spans[1:]):
        assert stop - start >= overlap           # neighbours share at least the overlap
    torch.testing.assert_close(weights.sum(dim=0), torch.ones(frames))
    assert (weights > 0).any(dim=0).all()        # every frame gets some window's velocity
    for index, (start, stop) in enumerate(spans):
        assert (weights[index, :start] == 0).all() and (weights[index, stop:] == 0).all()
        assert (weights[index, start:stop] > 0).all()


def test_weights_fall_off_toward_shared_window_edges_but_not_at_the_clip_ends():
    layout = WindowLayout(9, 4)                 # 3 windows over 19 frames: 0-9, 5-14, 10-19
    weights = layout.weights(19)
    assert layout.spans(19) == [(0, 9), (5, 14), (10, 19)]
    middle = weights[1, 5:14]
    assert middle[0] < middle[1] < middle[4] and middle[-1] < middle[-2] < middle[4]
    assert weights[0, 0] == 1 and weights[2, 18] == 1   # clip ends keep full weight
    # across an overlap the share moves linearly from one window to the next
    torch.testing.assert_close(weights[1, 5:9], torch.tensor([0.2, 0.4, 0.6, 0.8]))


def test_windowed_velocity_fuses_windows_and_cuts_every_per_frame_input():
    """A stand-in model returns its window's index everywhere; the fused velocity must be the
    weighted mean of those, and each window must see its own frames of x, the extra channels
    and the VACE context, and the clean first frames only where it reaches back to them."""
    frames, layout = 7, WindowLayout(3, 1)      # windows 0-3, 2-5, 4-7
    x = torch.arange(frames, dtype=torch.float32).view(1, 1, frames, 1, 1).expand(2, 3, -1, 2, 2)
    concat = x[:, :2] * 10
    seen = []

    def velocity(xw, sigma, inputs):
        index = len(seen)
        seen.append((xw[0, 0, :, 0, 0].tolist(), inputs.concat_latent[0, 0, :, 0, 0].tolist(),
                     inputs.vace_context[0, 0, :, 0, 0].tolist(), inputs.first_frames,
                     inputs.branch))
        return torch.full_like(xw, float(index))

    fused = windowed_velocity(velocity, layout)(x, 0.5, ModelInputs(
        text=torch.zeros(2, 4, 8), concat_latent=concat, first_frames=3, branch="both",
        vace_context=-concat))
    assert seen == [([0, 1, 2], [0, 10, 20], [0, -10, -20], 3, "both window 0"),
                    ([2, 3, 4], [20, 30, 40], [-20, -30, -40], 1, "both window 1"),
                    ([4, 5, 6], [40, 50, 60], [-40, -50, -60], 0, "both window 2")]
    expected = (layout.weights(frames) * torch.arange(3.0).view(3, 1)).sum(dim=0)
    torch.testing.assert_close(fused[0, 0, :, 0, 0], expected)
    torch.testing.assert_close(fused[1, 2, :, 1, 1], expected)


def test_context_windows_refuse_a_vace_context_with_reference_frames():
    x = torch.zeros(1, 16, 6, 2, 2)
    inputs = ModelInputs(text=torch.zeros(1, 4, 8), vace_context=torch.zeros(1, 96, 7, 2, 2))
    wrapped = windowed_velocity(lambda xw, s, i: torch.zeros_like(xw), WindowLayout(3, 1))
    with pytest.raises(InputError, match="reference images") as err:
        wrapped(x, 0.5, inputs)
    assert err.value.input == "conditioning"


def test_step_cache_inside_context_windows_keeps_one_cache_per_window():
    """The windows of one step have the same shape; a cache keyed by guidance pass alone would
    hand window 0's velocity to window 1."""
    sigmas = tuple(float(s) for s in flow_sigmas(10, 3.0))
    run = RunInfo(sigmas=sigmas)

    def velocity(xw, sigma, inputs):   # each window's own constant, as its x says
        return torch.full_like(xw, float(xw[0, 0, 0, 0, 0]))

    cached = StepCache(100.0, 0.0, 1.0, max_skips=5).wrap_velocity(velocity, None, run)
    fused = windowed_velocity(cached, WindowLayout(2, 1))
    x = torch.tensor([0.0, 10.0, 20.0]).view(1, 1, 3, 1, 1).expand(1, 2, 3, 2, 2).contiguous()
    for sigma in sigmas[:-1]:
        v = fused(x, sigma, ModelInputs(text=torch.zeros(1, 4, 8)))
        # frame 0 only in window 0 (x starts at 0), frame 2 only in window 1 (x starts at 10)
        assert v[0, 0, 0, 0, 0] == 0.0 and v[0, 0, 2, 0, 0] == 10.0


# -- plan: lengths, starts, errors ----------------------------------------------------------------

@pytest.mark.parametrize("method, length, window, overlap, source, renders, starts", [
    ("continue", 65, 17, 5, 0, (17,) * 5, (0, 12, 24, 36, 48)),
    ("continue", 81, 81, 17, 0, (81,), (0,)),
    ("continue", 209, 81, 17, 0, (81, 81, 81), (0, 64, 128)),
    ("naive", 65, 17, 5, 0, (17,) * 4, (0, 17, 33, 49)),
    ("context windows", 65, 17, 5, 0, (65,), (0, 9, 21, 33, 45)),
    ("context windows", 69, 17, 5, 0, (69,), (0, 9, 21, 33, 45, 49)),
    ("continue", 45, 17, 5, 21, (17, 17), (0, 16, 28)),
    ("naive", 53, 17, 5, 21, (17, 17), (0, 21, 37)),
    ("context windows", 45, 17, 5, 21, (29,), (0, 16, 25)),
])
def test_plan_lays_out_windows_that_make_exactly_length_frames(method, length, window, overlap,
                                                                source, renders, starts):
    plan = lv.plan_long_video(length, window, overlap, method, source_frames=source)
    assert (plan.renders, plan.starts) == (renders, starts)
    shared = 1 if method == "naive" else overlap
    if method != "context windows" or source:
        made = (source or plan.renders[0]) + sum(r - shared for r in
                                                 plan.renders[0 if source else 1:])
        assert made == length


@pytest.mark.parametrize("kwargs, input, words", [
    (dict(length=80, window=17, overlap=5), "length", "use 77 or 81"),
    (dict(length=13, window=17, overlap=5), "length", "shorter than one window"),
    (dict(length=65, window=17, overlap=17), "overlap", "smaller than the window"),
    (dict(length=65, window=17, overlap=4), "overlap", "4k+1"),
    (dict(length=65, window=16, overlap=5), "window", "4k+1"),
    (dict(length=101, window=81, overlap=17), "length", "81, 145, 209"),
    (dict(length=101, window=81, overlap=17), "length", "'context windows'"),
    (dict(length=61, window=17, overlap=5, source_frames=3), "source_video", "fewer than"),
    (dict(length=21, window=17, overlap=5, source_frames=21), "length", "longer than"),
    (dict(length=31, window=17, overlap=5, source_frames=21), "length", "multiple of 4"),
    (dict(length=65, window=17, overlap=5, method="fast"), "method", "pick one of"),
])
def test_plan_refuses_bad_frame_counts_naming_input_and_fix(kwargs, input, words):
    kwargs = {"method": "continue", **kwargs}
    with pytest.raises(InputError) as err:
        lv.plan_long_video(kwargs.pop("length"), kwargs.pop("window"), kwargs.pop("overlap"),
                           kwargs.pop("method"), **kwargs)
    assert err.value.input == input and words in str(err.value), str(err.value)
    assert err.value.fix


def test_unreachable_length_names_the_nearest_reachable_ones():
    with pytest.raises(InputError) as err:
        lv.plan_long_video(101, 81, 17, "continue")
    assert "use 81 or 145" in str(err.value)
    lv.plan_long_video(101, 81, 17, "context windows")   # any 4k+1 length


def test_source_video_of_another_size_is_refused():
    with pytest.raises(InputError, match="is 64x48 but width x height is 64x64") as err:
        lv.check_source_video(torch.rand(9, 48, 64, 3), 64, 64)
    assert err.value.input == "source_video" and "width 64 and height 48" in err.value.fix


# -- colour matching and seams -------------------------------------------------------------------

def _scene(frames: int, seed: int = 0) -> torch.Tensor:
    """Smooth synthetic frames with structure in every channel (IMAGE layout)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.nn.functional.interpolate(torch.rand(frames, 3, 6, 6, generator=g), size=(32, 32),
                                           mode="bilinear", align_corners=False)
    return (0.2 + 0.6 * base).movedim(1, -1)


def test_colour_fit_removes_an_injected_colour_shift_from_the_whole_window():
    truth = _scene(13)
    gain, offset = torch.tensor([1.15, 0.88, 1.0]), torch.tensor([-0.06, 0.05, 0.04])
    shifted = (truth * gain + offset).clamp(0, 1)
    before = (shifted - truth).abs().mean()
    fitted_gain, fitted_offset = lv.fit_colour(truth[:5], shifted[:5])   # the overlap only
    repaired = lv.apply_colour(shifted, fitted_gain, fitted_offset)
    assert before > 0.02
    assert (repaired[5:] - truth[5:]).abs().max() < 0.01                   # later frames too
    torch.testing.assert_close(fitted_gain * gain, torch.ones(3), atol=0.02, rtol=0)


def test_colour_fit_follows_the_tint_not_a_redrawn_subject():
    """The subject (a tenth of the frame) comes back in another colour while the whole frame
    got a tint: the fit must undo the tint and leave the background right, not spread the
    subject's change over the frame."""
    truth = _scene(5, seed=2)
    moved = (truth + torch.tensor([0.04, -0.03, 0.02])).clamp(0, 1)
    moved[:, 8:18, 8:18] = torch.tensor([0.1, 0.9, 0.2])
    repaired = lv.apply_colour(moved, *lv.fit_colour(truth, moved))
    background = torch.ones(32, 32, dtype=torch.bool)
    background[8:18, 8:18] = False
    assert (repaired[:, background] - truth[:, background]).abs().max() < 0.01
    plain_shift = truth.mean(dim=(0, 1, 2)) - moved.mean(dim=(0, 1, 2))   # a mean match
    assert (moved[:, background] + plain_shift - truth[:, background]).abs().max() > 0.03


def test_colour_fit_of_a_flat_overlap_uses_the_offset_not_a_wild_gain():
    reference = torch.full((5, 16, 16, 3), 0.5) + 0.001 * torch.randn(5, 16, 16, 3)
    moving = torch.full((5, 16, 16, 3), 0.4) + 0.001 * torch.randn(5, 16, 16, 3)
    gain, offset = lv.fit_colour(reference, moving)   # the noise is unrelated: no gain to fit
    assert (gain - 1).abs().max() < 0.05 and (offset - 0.1).abs().max() < 0.01


def test_colour_fit_of_a_softened_overlap_leaves_the_contrast_alone():
    """A regenerated overlap comes back blurrier than the frames it continues, with the same
    colours: lost detail is not lost contrast, so the fit must not brighten the new window
    (it did, by gains of 1.1-1.25 per window, and a long clip's colours ran away)."""
    g = torch.Generator().manual_seed(4)
    shading = torch.nn.functional.interpolate(_scene(5, seed=4).movedim(-1, 1), size=(64, 64),
                                              mode="bilinear").movedim(1, -1)
    sharp = (shading + 0.15 * (torch.rand(5, 64, 64, 3, generator=g) - 0.5)).clamp(0, 1)
    blurred = torch.nn.functional.avg_pool2d(sharp.movedim(-1, 1), 3, stride=1, padding=1,
                                             count_include_pad=False).movedim(1, -1)
    gain, offset = lv.fit_colour(sharp, blurred)
    assert (gain - 1).abs().max() < 0.03 and offset.abs().max() < 0.02


def _plan(method, overlap=5):
    return lv.LongVideoPlan(method, 29, 17, overlap, (17, 17), (0, 12))


def test_continued_window_is_crossfaded_over_the_overlap_and_repeats_are_dropped():
    out = torch.empty(29, 4, 4, 3)
    filled = lv._join(out, 0, torch.full((17, 4, 4, 3), 0.2), _plan("continue"), False)
    filled = lv._join(out, filled, torch.full((17, 4, 4, 3), 0.8), _plan("continue"), False)
    assert filled == 29
    levels = out[:, 0, 0, 0]
    assert (levels[:12] == 0.2).all() and (levels[17:] == 0.8).all()
    torch.testing.assert_close(levels[12:17], 0.2 + 0.6 * torch.arange(1, 6) / 6)


def test_naive_chaining_drops_the_repeated_frame_without_blending_or_matching():
    out = torch.empty(33, 4, 4, 3)
    plan = lv.LongVideoPlan("naive", 33, 17, 1, (17, 17), (0, 17))
    filled = lv._join(out, 0, torch.full((17, 4, 4, 3), 0.2), plan, True)
    second = torch.full((17, 4, 4, 3), 0.8)
    second[0] = 0.5                                  # the repeat of the clip's last frame
    assert lv._join(out, filled, second, plan, True) == 33
    assert (out[:17] == 0.2).all() and (out[17:] == 0.8).all()


def test_colour_match_is_anchored_so_drift_does_not_pile_up():
    """Each continued window comes back with the same colour error relative to the frames it
    was given (as a decode/encode round trip adds); matched to the clip as already corrected,
    the error is removed every time instead of adding up window after window."""
    plan = lv.LongVideoPlan("continue", 65, 17, 5, (17,) * 5, (0, 12, 24, 36, 48))
    scene = _scene(65, seed=1)

    def render(out, filled, match):
        given = out[filled - 5:filled]
        # the model carries on from the colour it was given, then adds its error
        carried = (given - scene[filled - 5:filled]).mean()
        fresh = scene[filled:filled + 12] + carried
        return lv._join(out, filled, ((torch.cat([given, fresh]) + 0.06) * 0.95).clamp(0, 1),
                        plan, match)

    results = {}
    for match in (True, False):
        out = torch.empty(65, 32, 32, 3)
        filled = lv._join(out, 0, scene[:17], plan, match)
        while filled < 65:
            filled = render(out, filled, match)
        results[match] = (out - scene).mean(dim=(1, 2, 3)).abs()
    assert results[True].max() < 0.005
    assert results[False][20] > 0.02                               # unmatched: one error ...
    assert results[False][-1] > 3 * results[False][20]              # ... piles up


def test_colour_match_leaves_the_vae_round_trip_of_kept_frames_alone():
    """A TI2V-type model keeps the given frames' latents exactly: its shared frames come back
    as the VAE round trip of the given ones (here a little brighter) and its new frames carry
    no such error. Fitted to the clip's own frames, each window was "corrected" for the round
    trip's error, the model carried each correction on, and the clip drifted further with every
    window; fitted to the frames as the model was given them, nothing changes."""
    plan = lv.LongVideoPlan("continue", 65, 17, 5, (17,) * 5, (0, 12, 24, 36, 48))
    scene = _scene(65, seed=3)

    def round_trip(frames):
        return (frames * 1.04 + 0.03).clamp(0, 1)

    drift = {}
    for reference in ("round trip", "clip"):
        out = torch.empty(65, 32, 32, 3)
        filled = lv._join(out, 0, scene[:17], plan, True)
        while filled < 65:
            given = out[filled - 5:filled]
            carried = (given - scene[filled - 5:filled]).mean()   # the model goes on from it
            piece = torch.cat([round_trip(given), scene[filled:filled + 12] + carried])
            shown = round_trip(given) if reference == "round trip" else None
            filled = lv._join(out, filled, piece, plan, True, shown)
        drift[reference] = (out[-12:] - scene[-12:]).mean().abs()
    assert drift["round trip"] < 1e-3
    assert drift["clip"] > 0.1


# -- through the real sampler, on the tiny models ------------------------------------------------

class RecordInputs(ModelPatch):
    """Innermost patch: keeps, for every model pass, the latent it got and its ModelInputs."""
    name = "record inputs"

    def __init__(self):
        self.runs = []

    def wrap_velocity(self, velocity, model, run):
        calls = []
        self.runs.append(calls)

        def recorded(x, sigma, inputs):
            calls.append((x.clone(), inputs))
            return velocity(x, sigma, inputs)
        return recorded


@pytest.fixture(scope="module")
def tiny(tiny_models_dir):
    from comfyui_videodit.nodes.loaders import VideoDiTModelLoader
    from comfyui_videodit.nodes.text import VideoDiTTextEncode, VideoDiTTextEncoderLoader
    from comfyui_videodit.nodes.vae import VideoDiTVAELoader
    from comfyui_videodit.runtime import model_folders

    saved = model_folders._models_dir_override
    model_folders._models_dir_override = tiny_models_dir
    try:
        encoder = VideoDiTTextEncoderLoader().load("tiny_umt5.safetensors", "fp32", "cpu")[0]
        yield {
            "cond": VideoDiTTextEncode().encode(encoder, "a red ball rolls", "blurry")[0],
            "t2v": VideoDiTModelLoader().load("tiny_t2v.safetensors", "fp32")[0],
            "i2v": VideoDiTModelLoader().load("tiny_i2v.safetensors", "fp32")[0],
            "ti2v": VideoDiTModelLoader().load("tiny_ti2v.safetensors", "fp32")[0],
            "vae21": VideoDiTVAELoader().load("tiny_vae21.safetensors", "fp32")[0],
            "vae22": VideoDiTVAELoader().load("tiny_vae22.safetensors", "fp32")[0],
        }
    finally:
        model_folders._models_dir_override = saved


SETTINGS = dict(seed=11, steps=3, cfg=3.0, shift=5.0, sampler="unipc")


def _render(tiny, model, vae, **kwargs):
    args = {"width": 64, "height": 64, **SETTINGS, **kwargs}
    return lv.render_long_video(model, tiny["cond"], vae, **args)


def _plain(tiny, model, vae, length, cond=None, seed=11, decode=True):
    from comfyui_videodit.nodes.conditioning import VideoDiTEmptyLatent
    from comfyui_videodit.nodes.sampling import VideoDiTSampler
    from comfyui_videodit.nodes.vae import VideoDiTVAEDecode

    latent = VideoDiTEmptyLatent().make(vae, 64, 64, length, 1)[0]
    sampled = VideoDiTSampler().sample(model, cond or tiny["cond"], latent, seed, 3, 3.0, 5.0,
                                       "unipc", 1.0)[0]
    return sampled, VideoDiTVAEDecode().decode(vae, sampled)[0] if decode else None


def test_one_context_window_over_the_whole_latent_is_exactly_the_plain_sampler(tiny):
    from comfyui_videodit.nodes.long_video import VideoDiTContextWindows

    sampled, decoded = _plain(tiny, tiny["t2v"], tiny["vae21"], 9)
    for window in (9, 17):   # exactly the latent, and longer than it
        windowed = VideoDiTContextWindows().apply(tiny["t2v"], window, 5)[0]
        again, _ = _plain(tiny, windowed, tiny["vae21"], 9, decode=False)
        assert torch.equal(again["samples"], sampled["samples"])
    video = _render(tiny, tiny["t2v"], tiny["vae21"], length=9, window=9, overlap=5,
                    method="context windows")
    assert torch.equal(video.images, decoded) and video.segment_starts == [0]


def test_context_windows_patch_runs_the_model_on_windows_and_leaves_the_input_model(tiny):
    from comfyui_videodit.nodes.long_video import VideoDiTContextWindows

    recorder = RecordInputs()
    base = tiny["t2v"].with_patch(recorder)
    windowed = VideoDiTContextWindows().apply(base, 5, 1)[0]     # latent windows of 2, overlap 1
    assert base.patches == (recorder,) and windowed is not base
    sampled, _ = _plain(tiny, windowed, tiny["vae21"], 13, decode=False)   # 4 latent frames
    shapes = {x.shape[2] for x, _ in recorder.runs[0]}
    assert shapes == {2} and len(recorder.runs[0]) == 3 * 3 * 2   # windows x steps x cfg passes
    assert torch.isfinite(sampled["samples"]).all()
    plain, _ = _plain(tiny, tiny["t2v"], tiny["vae21"], 13, decode=False)
    assert not torch.allclose(plain["samples"], sampled["samples"])


def test_context_windows_render_the_full_length_with_a_text_to_video_model(tiny):
    video = _render(tiny, tiny["t2v"], tiny["vae21"], length=17, window=9, overlap=5,
                    method="context windows")
    assert video.images.shape == (17, 64, 64, 3) and torch.isfinite(video.images).all()
    assert video.segment_starts == [0, 1, 5] and video.segments().boundaries == (1, 5)


def test_continuation_hands_the_previous_frames_as_clean_first_frames(tiny):
    """TI2V-type model: the second window's first latent frames are the encoded last `overlap`
    frames of the first window, pasted clean (timestep 0) into every model pass."""
    model, vae = tiny["ti2v"], tiny["vae22"]
    fmt = vae.latent_format
    recorder = RecordInputs()
    video = _render(tiny, model.with_patch(recorder), vae, length=13, window=9, overlap=5,
                    method="continue", color_match=False)
    _, first_window = _plain(tiny, model, vae, 9)
    given = fmt.normalize(vae.encode(first_window[4:9]))         # 5 frames -> 2 latent frames
    assert [inputs.first_frames for _, inputs in recorder.runs[0]] == [0] * 6
    assert [inputs.first_frames for _, inputs in recorder.runs[1]] == [2] * 6
    for x, _ in recorder.runs[1]:
        torch.testing.assert_close(x[:, :, :2], given.expand(x.shape[0], -1, -1, -1, -1))
    assert video.images.shape[0] == 13 and video.segment_starts == [0, 4]
    torch.testing.assert_close(video.images[:4], first_window[:4])   # the first window is kept


def test_continuation_of_a_channel_model_gives_mask_and_image_latents(tiny):
    """Wan 2.1 I2V-type model: the continued window's extra channels say 'given' for the first
    latent frames (mask 1) and hold their latents; the rest is mask 0."""
    from comfyui_videodit.nodes.conditioning import VideoDiTImageToVideo

    model, vae = tiny["i2v"], tiny["vae21"]
    cond = VideoDiTImageToVideo().prepare(tiny["cond"], vae, torch.rand(1, 64, 64, 3), 64, 64,
                                          9)[0]
    recorder = RecordInputs()
    video = lv.render_long_video(model.with_patch(recorder), cond, vae, width=64, height=64,
                                 length=13, window=9, overlap=5, method="continue", **SETTINGS)
    concat = recorder.runs[1][0][1].concat_latent               # [B, 4 + 16, 3, 8, 8]
    assert concat.shape[1:3] == (20, 3)
    assert (concat[:, :4, :2] == 1).all() and (concat[:, :4, 2] == 0).all()
    first_cond = recorder.runs[0][0][1].concat_latent
    assert (first_cond[:, :4, 0] == 1).all() and (first_cond[:, :4, 1:] == 0).all()
    _, first_window = _plain(tiny, model, vae, 9, cond=cond)
    pixels = torch.full((9, 64, 64, 3), 0.5)
    pixels[:5] = first_window[4:9]                              # before the cross-fade
    torch.testing.assert_close(concat[:, 4:], vae.latent_format.normalize(vae.encode(pixels)))
    assert video.images.shape[0] == 13


def test_extending_a_source_video_keeps_it_and_appends_continued_windows(tiny):
    model, vae = tiny["ti2v"], tiny["vae22"]
    source = _scene(9, seed=3)
    source = torch.nn.functional.interpolate(source.movedim(-1, 1), size=(64, 64)).movedim(1, -1)
    recorder = RecordInputs()
    video = _render(tiny, model.with_patch(recorder), vae, length=17, window=9, overlap=5,
                    method="continue", source_video=source)
    assert video.images.shape[0] == 17 and video.segment_starts == [0, 4, 8]
    assert torch.equal(video.images[:4], source[:4])
    given = vae.latent_format.normalize(vae.encode(source[4:9]))
    torch.testing.assert_close(recorder.runs[0][0][0][:, :, :2], given)


def test_naive_chaining_gives_only_the_last_frame(tiny):
    recorder = RecordInputs()
    video = _render(tiny, tiny["ti2v"].with_patch(recorder), tiny["vae22"], length=17,
                    window=9, overlap=5, method="naive")
    assert [i.first_frames for _, i in recorder.runs[1]] == [1] * 6
    assert video.images.shape[0] == 17 and video.segment_starts == [0, 9]


def test_vace_model_continues_with_a_context_that_keeps_the_given_frames(tiny, tmp_path,
                                                                         monkeypatch):
    """A VACE model's continued window gets a VACE context whose control video is the given
    frames (mask 0: keep) followed by grey to regenerate (mask 1)."""
    from safetensors.torch import save_file
    from tiny_models import TEXT_DIM, _scaled_random

    from comfyui_videodit.networks.wan_dit import WanDiT, WanDiTConfig
    from comfyui_videodit.nodes.loaders import VideoDiTModelLoader
    from comfyui_videodit.runtime import model_folders
    from comfyui_videodit.samplers.vace_conditioning import vace_conditioning

    config = WanDiTConfig(model_type="t2v", in_dim=16, out_dim=16, dim=256, ffn_dim=64,
                          num_heads=2, num_layers=2, text_dim=TEXT_DIM, freq_dim=32,
                          vace_layers=(0,))
    (tmp_path / "diffusion_models").mkdir()
    save_file({f"model.diffusion_model.{k}": v for k, v in _scaled_random(WanDiT(config), 7).items()},
              str(tmp_path / "diffusion_models" / "tiny_vace.safetensors"))
    monkeypatch.setattr(model_folders, "_models_dir_override", tmp_path)
    model = VideoDiTModelLoader().load("tiny_vace.safetensors", "fp32")[0]
    vae = tiny["vae21"]
    first = vace_conditioning(vae, tiny["cond"], 64, 64, 9)[0]
    recorder = RecordInputs()
    video = lv.render_long_video(model.with_patch(recorder), first, vae, width=64, height=64,
                                 length=13, window=9, overlap=5, method="continue", **SETTINGS)
    assert video.images.shape[0] == 13
    context = recorder.runs[1][0][1].vace_context              # [B, 16 + 16 + 64, 3, 8, 8]
    assert (context[:, 32:, :2] == 0).all() and (context[:, 32:, 2] == 1).all()
    _, first_window = _plain(tiny, model, vae, 9, cond=first)
    kept = torch.full((9, 64, 64, 3), 0.5)
    kept[:5] = first_window[4:9]
    torch.testing.assert_close(context[:, :16], vae.latent_format.normalize(vae.encode(kept)))


def test_continuation_with_a_text_only_model_is_refused_before_sampling(tiny):
    from comfyui_videodit.nodes.long_video import VideoDiTExtendVideo

    recorder = RecordInputs()
    with pytest.raises(InputError) as err:
        VideoDiTExtendVideo().render(tiny["t2v"].with_patch(recorder), tiny["cond"],
                                     tiny["vae21"], 64, 64, 17, 9, 5, "continue", 1, 3, 3.0, 5.0,
                                     "unipc", True)
    assert err.value.input == "method" and "context windows" in err.value.fix
    assert str(err.value).startswith("VideoDiT Extend Video · method:")
    assert recorder.runs == []


def test_channel_model_without_a_start_image_or_of_another_length_is_refused(tiny):
    from comfyui_videodit.nodes.conditioning import VideoDiTImageToVideo

    with pytest.raises(InputError, match="needs a start image") as err:
        _render(tiny, tiny["i2v"], tiny["vae21"], length=13, window=9, overlap=5,
                method="continue")
    assert err.value.input == "conditioning"
    cond = VideoDiTImageToVideo().prepare(tiny["cond"], tiny["vae21"], torch.rand(1, 64, 64, 3),
                                          64, 64, 13)[0]
    with pytest.raises(InputError, match="prepared for 13 frames") as err:
        lv.render_long_video(tiny["i2v"], cond, tiny["vae21"], width=64, height=64, length=13,
                             window=9, overlap=5, method="continue", **SETTINGS)
    assert "length to 9" in err.value.fix


def test_vace_reference_images_are_refused_for_context_windows(tiny):
    vace = VaceInputs(context=torch.zeros(1, 96, 4, 8, 8), reference_frames=1)
    cond = tiny["cond"].replace(extras={VACE_KEY: vace})
    with pytest.raises(InputError, match="reference images") as err:
        lv.render_long_video(tiny["t2v"], cond, tiny["vae21"], width=64, height=64, length=17,
                             window=9, overlap=5, method="context windows", **SETTINGS)
    assert err.value.input == "conditioning"


def test_vae_of_another_latent_format_is_refused(tiny):
    with pytest.raises(InputError) as err:
        _render(tiny, tiny["t2v"], tiny["vae22"], length=17, window=9, overlap=5,
                method="context windows")
    assert err.value.input == "vae"


def test_queue_time_check_of_the_window_widgets():
    from comfyui_videodit.nodes.long_video import VideoDiTContextWindows, VideoDiTExtendVideo

    assert VideoDiTExtendVideo.VALIDATE_INPUTS(832, 480, 81, 17, 5.0, 5.0, 0.0) is True
    problem = VideoDiTExtendVideo.VALIDATE_INPUTS(832, 480, 80, 81, 5.0, 5.0, 0.0)
    assert "window must be 4k+1" in problem and "overlap (81) must be smaller" in problem
    assert "overlap must be 4k+1" in VideoDiTContextWindows.VALIDATE_INPUTS(81, 16)


# -- the demo model -------------------------------------------------------------------------------

@pytest.mark.slow
def test_demo_model_continues_without_a_seam():
    """Two 17-frame windows of the demo model joined over 5 frames: the clip is 29 frames, and
    the join is no bigger a colour step than the steps inside the windows."""
    from comfyui_videodit.consistency.color import frame_lab_means
    from comfyui_videodit.demo.evaluate import DemoPipeline

    pipe = DemoPipeline()
    cond = pipe.conditioning("a red ball rolls to the right over a gray background")
    video = lv.render_long_video(pipe.model, cond, pipe.vae, width=64, height=64, length=29,
                                 window=17, overlap=5, method="continue", seed=2, steps=8,
                                 cfg=5.0, shift=3.0, sampler="unipc")
    assert video.images.shape == (29, 64, 64, 3) and video.segment_starts == [0, 12]
    means = frame_lab_means(video.images.movedim(-1, 1))
    steps = (means[1:] - means[:-1]).norm(dim=1)
    seam = steps[11:17].max()
    inside = torch.cat([steps[:11], steps[17:]])
    assert seam <= 2 * inside.max() + 0.5, (seam, inside)


@pytest.mark.slow
def test_demo_long_video_workflow_runs_headless(tmp_path):
    """The shipped 65-frame demo, headless (fewer steps to keep the suite quick): five windows
    joined, repaired and reported with their segments, written as a 65-frame video."""
    import subprocess
    import sys
    from pathlib import Path

    import av

    workflow = Path(__file__).resolve().parent.parent / "example_workflows" / "demo_long_video.json"
    done = subprocess.run([sys.executable, "-m", "comfyui_videodit", "run", str(workflow),
                           "--set", "VideoDiTExtendVideo.steps=6", "--output-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    videos = list(tmp_path.rglob("*.mp4"))
    assert len(videos) == 1 and str(videos[0]) in done.stdout
    with av.open(str(videos[0])) as container:
        assert sum(1 for _ in container.decode(video=0)) == 65
    assert "VideoDiT Consistency Report: Consistency score" in done.stderr
