"""Write docs/demo.gif: clips the bundled demo model makes from held-out prompts.

Run: python scripts/build_demo_gif.py   (prints the prompts, left to right)
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from comfyui_videodit.demo.evaluate import DemoPipeline, held_out_specs

OUT = Path(__file__).resolve().parent.parent / "docs" / "demo.gif"
CLIPS, SCALE, GAP = 5, 2, 4


def main() -> int:
    from PIL import Image

    pipeline = DemoPipeline()
    videos = []
    for i, clip in enumerate(held_out_specs(CLIPS, seed=7)):
        print(f"{i + 1}. {clip.caption}")
        video = pipeline.text_to_video(clip.caption, seed=i)  # [T, H, W, 3]
        videos.append(video.repeat_interleave(SCALE, 1).repeat_interleave(SCALE, 2))
    frames, height, width, _ = videos[0].shape
    strip = torch.ones(frames, height, CLIPS * width + (CLIPS - 1) * GAP, 3)
    for i, video in enumerate(videos):
        x = i * (width + GAP)
        strip[:, :, x:x + width] = video
    images = [Image.fromarray(f.clamp(0, 1).mul(255).round().to(torch.uint8).numpy())
              for f in strip]
    OUT.parent.mkdir(exist_ok=True)
    images[0].save(OUT, save_all=True, append_images=images[1:], duration=1000 // 16, loop=0,
                   optimize=True)
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
