"""The frame-consistency post-pass: repairs synthetic artefacts, leaves clean clips alone."""
from __future__ import annotations

import pytest
import torch

from comfyui_videodit.consistency import synthetic as S
from comfyui_videodit.consistency.cuts import detect_boundaries
from comfyui_videodit.consistency.deflicker import global_deflicker, local_deflicker, smooth_series
from comfyui_videodit.consistency.flow import clip_flows
from comfyui_videodit.consistency.metrics import compute_metrics
from comfyui_videodit.consistency.postpass import PostPassSettings, psnr_db, run_postpass
from comfyui_videodit.consistency.shimmer import reduce_shimmer
from comfyui_videodit.core.hooks import Hooks
from comfyui_videodit.errors import InputError, Interrupted
from comfyui_videodit.nodes.consistency import VideoDiTFrameConsistency
from comfyui_videodit.runtime import progress

SMALL = dict(frames=16, height=64, width=96)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def clips():
    return {
        "static": S.clean_clip(S.ClipSpec(**SMALL, object_speed=(1.5, 0.3))),
        "pan": S.clean_clip(S.ClipSpec(**SMALL, pan=(1.3, 0.4))),
        "fade": S.clean_clip(S.ClipSpec(**SMALL, pan=(0.7, 0.0), fade=(1.0, 0.3))),
        "cut": S.clean_clip(S.ClipSpec(**SMALL, pan=(1.0, 0.0), cut_at=8)),
    }


@pytest.mark.parametrize("name", ["static", "pan", "fade", "cut"])
def test_clean_clips_stay_above_45_db(clips, name):
    clean = clips[name]
    out, log = run_postpass(clean)
    assert psnr_db(out, clean) >= 45.0, log.summary()
    # even with every stage forced on, the clip is barely touched
    forced, _ = run_postpass(clean, settings=PostPassSettings(always_run=True))
    assert psnr_db(forced, clean) >= 38.0


def test_every_stage_alone_is_safe_on_clean_clips(clips):
    off = dict(seam_strength=0.0, global_strength=0.0, local_strength=0.0, shimmer_strength=0.0)
    for stage in off:
        kw = dict(off, **{stage: 0.6 if stage == "shimmer_strength" else 1.0})
        for name in ("fade", "pan"):
            out, _ = run_postpass(clips[name], settings=PostPassSettings(always_run=True, **kw))
            assert psnr_db(out, clips[name]) >= 45.0, (stage, name)


def test_global_flicker_gains_8_db():
    # iid 5 % gain jitter; its slow part is indistinguishable from a real brightness change,
    # so the gain depends on the draw: averaged over 8 draws.
    clean = S.clean_clip(S.ClipSpec(frames=48, height=48, width=64, object_speed=(1.0, 0.3)))
    gains = []
    for seed in range(1, 9):
        damaged = S.global_flicker(clean, 0.05, seed=seed)
        out, log = run_postpass(damaged)
        assert any(s["stage"] == "global deflicker" and s["ran"] for s in log.stages)
        gains.append(psnr_db(out, clean) - psnr_db(damaged, clean))
    assert sum(gains) / len(gains) >= 8.0, gains
    assert min(gains) >= 5.0, gains


def test_colour_flicker_is_repaired(clips):
    clean = clips["pan"]
    damaged = S.colour_flicker(clean)
    out, _ = run_postpass(damaged)
    assert psnr_db(out, clean) - psnr_db(damaged, clean) >= 6.0
    before = compute_metrics(damaged).values["chroma_flicker"]
    after = compute_metrics(out).values["chroma_flicker"]
    assert after < 0.4 * before


def test_local_flicker_is_repaired(clips):
    clean = clips["static"]
    damaged = S.local_flicker(clean)
    out, log = run_postpass(damaged)
    assert any(s["stage"] == "local deflicker" and s["ran"] for s in log.stages)
    assert psnr_db(out, clean) - psnr_db(damaged, clean) >= 3.0


