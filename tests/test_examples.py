"""Every shipped example workflow matches the current node definitions.

Saved workflows store node ids and positional widget values, so a renamed node or a reordered
widget breaks them. Each example is converted from UI format with the live definitions and
validated like ComfyUI would (ids exist, links type-check, values in range, combo values
valid), with the model and input files it names present as empty stand-ins.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from comfyui_videodit import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from comfyui_videodit.cli.node_info import object_info
from comfyui_videodit.cli.validate import validate_prompt
from comfyui_videodit.cli.workflow_format import ui_to_api
from comfyui_videodit.runtime import io_folders, model_folders

EXAMPLES = Path(__file__).resolve().parent.parent / "example_workflows"
UI_FILES = sorted(EXAMPLES.glob("*.json"))
CORE_NOTE_TYPES = {"Note", "MarkdownNote"}
FOLDER_OF_INPUT = {"model_name": "diffusion_models", "vae_name": "vae",
                   "text_encoder_name": "text_encoders", "clip_name": "clip_vision",
                   "lora_name": "loras"}


def test_there_are_examples_for_every_pipeline():
    names = {p.stem for p in UI_FILES}
    for pipeline in ("text_to_video", "image_to_video", "video_edit_sdedit", "video_edit_flowedit"):
        assert any(n.startswith(pipeline) for n in names), pipeline


@pytest.mark.parametrize("path", UI_FILES, ids=[p.stem for p in UI_FILES])
def test_example_matches_node_definitions(path, tmp_path, monkeypatch):
    workflow = json.loads(path.read_text(encoding="utf-8"))
    info = object_info(NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS)
    for node in workflow["nodes"]:
        assert node["type"] in NODE_CLASS_MAPPINGS or node["type"] in CORE_NOTE_TYPES, node["type"]

    prompt = ui_to_api(workflow, info).prompt
    # Stand-ins for the files the workflow names, so file combos validate.
    models, inputs = tmp_path / "models", tmp_path / "input"
    for node in prompt.values():
        for name, value in node["inputs"].items():
            if name in FOLDER_OF_INPUT:
                target = models / FOLDER_OF_INPUT[name] / value
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(b"")
            elif name == "video" and not value.startswith(io_folders.DEMO_INPUT_PREFIX):
                # (the demo workflows' inputs are real files shipped with the pack)
                inputs.mkdir(exist_ok=True)
                (inputs / value).write_bytes(b"")
    monkeypatch.setattr(model_folders, "_models_dir_override", models)
    io_folders.set_input_dir(inputs)
    try:
        info = object_info(NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS)  # lists the stand-ins
        problems = validate_prompt(prompt, info)
    finally:
        io_folders.set_input_dir(None)
    assert not problems, "\n".join(str(p) for p in problems)

    twin = json.loads((EXAMPLES / "api" / path.name).read_text(encoding="utf-8"))
    assert twin == json.loads(json.dumps(prompt)), "API twin is stale: run scripts/build_example_workflows.py"


@pytest.mark.parametrize("path", UI_FILES, ids=[p.stem for p in UI_FILES])
def test_example_names_its_model_files_in_a_note(path):
    workflow = json.loads(path.read_text(encoding="utf-8"))
    notes = " ".join(str(v) for n in workflow["nodes"] if n["type"] in CORE_NOTE_TYPES
                     for v in n["widgets_values"])
    for node in workflow["nodes"]:
        if node["type"] in ("VideoDiTModelLoader", "VideoDiTVAELoader", "VideoDiTTextEncoderLoader",
                            "VideoDiTLoraLoader"):
            assert node["widgets_values"][0] in notes


# LiteGraph draws a node's title bar (about 30 px) above its `pos`; `size` is the body below.
TITLE_HEIGHT = 30
ROW_HEIGHT = 20  # one socket row, and the least a one-line widget takes


def node_rectangle(node):
    (x, y), (width, height) = node["pos"], node["size"]
    return x, y - TITLE_HEIGHT, x + width, y + height


@pytest.mark.parametrize("path", UI_FILES, ids=[p.stem for p in UI_FILES])
def test_example_nodes_do_not_overlap(path):
    nodes = json.loads(path.read_text(encoding="utf-8"))["nodes"]
    overlaps = []
    for i, a in enumerate(nodes):
        ax0, ay0, ax1, ay1 = node_rectangle(a)
        for b in nodes[i + 1:]:
            bx0, by0, bx1, by1 = node_rectangle(b)
            if ax0 < bx1 and bx0 < ax1 and ay0 < by1 and by0 < ay1:
                overlaps.append(f"{a['id']} {a['type']} and {b['id']} {b['type']}")
    assert not overlaps, f"overlapping nodes (layout: scripts/build_example_workflows.py): {overlaps}"


@pytest.mark.parametrize("path", UI_FILES, ids=[p.stem for p in UI_FILES])
def test_example_nodes_are_tall_enough_for_their_widgets(path):
    # A saved size smaller than the node's content is grown by the editor on load, over
    # whatever sits below it; so the saved size must hold the sockets and every widget.
    info = object_info(NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS)
    for node in json.loads(path.read_text(encoding="utf-8"))["nodes"]:
        if node["type"] in CORE_NOTE_TYPES:
            continue
        definition = info[node["type"]]
        sockets = sum(1 for section in ("required", "optional")
                      for spec in (definition["input"].get(section) or {}).values()
                      if not (isinstance(spec[0], list) or spec[0] in ("INT", "FLOAT", "STRING",
                                                                       "BOOLEAN", "COMBO")))
        rows = max(sockets, len(node["outputs"]), 1) + len(node["widgets_values"])
        assert node["size"][1] >= ROW_HEIGHT * rows, (node["id"], node["type"], node["size"])


@pytest.mark.parametrize("path", UI_FILES, ids=[p.stem for p in UI_FILES])
def test_example_has_a_template_thumbnail(path):
    # ComfyUI's template browser shows <name>.jpg beside <name>.json (scripts/build_thumbnails.py).
    from PIL import Image

    thumbnail = path.with_suffix(".jpg")
    assert thumbnail.is_file(), f"missing {thumbnail.name}: run scripts/build_thumbnails.py"
    assert thumbnail.stat().st_size < 64 * 1024
    with Image.open(thumbnail) as image:
        assert image.format == "JPEG"
        image.load()
        assert image.width == 256 and 64 <= image.height <= 512
