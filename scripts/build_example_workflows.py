"""Write example_workflows/*.json (UI format, as ComfyUI saves) and their API twins in api/.

The graphs are described compactly below; widget order, sockets and the seed's extra
control value come from the live node definitions, so the files always match the nodes.
Run: python scripts/build_example_workflows.py [--inputs]   (--inputs: render the demo input
media in example_workflows/input/ again even if present)
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from comfyui_videodit import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from comfyui_videodit.cli.node_info import (has_control_widget, has_upload_widget, input_spec,
                                            is_widget, object_info, ordered_inputs)
from comfyui_videodit.cli.workflow_format import ui_to_api

OUT = Path(__file__).resolve().parent.parent / "example_workflows"
INFO = object_info(NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS)

NEGATIVE = ("blurry, low quality, static, still frame, jpeg artifacts, deformed, extra fingers, "
            "watermark, subtitles, overexposed, worst quality")

WHERE_FILES_GO = """Model files for this workflow (put them into ComfyUI/models/...):
{files}
All are the official ComfyUI repackaged releases (Comfy-Org/Wan_2.1_ComfyUI_repackaged and
Comfy-Org/Wan_2.2_ComfyUI_Repackaged on Hugging Face). Measured needs: see the pack's README."""


def note(text: str) -> dict:
    return {"type": "Note", "widgets": [text], "inputs": {}}


def files_note(*entries: tuple[str, str]) -> dict:
    return note(WHERE_FILES_GO.format(files="\n".join(f"- {folder}/{name}" for folder, name in entries)))


# Layout, in the editor's units (LiteGraph): a node's title bar (30 px) sits above its `pos`;
# `size` is the body below it: one 20 px row per socket (inputs and outputs side by side),
# then the widgets. Sizes are estimated generously from the node definition, so no widget is
# cut off, and the grid's columns and rows are as wide and tall as their largest node, so no
# node covers another (tests/test_examples.py checks both).
TITLE_HEIGHT = 30
SLOT_HEIGHT = 20
WIDGET_HEIGHT = 24      # one-line widget plus spacing
TEXT_BOX_HEIGHT = 100   # multiline text widget
PREVIEW_HEIGHT = 240    # room for an output node's preview (video, text)
NOTE_SIZE = [420, 240]
GAP = 40
COLUMNS = 4


def node_size(kind: str) -> list[int]:
    if kind == "Note":
        return list(NOTE_SIZE)
    info = INFO[kind]
    sockets = lines = boxes = 0
    for name in ordered_inputs(info):
        _, socket, options = input_spec(info, name)
        if not is_widget(socket, options):
            sockets += 1
        elif options.get("multiline"):
            boxes += 1
        else:
            lines += 1 + has_control_widget(name, socket, options) + has_upload_widget(socket, options)
    height = SLOT_HEIGHT * max(sockets, len(info["output"]), 1) + 10
    height += WIDGET_HEIGHT * lines + TEXT_BOX_HEIGHT * boxes + 10
    if info.get("output_node"):
        height += PREVIEW_HEIGHT
    return [400 if boxes else 340, height]