def test_shimmer_is_reduced(clips):
    clean = clips["pan"]
    damaged = S.shimmer(clean)
    only_shimmer = PostPassSettings(global_strength=0.0, local_strength=0.0)
    out, log = run_postpass(damaged, settings=only_shimmer)
    assert [s["stage"] for s in log.stages if s["ran"]] == ["shimmer"]
    assert psnr_db(out, clean) - psnr_db(damaged, clean) >= 1.5
    before = compute_metrics(damaged).values["struct_warp_mae"]
    after = compute_metrics(out).values["struct_warp_mae"]
    assert after < 0.8 * before


def test_chunk_seam_is_detected_and_corrected(clips):
    clean = clips["pan"]
    damaged = S.chunk_seam(clean, at=8)
    assert detect_boundaries(damaged).seams == [8]
    out, log = run_postpass(damaged)
    assert psnr_db(out, clean) >= psnr_db(damaged, clean) + 15.0


def test_nothing_is_smoothed_across_a_cut(clips):
    clip = S.global_flicker(clips["cut"], 0.04)
    bounds = detect_boundaries(clip)
    assert bounds.cuts == [8] and bounds.seams == []
    out, _ = run_postpass(clip)
    # the second shot's brightness is its own, not pulled toward the first shot's
    assert abs(float(out[8:].mean() - clip[8:].mean())) < 0.01
    assert psnr_db(out, clips["cut"]) > psnr_db(clip, clips["cut"])


def test_odd_extension_keeps_fades_and_reflection_does_not():
    ramp = torch.linspace(1.0, 0.3, 20).unsqueeze(1)
    assert torch.allclose(smooth_series(ramp, 3.0, odd_extension=True), ramp, atol=1e-6)
    assert (smooth_series(ramp, 3.0, odd_extension=False) - ramp).abs().max() > 0.05


def test_single_frame_pop_does_not_leak():
    series = torch.full((20, 1), 0.5)
    series[10] = 0.8
    smoothed = smooth_series(series, 3.0)
    assert (smoothed - 0.5).abs().max() < 0.01


def test_reference_video_supplies_the_motion(clips):
    source = clips["pan"]
    edited = S.colour_flicker(S.drift(source), seed=7)  # an "edit" whose look changed
    out, log = run_postpass(edited, reference=source)
    assert log.analysis["flow_source"] == "reference video"
    assert compute_metrics(out, flow_frames=source).values["chroma_flicker"] < \
        0.5 * compute_metrics(edited, flow_frames=source).values["chroma_flicker"]


def test_node_round_trip_and_errors(clips):
    node = VideoDiTFrameConsistency()
    images = S.global_flicker(clips["static"]).permute(0, 2, 3, 1).contiguous()
    out, summary = node.repair(images)
    assert out.shape == images.shape and out.dtype == images.dtype
    assert "global deflicker: ran" in summary
    with pytest.raises(InputError, match="reference.*frames"):
        node.repair(images, reference=images[:5])
    with pytest.raises(InputError, match="images"):
        node.repair(images[0])


def _cancelled():
    raise Interrupted("cancelled by the user")


@pytest.mark.parametrize("stage", [global_deflicker, local_deflicker, reduce_shimmer])
def test_every_repair_stage_stops_on_cancel(stage):
    clip = S.clean_clip(S.ClipSpec(frames=5, height=32, width=48, pan=(1.0, 0.0)))
    flows = clip_flows(clip)
    args = (clip, [(0, 5)]) if stage is global_deflicker else (clip, flows, [(0, 5)])
    stage(*args)  # runs to the end without a Cancel
    with pytest.raises(Interrupted):
        stage(*args, hooks=Hooks(check_interrupt=_cancelled))


def test_node_stops_on_the_hosts_cancel(clips):
    images = clips["static"][:4].permute(0, 2, 3, 1).contiguous()
    progress.request_interrupt()  # what the CLI does on Ctrl-C
    try:
        with pytest.raises(Interrupted):
            VideoDiTFrameConsistency().repair(images)
    finally:
        progress.clear_interrupt()
