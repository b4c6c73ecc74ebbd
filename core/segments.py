"""VIDEODIT_SEGMENTS: where the separately rendered pieces of a long clip begin.

A clip longer than one model window is made in pieces (continued segments, or context windows
inside one sampling run). Colour and texture can jump where one piece takes over from the
next, so the consistency post-pass and report take these boundaries instead of guessing them.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VideoSegments:
    starts: tuple[int, ...]   # output frame where each piece begins; the first is 0
    frames: int               # frames of the whole clip
    # Frames at each start that the piece shares with the one before (cross-faded), so a
    # boundary is a ramp of this many frames rather than a cut; 0 when pieces only butt.
    overlap: int = 0

    def __post_init__(self):
        starts = tuple(int(s) for s in self.starts)
        if not starts or starts[0] != 0 or any(b <= a for a, b in zip(starts, starts[1:])):
            raise ValueError(f"segment starts must begin at 0 and increase, got {starts}")
        if starts[-1] >= self.frames:
            raise ValueError(f"segment start {starts[-1]} is outside a clip of {self.frames} "
                             "frames")
        object.__setattr__(self, "starts", starts)

    @property
    def boundaries(self) -> tuple[int, ...]:
        """Every start but the leading 0: the frames where a new piece takes over."""
        return self.starts[1:]