def grid_positions(sizes: list[list[int]]) -> list[list[int]]:
    """Top-left `pos` of each node, filling rows of COLUMNS left to right."""
    widths = [max(s[0] for s in sizes[c::COLUMNS]) for c in range(min(COLUMNS, len(sizes)))]
    rows = [sizes[r:r + COLUMNS] for r in range(0, len(sizes), COLUMNS)]
    xs = [40 + sum(wd + GAP for wd in widths[:c]) for c in range(len(widths))]
    ys, y = [], 40 + TITLE_HEIGHT
    for row in rows:
        ys.append(y)
        y += max(s[1] for s in row) + TITLE_HEIGHT + GAP
    return [[xs[i % COLUMNS], ys[i // COLUMNS]] for i in range(len(sizes))]


def build_ui(nodes: dict[int, dict]) -> dict:
    """nodes: id -> {type, widgets: {name: value} | [values], inputs: {name: (src_id, slot)}}"""
    ui_nodes, links = [], []
    outgoing: dict[tuple[int, int], list[int]] = {}
    for node_id, spec in nodes.items():
        for name, (src, slot) in spec["inputs"].items():
            link_id = len(links) + 1
            links.append([link_id, src, slot, node_id, name, None])
            outgoing.setdefault((src, slot), []).append(link_id)
    sizes = [node_size(spec["type"]) for spec in nodes.values()]
    positions = grid_positions(sizes)
    for order, (node_id, spec) in enumerate(nodes.items()):
        kind = spec["type"]
        ui = {"id": node_id, "type": kind, "pos": positions[order], "size": sizes[order], "flags": {},
              "order": order, "mode": 0, "inputs": [], "outputs": [],
              "properties": {"Node name for S&R": kind}, "widgets_values": []}
        if "title" in spec:
            ui["title"] = spec["title"]
        if kind == "Note":
            ui["widgets_values"] = list(spec["widgets"])
            ui_nodes.append(ui)
            continue
        info = INFO[kind]
        for name in ordered_inputs(info):
            _, socket, options = input_spec(info, name)
            if name in spec["inputs"]:
                link = next(l for l in links if l[3] == node_id and l[4] == name)
                ui["inputs"].append({"name": name, "type": socket if isinstance(socket, str) else "COMBO",
                                     "link": link[0]})
            elif is_widget(socket, options):
                value = spec["widgets"][name] if name in spec["widgets"] else options.get("default")
                if value is None and isinstance(socket, list):
                    raise KeyError(f"{kind}.{name} needs a value")
                ui["widgets_values"].append(value)
                if has_control_widget(name, socket, options):
                    ui["widgets_values"].append(spec.get("control", "fixed"))
        for slot, (out_type, out_name) in enumerate(zip(info["output"], info["output_name"])):
            ui["outputs"].append({"name": out_name, "type": out_type, "slot_index": slot,
                                  "links": outgoing.get((node_id, slot), [])})
        ui_nodes.append(ui)
    for link in links:  # the type of each link is the output type at its source
        src = next(n for n in ui_nodes if n["id"] == link[1])
        link[5] = src["outputs"][link[2]]["type"]
        dst = next(n for n in ui_nodes if n["id"] == link[3])
        link[4] = next(i for i, inp in enumerate(dst["inputs"]) if inp["link"] == link[0])
    return {"last_node_id": max(nodes), "last_link_id": len(links), "nodes": ui_nodes,
            "links": links, "groups": [], "config": {}, "extra": {"ds": {"scale": 1, "offset": [0, 0]}},
            "version": 0.4}


def w(kind: str, inputs: dict | None = None, **widgets) -> dict:
    control = widgets.pop("control", None)
    title = widgets.pop("title", None)
    spec = {"type": kind, "widgets": widgets, "inputs": inputs or {}}
    if control:
        spec["control"] = control
    if title:
        spec["title"] = title
    return spec


def text_to_video() -> dict:
    return {
        1: files_note(("diffusion_models", "wan2.1_t2v_1.3B_fp16.safetensors"),
                      ("text_encoders", "umt5_xxl_fp8_e4m3fn_scaled.safetensors"),
                      ("vae", "wan_2.1_vae.safetensors")),
        2: w("VideoDiTModelLoader", model_name="wan2.1_t2v_1.3B_fp16.safetensors"),
        3: w("VideoDiTTextEncoderLoader", text_encoder_name="umt5_xxl_fp8_e4m3fn_scaled.safetensors"),
        4: w("VideoDiTTextEncode", {"text_encoder": (3, 0)},
             positive="A red fox trots through fresh snow in a birch forest, morning light, "
                      "the camera tracks alongside it.", negative=NEGATIVE),
        5: w("VideoDiTVAELoader", vae_name="wan_2.1_vae.safetensors"),
        6: w("VideoDiTEmptyLatent", {"vae": (5, 0)}, width=832, height=480, length=81),
        7: w("VideoDiTSampler", {"model": (2, 0), "conditioning": (4, 0), "latent": (6, 0)},
             seed=42, control="randomize", steps=30, cfg=6.0, shift=8.0),
        8: w("VideoDiTVAEDecode", {"vae": (5, 0), "latent": (7, 0)}),
        9: w("VideoDiTSaveVideo", {"images": (8, 0)}, fps=16.0, filename_prefix="videodit/t2v"),
    }


A14B_4STEP_NOTE = """Wan 2.2 A14B text-to-video in 4 steps: each expert gets its own step-distill
LoRA (lightx2v's Wan2.2-Lightning T2V v1.1, https://huggingface.co/lightx2v/Wan2.2-Lightning,
repackaged for ComfyUI by Comfy-Org). cfg 1 (one model pass per step: no negative-prompt pass),
sampler euler, shift 5: the 4 noise levels are 1.0, 0.94, 0.83 and 0.63, so the high-noise
expert runs the first two (above the 0.875 boundary) and the low-noise expert the last two.
Put the high_noise LoRA on the high-noise model and the low_noise LoRA on the low-noise model.

Model files (put them into ComfyUI/models/...):
- diffusion_models/wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors
- diffusion_models/wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors
- loras/wan2.2_t2v_lightx2v_4steps_lora_v1.1_high_noise.safetensors
- loras/wan2.2_t2v_lightx2v_4steps_lora_v1.1_low_noise.safetensors
  (these four: Comfy-Org/Wan_2.2_ComfyUI_Repackaged on Hugging Face, split_files/...)
- text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors
- vae/wan_2.1_vae.safetensors
  (these two: Comfy-Org/Wan_2.1_ComfyUI_repackaged, split_files/...)
The fp8 experts keep their weights in fp8; the LoRAs are added beside them on the fly (see the
pack's README, LoRA section)."""


def text_to_video_a14b_4step_lora() -> dict:
    high_lora = "wan2.2_t2v_lightx2v_4steps_lora_v1.1_high_noise.safetensors"
    low_lora = "wan2.2_t2v_lightx2v_4steps_lora_v1.1_low_noise.safetensors"
    return {
        1: note(A14B_4STEP_NOTE),
        2: w("VideoDiTModelLoader", model_name="wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors",
             title="High-noise expert"),
        3: w("VideoDiTModelLoader", model_name="wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors",
             title="Low-noise expert"),
        4: w("VideoDiTLoraLoader", {"model": (2, 0)}, lora_name=high_lora, strength=1.0,
             title="High-noise 4-step LoRA"),
        5: w("VideoDiTLoraLoader", {"model": (3, 0)}, lora_name=low_lora, strength=1.0,
             title="Low-noise 4-step LoRA"),
        6: w("VideoDiTTextEncoderLoader", text_encoder_name="umt5_xxl_fp8_e4m3fn_scaled.safetensors"),
        7: w("VideoDiTTextEncode", {"text_encoder": (6, 0)},
             positive="A red fox trots through fresh snow in a birch forest, morning light, "
                      "the camera tracks alongside it.", negative=""),
        8: w("VideoDiTVAELoader", vae_name="wan_2.1_vae.safetensors"),
        9: w("VideoDiTEmptyLatent", {"vae": (8, 0)}, width=832, height=480, length=81),
        10: w("VideoDiTSampler", {"model": (4, 0), "conditioning": (7, 0), "latent": (9, 0),
                                  "model_low_noise": (5, 0)},
              seed=42, control="randomize", steps=4, cfg=1.0, shift=5.0, sampler="euler"),
        11: w("VideoDiTVAEDecode", {"vae": (8, 0), "latent": (10, 0)}),
        12: w("VideoDiTSaveVideo", {"images": (11, 0)}, fps=16.0,
              filename_prefix="videodit/t2v_a14b_4step"),
    }


def image_to_video() -> dict:
    return {
        1: files_note(("diffusion_models", "wan2.2_ti2v_5B_fp16.safetensors"),
                      ("text_encoders", "umt5_xxl_fp8_e4m3fn_scaled.safetensors"),
                      ("vae", "wan2.2_vae.safetensors")),
        2: w("VideoDiTModelLoader", model_name="wan2.2_ti2v_5B_fp16.safetensors"),
        3: w("VideoDiTTextEncoderLoader", text_encoder_name="umt5_xxl_fp8_e4m3fn_scaled.safetensors"),
        4: w("VideoDiTTextEncode", {"text_encoder": (3, 0)},
             positive="The lighthouse keeper opens the door and steps out into the wind, waves "
                      "crash below.", negative=NEGATIVE),
        5: w("VideoDiTVAELoader", vae_name="wan2.2_vae.safetensors"),
        6: w("VideoDiTLoadVideo", video="example_start_frame.png"),
        7: w("VideoDiTImageToVideo", {"conditioning": (4, 0), "vae": (5, 0), "start_image": (6, 0)},
             width=1280, height=704, length=121),
        8: w("VideoDiTSampler", {"model": (2, 0), "conditioning": (7, 0), "latent": (7, 1)},
             seed=7, control="randomize", steps=30, cfg=5.0, shift=5.0),
        9: w("VideoDiTVAEDecode", {"vae": (5, 0), "latent": (8, 0)}, tiled=True),
        10: w("VideoDiTSaveVideo", {"images": (9, 0)}, fps=24.0, filename_prefix="videodit/i2v"),
    }


def _edit_head(prefix: str) -> dict:
    return {
        1: files_note(("diffusion_models", "wan2.1_t2v_1.3B_fp16.safetensors"),
                      ("text_encoders", "umt5_xxl_fp8_e4m3fn_scaled.safetensors"),
                      ("vae", "wan_2.1_vae.safetensors")),
        2: w("VideoDiTModelLoader", model_name="wan2.1_t2v_1.3B_fp16.safetensors"),
        3: w("VideoDiTTextEncoderLoader", text_encoder_name="umt5_xxl_fp8_e4m3fn_scaled.safetensors"),
        5: w("VideoDiTVAELoader", vae_name="wan_2.1_vae.safetensors"),
        6: w("VideoDiTLoadVideo", video="example_source_clip.mp4", frame_limit=81, force_fps=16.0,
             size_multiple=16),
        7: w("VideoDiTVAEEncode", {"vae": (5, 0), "images": (6, 0)}),
    }


def video_edit_sdedit() -> dict:
    nodes = _edit_head("sdedit")
    nodes.update({
        4: w("VideoDiTTextEncode", {"text_encoder": (3, 0)},
             positive="A watercolor painting of a city street at dusk, soft washes of color.",
             negative=NEGATIVE),
        8: w("VideoDiTSampler", {"model": (2, 0), "conditioning": (4, 0), "latent": (7, 0)},
             seed=3, control="fixed", steps=30, cfg=5.0, shift=3.0, denoise=0.5),
        9: w("VideoDiTVAEDecode", {"vae": (5, 0), "latent": (8, 0)}),
        10: w("VideoDiTFrameConsistency", {"images": (9, 0), "reference": (6, 0)}),
        11: w("VideoDiTSaveVideo", {"images": (10, 0)}, fps=16.0, filename_prefix="videodit/sdedit"),
    })
    return dict(sorted(nodes.items()))


def video_edit_flowedit() -> dict:
    nodes = _edit_head("flowedit")
    nodes.update({
        4: w("VideoDiTTextEncode", {"text_encoder": (3, 0)},
             positive="A red car drives along a coastal road.", negative=NEGATIVE),
        12: w("VideoDiTTextEncode", {"text_encoder": (3, 0)},
              positive="A blue car drives along a coastal road.", negative=NEGATIVE),
        8: w("VideoDiTFlowEditSampler", {"model": (2, 0), "source_conditioning": (4, 0),
                                         "target_conditioning": (12, 0), "source_latent": (7, 0)},
             seed=3, control="fixed", steps=30, source_cfg=3.0, target_cfg=6.0, shift=3.0,
             skip_steps=8),
        9: w("VideoDiTVAEDecode", {"vae": (5, 0), "latent": (8, 0)}),
        10: w("VideoDiTFrameConsistency", {"images": (9, 0), "reference": (6, 0)}),
        11: w("VideoDiTSaveVideo", {"images": (10, 0)}, fps=16.0, filename_prefix="videodit/flowedit"),
    })
    return dict(sorted(nodes.items()))


DEMO_NOTE = """Runs as is, in ComfyUI or headless, on CPU in seconds: the bundled demo model
(a tiny Wan-architecture DiT, VAE and umT5 trained on procedural clips of coloured shapes)
makes 64x64 clips of 17 frames. Its files ship in the pack's demo_models/ folder and the
loaders list them as videodit-demo/demo_dit.safetensors (diffusion_models),
videodit-demo/demo_umt5.safetensors (text_encoders) and videodit-demo/demo_vae.safetensors
(vae): nothing to download. It knows
colours (red orange yellow green cyan blue purple pink), shapes (circle/ball/dot, square/box,
triangle, diamond), motions (left, right, up, down, diagonals, bounces, grows, stays still,
slowly/quickly) and backgrounds (black white gray "dark blue" "dark green" brown).
For real Wan models see the other example workflows."""

DEMO_FILES = {"model_name": "videodit-demo/demo_dit.safetensors",
              "text_encoder_name": "videodit-demo/demo_umt5.safetensors",
              "vae_name": "videodit-demo/demo_vae.safetensors"}
DEMO_PROMPT = "a blue ball rolls to the left over a white background"
DEMO_I2V_PROMPT = "a green diamond slides upwards on a dark blue background"
DEMO_EDIT_SOURCE = "a red box moves to the right over a gray background"
DEMO_EDIT_TARGET = "a yellow box moves to the right over a gray background"
DEMO_SAMPLING = dict(steps=20, cfg=5.0, shift=3.0)


def _demo_loaders() -> dict:
    return {
        1: note(DEMO_NOTE),
        2: w("VideoDiTModelLoader", model_name=DEMO_FILES["model_name"]),
        3: w("VideoDiTTextEncoderLoader", text_encoder_name=DEMO_FILES["text_encoder_name"],
             dtype="fp32"),
        5: w("VideoDiTVAELoader", vae_name=DEMO_FILES["vae_name"]),
    }


def demo_text_to_video() -> dict:
    nodes = _demo_loaders()
    nodes.update({
        4: w("VideoDiTTextEncode", {"text_encoder": (3, 0)}, positive=DEMO_PROMPT, negative=""),
        6: w("VideoDiTEmptyLatent", {"vae": (5, 0)}, width=64, height=64, length=17),
        7: w("VideoDiTSampler", {"model": (2, 0), "conditioning": (4, 0), "latent": (6, 0)},
             seed=0, control="fixed", **DEMO_SAMPLING),
        8: w("VideoDiTVAEDecode", {"vae": (5, 0), "latent": (7, 0)}),
        9: w("VideoDiTSaveVideo", {"images": (8, 0)}, fps=16.0, filename_prefix="videodit/demo_t2v"),
    })
    return dict(sorted(nodes.items()))


def demo_image_to_video() -> dict:
    nodes = _demo_loaders()
    nodes.update({
        4: w("VideoDiTTextEncode", {"text_encoder": (3, 0)}, positive=DEMO_I2V_PROMPT, negative=""),
        6: w("VideoDiTLoadVideo", video="videodit-demo/demo_first_frame.png"),
        7: w("VideoDiTImageToVideo", {"conditioning": (4, 0), "vae": (5, 0), "start_image": (6, 0)},
             width=64, height=64, length=17),
        8: w("VideoDiTSampler", {"model": (2, 0), "conditioning": (7, 0), "latent": (7, 1)},
             seed=1, control="fixed", **DEMO_SAMPLING),
        9: w("VideoDiTVAEDecode", {"vae": (5, 0), "latent": (8, 0)}),
        10: w("VideoDiTSaveVideo", {"images": (9, 0)}, fps=16.0, filename_prefix="videodit/demo_i2v"),
    })
    return dict(sorted(nodes.items()))


def demo_video_edit() -> dict:
    nodes = _demo_loaders()
    nodes.update({
        4: w("VideoDiTTextEncode", {"text_encoder": (3, 0)}, positive=DEMO_EDIT_SOURCE, negative=""),
        12: w("VideoDiTTextEncode", {"text_encoder": (3, 0)}, positive=DEMO_EDIT_TARGET,
              negative=""),
        6: w("VideoDiTLoadVideo", video="videodit-demo/demo_source_clip.mp4"),
        7: w("VideoDiTVAEEncode", {"vae": (5, 0), "images": (6, 0)}),
        8: w("VideoDiTFlowEditSampler", {"model": (2, 0), "source_conditioning": (4, 0),
                                         "target_conditioning": (12, 0), "source_latent": (7, 0)},
             seed=1, control="fixed", steps=20, source_cfg=3.0, target_cfg=6.0, shift=3.0,
             skip_steps=6),
        9: w("VideoDiTVAEDecode", {"vae": (5, 0), "latent": (8, 0)}),
        10: w("VideoDiTFrameConsistency", {"images": (9, 0), "reference": (6, 0)}),
        11: w("VideoDiTSaveVideo", {"images": (10, 0)}, fps=16.0, filename_prefix="videodit/demo_edit"),
        13: w("VideoDiTConsistencyReport", {"images": (10, 0), "source": (6, 0)}),
    })
    return dict(sorted(nodes.items()))


DEMO_LONG_NOTE = """Longer than one model window: 65 frames from a model trained on 17-frame
clips. VideoDiT Extend Video renders a 17-frame window, then each next window from the last
`overlap` (5) frames of the clip so far, matches its colour to them and cross-fades the seam:
five windows, each adding 12 frames. Its segments output tells Frame Consistency and the
Consistency Report where the windows meet. For real Wan models use window 81 and overlap 17
(lengths 81, 145, 209, ...); method 'context windows' works with text-to-video models too.

""" + DEMO_NOTE
DEMO_LONG_PROMPT = DEMO_PROMPT   # the text-to-video demo's prompt, four times as long


def demo_long_video() -> dict:
    nodes = _demo_loaders()
    nodes[1] = note(DEMO_LONG_NOTE)
    nodes.update({
        4: w("VideoDiTTextEncode", {"text_encoder": (3, 0)}, positive=DEMO_LONG_PROMPT,
             negative=""),
        6: w("VideoDiTExtendVideo", {"model": (2, 0), "conditioning": (4, 0), "vae": (5, 0)},
             width=64, height=64, length=65, window=17, overlap=5, method="continue", seed=0,
             control="fixed", **DEMO_SAMPLING),
        7: w("VideoDiTFrameConsistency", {"images": (6, 0), "segments": (6, 1)}),
        8: w("VideoDiTSaveVideo", {"images": (7, 0)}, fps=16.0,
             filename_prefix="videodit/demo_long_video"),
        9: w("VideoDiTConsistencyReport", {"images": (7, 0), "segments": (6, 1)}),
    })
    return dict(sorted(nodes.items()))


VACE_FILES = """Model files (put them into ComfyUI/models/...):
- diffusion_models/{model}
- text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors
- vae/wan_2.1_vae.safetensors
All from Comfy-Org/Wan_2.1_ComfyUI_repackaged on Hugging Face (split_files/...). VACE models
use the Wan 2.1 VAE. Wan's own VACE settings are 50 steps, cfg 5 and shift 16; this workflow
takes 30 steps to save time."""

VACE_INPAINT_NOTE = """Wan 2.1 VACE: remove an object from a clip (inpainting).
Inputs (put them into ComfyUI/input):
- example_source_clip.mp4: the clip, at least 81 frames at 16 fps (Load Video takes the first 81).
- example_inpaint_mask.mp4: a black-and-white mask video of the same clip, white over the
  object in every frame (any editor's matte or a segmentation export). A single PNG works too:
  one mask for all frames.
White is regenerated from the prompt, black is kept. The prompt describes the scene without
the object. Both videos are cropped to 832x480 the same way (fit = crop).

""" + VACE_FILES.format(model="wan2.1_vace_1.3B_fp16.safetensors")

VACE_OUTPAINT_NOTE = """Wan 2.1 VACE: widen a clip (outpainting).
Input: ComfyUI/input/example_narrow_clip.mp4, a square or portrait clip of at least 81 frames.
With fit = pad the clip is scaled to the frame's height and centred in an 832x480 frame; the
border is generated and the clip itself is kept (no mask needed). Describe the whole wider
scene in the prompt.

""" + VACE_FILES.format(model="wan2.1_vace_1.3B_fp16.safetensors")

VACE_CONTROL_NOTE = """Wan 2.1 VACE 14B: a new video that follows a control video.
Input: ComfyUI/input/example_pose_video.mp4, a pose (OpenPose-style skeleton), depth or edge
video of at least 81 frames, made with any annotator. With no mask, everything is generated and
the control video steers motion and layout; lower strength follows it more loosely. The prompt
says what the video shows. The 14B model needs a large GPU; the 1.3B file works the same way
(wan2.1_vace_1.3B_fp16.safetensors).

""" + VACE_FILES.format(model="wan2.1_vace_14B_fp16.safetensors")

VACE_REFERENCE_NOTE = """Wan 2.1 VACE: a video of the subject in a reference image.
Input: ComfyUI/input/example_reference.png, the subject (a person, an animal, a product),
ideally on a plain white background. It is fitted into the frame on white and given to the
model as an extra frame in front of the clip, which the sampler drops from its output. The
prompt says what the subject does; no control video or mask is needed.

""" + VACE_FILES.format(model="wan2.1_vace_1.3B_fp16.safetensors")

VACE_SAMPLING = dict(steps=30, cfg=5.0, shift=16.0)


def _vace_graph(note_text: str, model: str, prompt: str, prefix: str, conditioning: dict,
                loads: dict[int, dict], vace_inputs: dict) -> dict:
    nodes = {
        1: note(note_text),
        2: w("VideoDiTModelLoader", model_name=model),
        3: w("VideoDiTTextEncoderLoader", text_encoder_name="umt5_xxl_fp8_e4m3fn_scaled.safetensors"),
        4: w("VideoDiTTextEncode", {"text_encoder": (3, 0)}, positive=prompt, negative=NEGATIVE),
        5: w("VideoDiTVAELoader", vae_name="wan_2.1_vae.safetensors"),
        8: w("VideoDiTVACEConditioning", {"conditioning": (4, 0), "vae": (5, 0), **vace_inputs},
             width=832, height=480, length=81, **conditioning),
        9: w("VideoDiTSampler", {"model": (2, 0), "conditioning": (8, 0), "latent": (8, 1)},
             seed=5, control="randomize", **VACE_SAMPLING),
        10: w("VideoDiTVAEDecode", {"vae": (5, 0), "latent": (9, 0)}),
        11: w("VideoDiTSaveVideo", {"images": (10, 0)}, fps=16.0, filename_prefix=f"videodit/{prefix}"),
    }
    nodes.update(loads)
    return dict(sorted(nodes.items()))


def _clip(name: str) -> dict:
    return w("VideoDiTLoadVideo", video=name, frame_limit=81, force_fps=16.0, size_multiple=16)


def vace_inpaint() -> dict:
    return _vace_graph(
        VACE_INPAINT_NOTE, "wan2.1_vace_1.3B_fp16.safetensors",
        "A quiet city street at dusk, parked cars and shop windows, the camera drifts slowly "
        "to the right.", "vace_inpaint", {"fit": "crop"},
        {6: _clip("example_source_clip.mp4"), 7: _clip("example_inpaint_mask.mp4")},
        {"control_video": (6, 0), "control_mask": (7, 0)})


def vace_outpaint() -> dict:
    return _vace_graph(
        VACE_OUTPAINT_NOTE, "wan2.1_vace_1.3B_fp16.safetensors",
        "A wide view of a sunny beach with palm trees on both sides, waves rolling in.",
        "vace_outpaint", {"fit": "pad"}, {6: _clip("example_narrow_clip.mp4")},
        {"control_video": (6, 0)})


def vace_control_video() -> dict:
    return _vace_graph(
        VACE_CONTROL_NOTE, "wan2.1_vace_14B_fp16.safetensors",
        "A dancer in a red dress performs on a wooden stage under warm spotlights.",
        "vace_control", {"fit": "crop", "strength": 1.0},
        {6: _clip("example_pose_video.mp4")}, {"control_video": (6, 0)})


def vace_reference_to_video() -> dict:
    return _vace_graph(
        VACE_REFERENCE_NOTE, "wan2.1_vace_1.3B_fp16.safetensors",
        "The corgi runs across a green meadow toward the camera, ears flapping, sunny day.",
        "vace_reference", {}, {6: w("VideoDiTLoadVideo", video="example_reference.png")},
        {"reference_images": (6, 0)})


EXAMPLES = {
    "demo_text_to_video": demo_text_to_video,
    "demo_image_to_video": demo_image_to_video,
    "demo_video_edit": demo_video_edit,
    "demo_long_video": demo_long_video,
    "text_to_video_wan21_1.3B": text_to_video,
    "text_to_video_wan22_a14b_4step_lora": text_to_video_a14b_4step_lora,
    "image_to_video_wan22_5B": image_to_video,
    "video_edit_sdedit_wan21_1.3B": video_edit_sdedit,
    "video_edit_flowedit_wan21_1.3B": video_edit_flowedit,
    "vace_inpaint_wan21_1.3B": vace_inpaint,
    "vace_outpaint_wan21_1.3B": vace_outpaint,
    "vace_control_video_wan21_14B": vace_control_video,
    "vace_reference_to_video_wan21_1.3B": vace_reference_to_video,
}


DEMO_INPUTS = ("demo_first_frame.png", "demo_source_clip.mp4")


def write_demo_inputs() -> None:
    """The demo workflows' input media, rendered by the procedural clip generator (listed in
    the Load Video node as videodit-demo/<file>)."""
    import types

    import torch
    from PIL import Image

    from comfyui_videodit.demo.clips import ClipSpec, ObjectSpec, render
    from comfyui_videodit.media.encode import _encode_mp4, _frame_rate

    folder = OUT / "input"
    folder.mkdir(exist_ok=True)
    # DEMO_I2V_PROMPT's first frame: a green diamond low in the frame, room to move up
    first = render(ClipSpec("dark blue", False, (
        ObjectSpec("green", "diamond", "up", "slow", 6.0, (30.0, 46.0)),), frames=1))
    array = first[0].mul(255).round().to(torch.uint8).numpy()
    Image.fromarray(array).save(folder / "demo_first_frame.png", optimize=True)
    # DEMO_EDIT_SOURCE: a red box moving right
    clip = render(ClipSpec("gray", False, (
        ObjectSpec("red", "square", "right", "slow", 6.0, (18.0, 30.0)),)))
    _encode_mp4(clip, folder / "demo_source_clip.mp4", _frame_rate(16.0), 12, {},
                types.SimpleNamespace(update=lambda n: None))
    print("wrote example_workflows/input/demo_first_frame.png and demo_source_clip.mp4")


def main(argv: list[str]) -> int:
    # The demo inputs are binary files kept as committed; they are rendered again only when
    # missing or asked for (--inputs), so rebuilding the graphs leaves them byte for byte.
    if "--inputs" in argv or not all((OUT / "input" / name).is_file() for name in DEMO_INPUTS):
        write_demo_inputs()
    (OUT / "api").mkdir(parents=True, exist_ok=True)
    for name, graph in EXAMPLES.items():
        ui = build_ui(graph())
        (OUT / f"{name}.json").write_text(json.dumps(ui, indent=1) + "\n", encoding="utf-8")
        api = ui_to_api(ui, INFO).prompt
        (OUT / "api" / f"{name}.json").write_text(json.dumps(api, indent=1) + "\n", encoding="utf-8")
        print(f"wrote example_workflows/{name}.json and api/{name}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
