"""The consistency report: each metric flags its artefact and stays quiet on clean clips."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from comfyui_videodit.consistency import synthetic as S
from comfyui_videodit.consistency.metrics import (DESCRIPTIONS, METRICS, THRESHOLDS,
                                                  compute_metrics, flicker, verdict_of)
from comfyui_videodit.consistency.report import build_report, to_markdown
from comfyui_videodit.core.hooks import Hooks, SilentBar
from comfyui_videodit.errors import InputError, Interrupted
from comfyui_videodit.nodes.qc import VideoDiTConsistencyReport
from comfyui_videodit.runtime import progress

SMALL = dict(frames=16, height=64, width=96)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def metrics():
    static = S.clean_clip(S.ClipSpec(**SMALL, object_speed=(1.5, 0.3)))
    pan = S.clean_clip(S.ClipSpec(**SMALL, pan=(1.3, 0.4)))
    fade = S.clean_clip(S.ClipSpec(**SMALL, pan=(0.7, 0.0), fade=(1.0, 0.3)))
    clips = {
        "static": static, "pan": pan, "fade": fade,
        "global": S.global_flicker(static), "colour": S.colour_flicker(pan),
        "local": S.local_flicker(static), "seam": S.chunk_seam(pan, 8),
        "drift": S.drift(pan), "shimmer": S.shimmer(pan),
        "jitter": S.clean_clip(S.ClipSpec(**SMALL, pan=(1.3, 0.0), jitter=1.0)),
        "frozen": S.freeze(static),
    }
    return {name: compute_metrics(clip, fps=16.0) for name, clip in clips.items()}


CLEAN = ("static", "pan", "fade")


def test_flicker_formula():
    assert flicker(torch.linspace(0, 100, 30)) < 1e-4             # fades are not flicker
    jitter = 100 + 2.0 * torch.randn(4000, generator=torch.Generator().manual_seed(0))
    assert abs(float(flicker(jitter)) - 2.0) < 0.1                  # = sigma of iid jitter


@pytest.mark.parametrize("name", CLEAN)
def test_clean_clips_are_good_on_artefact_metrics(metrics, name):
    v = metrics[name].values
    for key in ("luma_flicker", "chroma_flicker", "struct_warp_mae", "ssim_aligned", "hf_pump",
                "seam_ratio", "motion_smooth"):
        assert verdict_of(key, v[key]) == "good", (name, key, v[key])
    assert metrics[name].dynamic


@pytest.mark.parametrize("name,key", [
    ("global", "luma_flicker"), ("global", "static_mae"), ("colour", "chroma_flicker"),
    ("local", "local_flicker"), ("local", "struct_warp_mae"), ("seam", "seam_ratio"),
    ("shimmer", "struct_warp_mae"), ("jitter", "motion_smooth"), ("global", "warp_mae"),
])
def test_each_artefact_fails_its_metric(metrics, name, key):
    assert verdict_of(key, metrics[name].values[key]) == "fail", metrics[name].values


def test_gain_compensation_separates_flicker_from_boiling(metrics):
    g, s = metrics["global"].values, metrics["shimmer"].values
    assert g["warp_mae"] > 3 and g["struct_warp_mae"] < 1.5     # photometric only
    assert s["struct_warp_mae"] > 3 and s["luma_flicker"] < 0.5  # texture boils


def test_fade_is_not_flicker_but_drift_is_reported(metrics):
    assert metrics["fade"].values["luma_flicker"] < 0.05
    assert verdict_of("drift_de", metrics["drift"].values["drift_de"]) == "warn"  # never fail


def test_seam_located(metrics):
    assert metrics["seam"].boundaries.seams == [8]


def test_an_invisible_step_in_a_calm_clip_is_no_seam_but_a_visible_one_is():
    """A deflickered or still clip has a tiny median step; a 1 dE step there is invisible and
    must not fail as a seam (it read as ratio 12), while a 5 dE step still fails."""
    g = torch.Generator().manual_seed(0)
    base = 0.45 + 0.1 * torch.rand(1, 3, 48, 48, generator=g)
    clip = base.repeat(24, 1, 1, 1) + 0.0005 * torch.randn(24, 3, 48, 48, generator=g)
    ratios = {}
    for step in (0.01, 0.05):   # about 1 and 5 dE on this grey
        stepped = clip.clone()
        stepped[12:] += step
        ratios[step] = compute_metrics(stepped.clamp(0, 1)).values["seam_ratio"]
    assert verdict_of("seam_ratio", ratios[0.01]) == "good"
    assert verdict_of("seam_ratio", ratios[0.05]) == "fail"


def test_frozen_clip_cannot_pass(metrics):
    frozen = metrics["frozen"]
    assert not frozen.dynamic
    report = build_report(frozen)
    assert report["score"] <= 0.6 and report["verdict"] != "good"
    moving = build_report(metrics["pan"])
    assert moving["score"] > 0.9


def test_report_node_outputs(metrics):
    clip = S.global_flicker(S.clean_clip(S.ClipSpec(**SMALL, pan=(1.0, 0.0), cut_at=9)))
    images = clip.permute(0, 2, 3, 1).contiguous()
    returned = VideoDiTConsistencyReport().report(images, 16.0)
    score, markdown, as_json, plot = returned["result"]
    (headline,) = returned["ui"]["text"]             # shown on the node and by the CLI
    assert headline.startswith(f"Consistency score {score:.2f} — FAIL") and "luma_flicker fail" in headline
    data = json.loads(as_json)
    assert 0.0 <= score <= 1.0 and data["score"] == pytest.approx(score)
    assert data["verdict"] == "fail"
    rows = {r["metric"]: r for r in data["metrics"]}
    assert rows["luma_flicker"]["verdict"] == "fail"
    assert rows["seam_ratio"]["verdict"] == "good"          # the cut is found, not a seam
    assert data["details"]["cuts"] == [9]
    assert data["worst_frames"] and all(w["frame"] != 9 for w in data["worst_frames"][:1])
    assert "| luma_flicker |" in markdown and "fail" in markdown
    assert plot.shape == (1, 600, 960, 3) and plot.dtype == torch.float32
    assert 0.0 <= float(plot.min()) and float(plot.max()) <= 1.0 and plot.std() > 0.05
    with pytest.raises(InputError, match="source"):
        VideoDiTConsistencyReport().report(images, 16.0, source=images[:4])
    with pytest.raises(InputError, match="at least 2 frames"):
        VideoDiTConsistencyReport().report(images[:1], 16.0)


def test_inside_comfyui_the_report_plot_is_shown_on_the_node(tmp_path, monkeypatch):
    """ComfyUI's editor draws an output node's ui "images" (temp folder) on the node, as it does
    for Preview Image; the plot's title carries the verdict. Standalone nothing is written."""
    from PIL import Image

    from comfyui_videodit.runtime import host, io_folders

    clip = S.global_flicker(S.clean_clip(S.ClipSpec(**SMALL, pan=(1.0, 0.0))))
    images = clip.permute(0, 2, 3, 1).contiguous()
    monkeypatch.setattr(io_folders, "_overrides", {**io_folders._overrides, "temp": tmp_path})
    standalone = VideoDiTConsistencyReport().report(images, 16.0)
    assert "images" not in standalone["ui"] and not list(tmp_path.iterdir())

    monkeypatch.setattr(host, "inside_comfyui", lambda: True)
    monkeypatch.setattr(io_folders, "comfy_module", lambda name: None)
    returned = VideoDiTConsistencyReport().report(images, 16.0)
    (entry,) = returned["ui"]["images"]
    assert entry["type"] == "temp" and entry["subfolder"] == ""
    shown = Image.open(tmp_path / entry["filename"])
    plot = returned["result"][3]
    assert shown.size == (plot.shape[2], plot.shape[1])
    assert (torch.from_numpy(np.array(shown.convert("RGB"))).float() / 255
            - plot[0]).abs().max() <= 0.5 / 255 + 1e-6


