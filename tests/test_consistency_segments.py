"""Known segment boundaries (VIDEODIT_SEGMENTS) in the post-pass and the report.

A clip rendered in pieces says where the pieces meet; both consistency nodes then judge and
repair exactly there instead of guessing, and never take a boundary for a scene cut.
"""
from __future__ import annotations

import json
import math

import pytest
import torch

from comfyui_videodit.consistency import synthetic as S
from comfyui_videodit.consistency.color import auto_border, frame_lab_means
from comfyui_videodit.consistency.cuts import detect_boundaries
from comfyui_videodit.consistency.metric_context import AlignedPairs, colour_shift
from comfyui_videodit.consistency.metrics import compute_metrics, verdict_of
from comfyui_videodit.consistency.postpass import PostPassSettings, psnr_db, run_postpass
from comfyui_videodit.consistency.report import build_report, to_markdown
from comfyui_videodit.core.segments import VideoSegments
from comfyui_videodit.errors import InputError
from comfyui_videodit.nodes.consistency import VideoDiTFrameConsistency
from comfyui_videodit.nodes.qc import VideoDiTConsistencyReport

SMALL = dict(frames=16, height=64, width=96)
SUBTLE = dict(gain=(1.03, 0.99, 0.97), offset=(0.0, 0.0, 0.0))  # below the seam detector


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def pan():
    return S.clean_clip(S.ClipSpec(**SMALL, pan=(1.3, 0.4)))


def lab_step(clip: torch.Tensor) -> torch.Tensor:
    means = frame_lab_means(clip, auto_border(*clip.shape[-2:]))
    return (means[1:] - means[:-1]).norm(dim=1)


def test_report_flags_the_given_boundary_with_its_step(pan):
    clip = S.chunk_seam(pan, at=8)
    result = compute_metrics(clip, segments=VideoSegments((0, 4, 8, 12), 16))
    rows = {r["frame"]: r for r in result.extras["boundaries"]}
    assert set(rows) == {4, 8, 12} and {r["source"] for r in rows.values()} == {"given"}
    step = lab_step(clip)
    others = torch.cat((step[:3], step[4:7], step[8:11], step[12:]))
    assert rows[8]["step_de"] == pytest.approx(float(step[7]), rel=1e-4)
    # the larger of the plain step and the change along the motion, over the other pairs' median
    assert rows[8]["jump_de"] == pytest.approx(rows[8]["step_de"], rel=0.2)
    assert rows[8]["ratio"] == pytest.approx(
        max(rows[8]["step_de"], rows[8]["jump_de"]) / float(others.median()), rel=1e-4)
    assert rows[8]["verdict"] == "fail"
    assert rows[4]["verdict"] == rows[12]["verdict"] == "good"   # only the real seam is flagged
    assert result.values["boundary_seam"] == pytest.approx(rows[8]["ratio"])
    report = build_report(result)
    verdicts = {r["metric"]: r["verdict"] for r in report["metrics"]}
    assert verdicts["boundary_seam"] == "fail" and report["verdict"] == "fail"
    text = to_markdown(report)
    assert "| 8 | segments input |" in text and "| 4 | segments input |" in text


def test_a_clean_clip_passes_with_boundaries_given(pan):
    result = compute_metrics(pan, segments=[0, 4, 8, 12])
    assert verdict_of("boundary_seam", result.values["boundary_seam"]) == "good"
    assert verdict_of("segment_drift_de", result.values["segment_drift_de"]) == "good"
    assert build_report(result)["verdict"] != "fail"


def test_a_subtle_seam_is_measured_at_its_boundary_though_not_detected(pan):
    clip = S.chunk_seam(pan, at=8, **SUBTLE)
    assert detect_boundaries(clip).seams == []
    result = compute_metrics(clip, segments=[0, 8])
    (row,) = result.extras["boundaries"]
    assert row["frame"] == 8 and row["step_de"] > 2 * float(lab_step(pan)[7])


