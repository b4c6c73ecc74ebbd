"""Shot cuts and chunk seams: where temporal smoothing must stop (cuts) or repair (seams).

A *cut* changes the content: consecutive frames, each normalised to zero mean and unit std at
low resolution (so flicker does not count), differ as much as unrelated images do. A *seam*
keeps the content but jumps in colour: the Lab mean step is far above the clip's typical step.
Where the renderer says its segments begin, those frames are seams whatever the detector sees:
a continuation is the same shot, so smoothing must run across it, never stop at it.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .color import auto_border, frame_lab_means
from .flow import normalised_grey

# Unrelated unit-variance images differ by E|x - y| = 2/sqrt(pi) ~ 1.13; a pan of a pixel at
# 32 px resolution stays well below 0.5.
CUT_CONTENT_FLOOR = 0.6
CUT_CONTENT_RATIO = 4.0
SEAM_STEP_RATIO = 8.0      # step dE > 8 x median step (REFERENCE calibration)
SEAM_STEP_FLOOR = 2.0      # and > 2 dE (a just-visible colour jump)


@dataclass
class Boundaries:
    cuts: list[int] = field(default_factory=list)   # t: a new shot starts at frame t
    seams: list[int] = field(default_factory=list)  # t: a colour jump between t-1 and t
    given: list[int] = field(default_factory=list)  # t: a rendered segment starts (a seam)
    overlap: int = 0                                # frames cross-faded at each given start
    step_de: torch.Tensor | None = None             # [T-1] Lab-mean step (dE76)
    content: torch.Tensor | None = None             # [T-1] normalised content difference

    def ramp(self, start: int, frames: int) -> range:
        """Frames ``t`` whose pair (t-1, t) belongs to the seam at ``start``: the cross-faded
        frames and the first one after them, where the new piece has fully taken over."""
        return range(start, min(start + self.overlap + 1, frames))

    def repair_frames(self, frames: int) -> list[int]:
        """Seams to correct one pair at a time: detected ones and every pair of a given ramp."""
        ramps = {t for g in self.given for t in self.ramp(g, frames)}
        return sorted(set(self.seams) | ramps)

    def segments(self, frames: int) -> list[tuple[int, int]]:
        """``[start, stop)`` ranges between cuts (seams do not split: they are repaired)."""
        edges = [0] + sorted(c for c in self.cuts if 0 < c < frames) + [frames]
        return [(a, b) for a, b in zip(edges[:-1], edges[1:]) if b > a]


def content_difference(frames: torch.Tensor, size: int = 32) -> torch.Tensor:
    """``[T-1]`` mean |difference| of consecutive low-res, per-frame normalised grey frames."""
    h, w = frames.shape[-2:]
    scale = size / min(h, w)
    small = F.interpolate(frames.float(), size=(max(8, round(h * scale)), max(8, round(w * scale))),
                          mode="area") if scale < 1 else frames.float()
    g = normalised_grey(small) / 48.0
    return (g[1:] - g[:-1]).abs().mean(dim=(1, 2, 3))


def detect_boundaries(frames: torch.Tensor, lab_means: torch.Tensor | None = None, *,
                      known_seams: Sequence[int] = (), overlap: int = 0) -> Boundaries:
    """Cuts and seams of ``frames``. ``known_seams`` (segment starts, validated) are seams, and
    no frame of their ``overlap`` cross-fade is taken for a cut."""
    t = frames.shape[0]
    given = sorted(known_seams)
    known = Boundaries(given=given, overlap=overlap)
    no_cut = set(known.repair_frames(t))
    if t < 2:
        return Boundaries(given=given, overlap=overlap, step_de=torch.zeros(0),
                          content=torch.zeros(0))
    if lab_means is None:
        lab_means = frame_lab_means(frames, auto_border(*frames.shape[-2:]))
    step = (lab_means[1:] - lab_means[:-1]).norm(dim=1).cpu()
    content = content_difference(frames).cpu()
    med_content = content.median() if content.numel() else torch.tensor(0.0)
    cuts = [i + 1 for i in range(t - 1)
            if content[i] > CUT_CONTENT_FLOOR and content[i] > CUT_CONTENT_RATIO * med_content
            and (i + 1) not in no_cut]
    med_step = step.median().clamp_min(0.05)
    seams = [i + 1 for i in range(t - 1)
             if (i + 1) in given or ((i + 1) not in cuts and step[i] > SEAM_STEP_FLOOR
                                     and step[i] > SEAM_STEP_RATIO * med_step)]
    return Boundaries(cuts=cuts, seams=seams, given=given, overlap=overlap, step_de=step,
                      content=content)
