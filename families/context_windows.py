"""Context windows as a model patch: any sampler can then denoise latents longer than the
model's window (the fusion itself is in ``core/context_windows.py``)."""
from __future__ import annotations

from ..core.context_windows import WindowLayout, latent_frames, windowed_velocity
from ..core.run_info import RunInfo
from .model import ModelPatch, Velocity, VideoModel


class ContextWindows(ModelPatch):
    name = "context windows"

    def __init__(self, window_frames: int, overlap_frames: int, temporal_factor: int):
        """Window and overlap in video frames (4k+1), as the user gives them."""
        self.window_frames = int(window_frames)
        self.overlap_frames = int(overlap_frames)
        self.layout = WindowLayout(latent_frames(self.window_frames, temporal_factor),
                                   latent_frames(self.overlap_frames, temporal_factor))

    def wrap_velocity(self, velocity: Velocity, model: VideoModel, run: RunInfo) -> Velocity:
        return windowed_velocity(velocity, self.layout)

    def describe(self) -> str:
        return (f"context windows ({self.window_frames} frames, overlap {self.overlap_frames}; "
                f"latent {self.layout.window}/{self.layout.overlap})")
