"""Write example_workflows/<name>.jpg, the preview ComfyUI's template browser shows beside each
workflow of the same name.

The demo workflows run as shipped (headless, on the bundled demo model) and their preview is the
middle frame of the video they make, scaled up from 64 px. The real-model workflows need weights
that are not here, so their preview is a title card: the workflow's title and one line on what
it does.

Run: python scripts/build_thumbnails.py [--renders DIR]
  --renders DIR  keep the demo renders in DIR (default: a temporary folder) and reuse a render
                 already there instead of running the workflow again.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import av
from PIL import Image, ImageDraw, ImageFont

EXAMPLES = Path(__file__).resolve().parent.parent / "example_workflows"
SIZE = 256
QUALITY = 85

DEMOS = ("demo_text_to_video", "demo_image_to_video", "demo_video_edit", "demo_long_video")

# Title cards for the workflows that need real Wan weights: (title, one-line description).
CARDS = {
    "text_to_video_wan21_1.3B": ("Wan 2.1 1.3B", "Text to video, 832x480, 81 frames"),
    "text_to_video_wan22_a14b_4step_lora": ("Wan 2.2 A14B 4-step",
                                            "Text to video with two experts and step-distill LoRAs"),
    "image_to_video_wan22_5B": ("Wan 2.2 5B", "Image to video, 1280x704, 121 frames"),
    "video_edit_sdedit_wan21_1.3B": ("Wan 2.1 1.3B SDEdit", "Video edit: restyle a clip by partial denoising"),
    "video_edit_flowedit_wan21_1.3B": ("Wan 2.1 1.3B FlowEdit", "Video edit: change what a prompt names, keep the rest"),
    "vace_inpaint_wan21_1.3B": ("Wan 2.1 VACE 1.3B", "Inpaint: remove an object marked by a mask video"),
    "vace_outpaint_wan21_1.3B": ("Wan 2.1 VACE 1.3B", "Outpaint: widen a clip to 832x480"),
    "vace_control_video_wan21_14B": ("Wan 2.1 VACE 14B", "Follow a pose or depth control video"),
    "vace_reference_to_video_wan21_1.3B": ("Wan 2.1 VACE 1.3B", "Reference image to video"),
}
CARD_BACKGROUND = (28, 32, 40)
CARD_ACCENT = (86, 156, 214)
CARD_TEXT = (235, 235, 235)
CARD_DIM = (170, 176, 186)


def render_demo(name: str, renders: Path) -> Path:
    """The video the demo workflow makes (run headless unless already rendered into renders)."""
    folder = renders / name
    videos = sorted(folder.rglob("*.mp4"))
    if not videos:
        subprocess.run([sys.executable, "-m", "comfyui_videodit", "run",
                        str(EXAMPLES / f"{name}.json"), "--output-dir", str(folder)], check=True)
        videos = sorted(folder.rglob("*.mp4"))
    return videos[-1]


def middle_frame(video: Path) -> Image.Image:
    with av.open(str(video)) as container:
        frames = [frame.to_image() for frame in container.decode(video=0)]
    return frames[len(frames) // 2].convert("RGB")


def demo_thumbnail(video: Path) -> Image.Image:
    frame = middle_frame(video)
    height = round(SIZE * frame.height / frame.width)
    return frame.resize((SIZE, height), Image.Resampling.BICUBIC)


def title_card(title: str, description: str) -> Image.Image:
    card = Image.new("RGB", (SIZE, SIZE), CARD_BACKGROUND)
    draw = ImageDraw.Draw(card)
    draw.rectangle((0, 0, SIZE, 6), fill=CARD_ACCENT)
    title_font = ImageFont.load_default(size=26)
    text_font = ImageFont.load_default(size=16)
    y = 70
    for line in textwrap.wrap(title, 16):
        draw.text((18, y), line, font=title_font, fill=CARD_TEXT)
        y += 32
    y += 12
    for line in textwrap.wrap(description, 26):
        draw.text((18, y), line, font=text_font, fill=CARD_DIM)
        y += 21
    draw.text((18, SIZE - 34), "VideoDiT  -  needs Wan weights", font=ImageFont.load_default(size=13),
              fill=CARD_ACCENT)
    return card


def save(image: Image.Image, name: str) -> None:
    path = EXAMPLES / f"{name}.jpg"
    image.save(path, "JPEG", quality=QUALITY, optimize=True)
    print(f"wrote example_workflows/{path.name} ({path.stat().st_size} bytes)")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--renders", type=Path, help="keep and reuse the demo renders here")
    args = parser.parse_args(argv)
    missing = {p.stem for p in EXAMPLES.glob("*.json")} - set(DEMOS) - set(CARDS)
    if missing:
        parser.error(f"no thumbnail recipe for {sorted(missing)}: add it to DEMOS or CARDS")
    with tempfile.TemporaryDirectory() as scratch:
        renders = args.renders or Path(scratch)
        for name in DEMOS:
            save(demo_thumbnail(render_demo(name, renders)), name)
    for name, (title, description) in CARDS.items():
        save(title_card(title, description), name)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