def test_segment_drift_follows_surfaces_not_new_content():
    # A long pan brings differently coloured texture into view: the plain segment means move
    # by many dE, but the same surfaces keep their colour, so that is no drift.
    long_pan = S.clean_clip(S.ClipSpec(frames=48, height=64, width=96, pan=(1.0, 0.3)))
    starts = [0, 16, 32]
    clean = compute_metrics(long_pan, segments=starts)
    plain = max(s["plain_de"] for s in clean.extras["segments"])
    assert plain > 6.0 and clean.values["segment_drift_de"] < 1.5
    # A colour cast creeping in over the clip is drift; the report fails it (not warn-only).
    drifting = compute_metrics(S.drift(long_pan, (0.08, 0.0, -0.08)), segments=starts)
    per_segment = [s["drift_de"] for s in drifting.extras["segments"]]
    assert per_segment[0] == 0.0 and per_segment[1] < per_segment[2]
    assert verdict_of("segment_drift_de", drifting.values["segment_drift_de"]) == "fail"


def test_without_segments_the_report_is_unchanged(pan):
    clip = S.chunk_seam(pan, at=8)
    plain = compute_metrics(clip)
    assert "boundary_seam" not in plain.values and "boundaries" not in plain.extras
    with_segments = compute_metrics(clip, segments=[0, 8])
    for name, value in plain.values.items():  # a detected seam is no cut: same numbers
        assert with_segments.values[name] == value, name


def test_postpass_repairs_a_jump_the_detector_misses(pan):
    clip = S.chunk_seam(pan, at=8, **SUBTLE)
    unaided, log = run_postpass(clip)
    assert not any(s["stage"] == "seam colour" and s["ran"] for s in log.stages)
    repaired, log = run_postpass(clip, segments=VideoSegments((0, 8), 16))
    assert any(s["stage"] == "seam colour" and s["ran"] for s in log.stages)
    assert float(lab_step(repaired)[7]) < 0.5 * float(lab_step(clip)[7])
    assert psnr_db(repaired, pan) > psnr_db(unaided, pan) + 10.0


def test_new_content_at_a_boundary_does_not_recolour_the_rest():
    # Something new appears where a segment starts: no colour seam, so the correction that is
    # applied to every later frame must stay near identity (a plain least-squares fit on all
    # flow-valid pixels tints the background by ~8 % in red here: 46 dB).
    clip = S.clean_clip(S.ClipSpec(**SMALL, pan=(0.6, 0.2)))
    clip[8:, :, 16:44, 24:60] = torch.tensor([0.9, 0.2, 0.6]).view(1, 3, 1, 1)
    only_seams = PostPassSettings(global_strength=0.0, local_strength=0.0, shimmer_strength=0.0)
    out, _ = run_postpass(clip, segments=[0, 8], settings=only_seams)
    background = torch.ones_like(clip, dtype=torch.bool)
    background[:, :, 14:46, 22:62] = False
    assert psnr_db(out[background], clip[background]) >= 52.0


def test_a_jump_the_clip_recovers_from_is_not_held_into_drift():
    # At the join the colour jumps by 5 % and the piece drifts back by its end, as chained
    # renders do. The jump goes; the piece's end keeps its own colour (holding the correction
    # would shift it, and every later piece, by the jump).
    clean = S.clean_clip(S.ClipSpec(frames=32, height=64, width=96, pan=(1.0, 0.3)))
    clip = clean.clone()
    clip[16:] += 0.05 * torch.linspace(1, 0, 16).view(16, 1, 1, 1)
    only_seams = PostPassSettings(global_strength=0.0, local_strength=0.0, shimmer_strength=0.0)
    out, _ = run_postpass(clip, segments=[0, 16], settings=only_seams)
    assert float(lab_step(out)[15]) < 0.3 * float(lab_step(clip)[15])
    assert float((out[-1] - clip[-1]).abs().mean()) < 0.015   # holding: ~0.05
    persistent = S.chunk_seam(clean, at=16)   # a lasting tint is corrected to the end
    out, _ = run_postpass(persistent, segments=[0, 16], settings=only_seams)
    assert psnr_db(out[-4:], clean[-4:]) > psnr_db(persistent[-4:], clean[-4:]) + 10.0


def test_colour_shift_follows_the_majority_of_pixels():
    # 30 % of the pixels change (an object morphs); the rest are 2 code values brighter.
    a = torch.rand(1, 3, 32, 32) * 255
    b = a + 2.0
    b[..., :10, :] += 60.0
    valid = torch.ones(1, 1, 32, 32, dtype=torch.bool)
    pairs = AlignedPairs(a, b, b, torch.zeros(1, 2, 32, 32), valid, valid)
    assert colour_shift(pairs)[0].tolist() == pytest.approx([2.0, 2.0, 2.0], abs=1e-4)


