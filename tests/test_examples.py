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
                   "text_encoder_name": "text_encoders", "clip_name": "clip_vision"}


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
        if node["type"] in ("VideoDiTModelLoader", "VideoDiTVAELoader", "VideoDiTTextEncoderLoader"):
            assert node["widgets_values"][0] in notes