def test_source_flow_mode_judges_an_edit_along_the_source_motion():
    source = S.clean_clip(S.ClipSpec(**SMALL, pan=(1.3, 0.4)))
    edit = S.shimmer(source)  # edited frames whose texture boils
    with_source = compute_metrics(edit, flow_frames=source)
    assert with_source.extras["flow_source"] == "reference video"
    assert verdict_of("struct_warp_mae", with_source.values["struct_warp_mae"]) == "fail"
    clean_edit = compute_metrics(source, flow_frames=source)
    assert clean_edit.values["struct_warp_mae"] < 1.5
    assert "| warp_mae |" in to_markdown(build_report(with_source))


def test_every_metric_has_a_verdict_and_a_meaning(metrics):
    assert set(METRICS) == set(THRESHOLDS) == set(DESCRIPTIONS) - {"dynamic"}
    assert list(metrics["pan"].values) == list(METRICS)  # the report lists them in this order


def test_metrics_report_flow_progress_and_stop_on_cancel():
    clip = S.clean_clip(S.ClipSpec(frames=5, height=32, width=48, pan=(1.0, 0.0)))
    bars = []

    def progress_bar(total, desc):
        bar = SilentBar(total, desc)
        bars.append((desc, bar))
        return bar

    compute_metrics(clip, chunk_pairs=2, hooks=Hooks(progress=progress_bar))
    assert [(desc, bar.value) for desc, bar in bars] == [("report: optical flow", 2)]

    def cancelled():
        raise Interrupted("cancelled by the user")

    with pytest.raises(Interrupted):
        compute_metrics(clip, hooks=Hooks(check_interrupt=cancelled))


def test_report_node_stops_on_the_hosts_cancel():
    clip = S.clean_clip(S.ClipSpec(frames=4, height=32, width=48, pan=(1.0, 0.0)))
    progress.request_interrupt()  # what the CLI does on Ctrl-C
    try:
        with pytest.raises(Interrupted):
            VideoDiTConsistencyReport().report(clip.permute(0, 2, 3, 1).contiguous())
    finally:
        progress.clear_interrupt()