def test_boundaries_on_a_clean_clip_leave_it_nearly_unchanged(pan):
    out, _ = run_postpass(pan, segments=[0, 5, 10])
    assert psnr_db(out, pan) >= 45.0


def test_a_given_boundary_is_never_a_cut():
    # New content at frame 8 reads as a shot cut; a segment start there is a continuation, so
    # the post-pass smooths across it and the report measures the pair across it.
    clip = S.clean_clip(S.ClipSpec(**SMALL, pan=(1.0, 0.0), cut_at=8))
    assert detect_boundaries(clip).cuts == [8]
    _, log = run_postpass(clip, segments=[0, 8])
    assert log.boundaries.cuts == [] and 8 in log.boundaries.seams
    assert log.analysis["given_seams"] == [8]
    assert math.isnan(compute_metrics(clip).per_frame["warp_mae"][7])   # a cut: not measured
    result = compute_metrics(clip, segments=[0, 8])
    assert result.boundaries.cuts == [] and not math.isnan(result.per_frame["warp_mae"][7])


def test_nodes_take_segments_as_their_last_optional_input(pan):
    for node in (VideoDiTFrameConsistency, VideoDiTConsistencyReport):
        optional = node.INPUT_TYPES()["optional"]
        assert list(optional)[-1] == "segments"
        assert optional["segments"][0] == "VIDEODIT_SEGMENTS"
    images = S.chunk_seam(pan, at=8, **SUBTLE).permute(0, 2, 3, 1).contiguous()
    segments = VideoSegments((0, 8), 16)
    repaired, summary = VideoDiTFrameConsistency().repair(images, segments=segments)
    assert "given_seams=[8]" in summary
    assert (repaired - images).abs().max() > 0.01
    returned = VideoDiTConsistencyReport().report(images, 16.0, segments=segments)
    report = json.loads(returned["result"][2])
    assert [b["frame"] for b in report["details"]["boundaries"]] == [8]
    assert "segment_drift_de" in {r["metric"] for r in report["metrics"]}


def test_a_cross_faded_seam_is_measured_over_its_ramp_and_repaired(pan):
    # The second piece takes over across frames 8..11, as a continued render's overlap does.
    seamed = S.chunk_seam(pan, at=8)
    clip = seamed.clone()
    weights = torch.arange(1, 5).div(5.0).view(4, 1, 1, 1)
    clip[8:12] = pan[8:12] * (1 - weights) + seamed[8:12] * weights
    segments = VideoSegments((0, 8), 16, overlap=4)
    result = compute_metrics(clip, segments=segments)
    (row,) = result.extras["boundaries"]
    assert row["ramp"] == 4
    whole = compute_metrics(seamed, segments=[0, 8]).extras["boundaries"][0]
    assert row["step_de"] < 0.5 * whole["step_de"]              # spread over the ramp...
    assert row["jump_de"] == pytest.approx(whole["jump_de"], rel=0.15)  # ...but all there
    assert row["verdict"] == whole["verdict"] == "fail"
    repaired, _ = run_postpass(clip, segments=segments)
    assert psnr_db(repaired, pan) > psnr_db(clip, pan) + 10.0


@pytest.mark.parametrize("segments,problem", [
    ((0, 8, 16), "outside the clip of 16 frames"),
    ((0, 8, 8), "must increase"),
    ((0, 9, 5), "must increase"),
    ((2, 8), "first segment must start at frame 0"),
    ((), "first segment must start at frame 0"),
    ((0, 4.5), "whole segment start frames"),
    (VideoSegments((0, 8, 16), 24), "describe a clip of 24 frames but the images have 16"),
])
def test_bad_boundaries_name_the_node_and_input(pan, segments, problem):
    images = pan.permute(0, 2, 3, 1).contiguous()
    for node, call in ((VideoDiTFrameConsistency, lambda n: n.repair(images, segments=segments)),
                       (VideoDiTConsistencyReport,
                        lambda n: n.report(images, 16.0, segments=segments))):
        with pytest.raises(InputError) as err:
            call(node())
        message = str(err.value)
        assert message.startswith(f"{node.DISPLAY_NAME} · segments:"), message
        assert problem in message and "Fix:" in message
