"""The classical optical-flow estimator: accuracy on known warps, robustness, masks, chunking."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from comfyui_videodit.consistency import synthetic
from comfyui_videodit.consistency.flow import (base_grid, clip_flows, compose, estimate_flow,
                                               occlusion_mask, warp)
from comfyui_videodit.core.hooks import Hooks, SilentBar
from comfyui_videodit.errors import Interrupted


pytestmark = pytest.mark.usefixtures("one_thread")


def affine_pair(h, w, seed, *, angle_deg=2.0, scale=1.02, shift=(1.3, -0.7)):
    """(source, target, true flow): source(p) = target(p + flow(p)) for an affine flow."""
    g = torch.Generator().manual_seed(seed)
    big = synthetic.texture(3 * h, 3 * w, generator=g)
    grid = base_grid(h, w, "cpu")
    x, y = grid[:, 0] - w / 2, grid[:, 1] - h / 2
    c, s = scale * math.cos(math.radians(angle_deg)), scale * math.sin(math.radians(angle_deg))
    flow = torch.stack((c * x - s * y + w / 2 - grid[:, 0] + shift[0],
                        s * x + c * y + h / 2 - grid[:, 1] + shift[1]), 1)

    def sample(f):
        pos = grid + f
        gx = (pos[:, 0] + w) * 2 / (3 * w - 1) - 1
        gy = (pos[:, 1] + h) * 2 / (3 * h - 1) - 1
        return F.grid_sample(big, torch.stack((gx, gy), -1), mode="bicubic",
                             align_corners=True)

    return sample(flow), sample(torch.zeros_like(flow)), flow


def epe(estimate, truth, margin=8):
    return float(((estimate - truth) ** 2).sum(1).sqrt()[:, margin:-margin, margin:-margin].mean())


@pytest.mark.parametrize("size,seed", [((64, 96), 0), ((64, 96), 1), ((96, 128), 2)])
def test_affine_end_point_error_below_a_tenth_of_a_pixel(size, seed):
    source, target, truth = affine_pair(*size, seed)
    estimate = estimate_flow(source, target)
    assert epe(estimate, truth) < 0.1
    # and the warp built on it lines the frames up
    aligned = warp(target, estimate)
    assert float((aligned - source).abs()[..., 8:-8, 8:-8].mean()) < 0.004


def test_flow_ignores_gain_flicker_between_frames():
    source, target, truth = affine_pair(64, 96, 3)
    flickered = (target * 1.12 + 0.03).clamp(0, 1)
    assert epe(estimate_flow(source, flickered), truth) < 0.1


def test_batched_flow_equals_one_pair_at_a_time():
    a1, b1, _ = affine_pair(64, 96, 4)
    a2, b2, _ = affine_pair(64, 96, 5, angle_deg=-1.0, shift=(0.5, 0.5))
    both = estimate_flow(torch.cat((a1, a2)), torch.cat((b1, b2)))
    assert torch.allclose(both[1:], estimate_flow(a2, b2), atol=1e-4)


def test_occlusion_mask_flags_what_a_moving_object_uncovers():
    clip = synthetic.clean_clip(synthetic.ClipSpec(frames=2, height=64, width=96,
                                                   object_speed=(4.0, 0.0), object_size=0.4))
    fwd = estimate_flow(clip[:1], clip[1:])
    bwd = estimate_flow(clip[1:], clip[:1])
    valid = occlusion_mask(fwd, bwd)[0, 0]
    side = int(0.4 * 64)
    x0 = int(96 * 0.2)
    # the background the object covers between frames 0 and 1 has no match; the LK window
    # spreads the object's motion a few pixels ahead, so the flagged band sits just beyond
    covered = valid[28:36, x0 + side + 2:x0 + side + 12]
    assert covered.float().mean() < 0.3
    # inside the object and far from it, flow is trusted
    assert valid[28:36, x0 + 8:x0 + side - 8].float().mean() > 0.9
    assert valid[8:56, 75:90].float().mean() > 0.9


def test_clip_flows_chunks_store_fp16_and_agree():
    clip = synthetic.clean_clip(synthetic.ClipSpec(frames=6, height=48, width=64, pan=(1.2, 0.5)))
    small = clip_flows(clip, chunk_pairs=2)
    whole = clip_flows(clip, chunk_pairs=8)
    assert small.forward.dtype == torch.float16 and small.forward.shape == (5, 2, 48, 64)
    assert torch.allclose(small.forward.float(), whole.forward.float(), atol=2e-3)
    # the camera pans right, so content moves left
    inner = small.forward.float()[..., 8:-8, 8:-8]
    assert abs(float(inner[:, 0].mean()) + 1.2) < 0.05
    assert abs(float(inner[:, 1].mean()) + 0.5) < 0.05
    # composing two consecutive flows gives the two-frame displacement
    two = compose(small.forward[:1], small.forward[1:2])[..., 8:-8, 8:-8]
    assert abs(float(two[:, 0].mean()) + 2.4) < 0.1


def test_cancel_is_honoured_between_flow_chunks():
    clip = synthetic.clean_clip(synthetic.ClipSpec(frames=5, height=32, width=48))
    chunks_started = []

    def cancel_in_second_chunk():
        chunks_started.append(1)
        if len(chunks_started) == 2:
            raise Interrupted("cancelled by the user")

    with pytest.raises(Interrupted):
        clip_flows(clip, chunk_pairs=1, hooks=Hooks(check_interrupt=cancel_in_second_chunk))
    assert len(chunks_started) == 2  # stopped where asked, not after the last chunk


def test_flow_progress_advances_once_per_chunk():
    clip = synthetic.clean_clip(synthetic.ClipSpec(frames=5, height=32, width=48))
    bars = []

    def progress(total, desc):
        bar = SilentBar(total, desc)
        bars.append((desc, bar))
        return bar

    clip_flows(clip, chunk_pairs=2, progress_desc="flow", hooks=Hooks(progress=progress))
    assert [(desc, bar.total, bar.value) for desc, bar in bars] == [("flow", 2, 2)]
