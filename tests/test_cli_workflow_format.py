"""UI-format workflows to API prompts, as ComfyUI's editor converts them when you press Queue."""
from __future__ import annotations

import copy

import pytest

from comfyui_videodit.cli.node_info import node_info
from comfyui_videodit.cli.validate import validate_prompt
from comfyui_videodit.cli.workflow_format import (WorkflowFormatError, to_api_prompt, ui_to_api,
                                                  workflow_kind)

from fake_comfy_server import OBJECT_INFO, ui_workflow


def test_a_saved_workflow_converts_like_the_editor_does():
    conversion = ui_to_api(ui_workflow(), OBJECT_INFO)
    assert conversion.prompt == {
        "1": {"class_type": "FakeModelLoader", "inputs": {"ckpt_name": "tiny.safetensors"},
              "_meta": {"title": "Fake ModelLoader"}},
        "2": {"class_type": "FakeClipLoader", "inputs": {"clip_name": "clip.safetensors"},
              "_meta": {"title": "Fake ClipLoader"}},
        "3": {"class_type": "FakeTextEncode",
              "inputs": {"text": "a red ball rolls to the left", "clip": ["2", 0]},
              "_meta": {"title": "Positive"}},
        # the Reroute (8) is followed to the loader; "randomize" is not a widget value
        "4": {"class_type": "FakeSampler",
              "inputs": {"model": ["1", 0], "positive": ["3", 0], "seed": 42, "steps": 3,
                         "cfg": 5.5, "sampler_name": "euler"},
              "_meta": {"title": "Fake Sampler"}},
        "5": {"class_type": "FakeSaveImage",
              "inputs": {"images": ["4", 0], "filename_prefix": "batch"},
              "_meta": {"title": "Save"}},
        # the Note (6), the muted save (7) and the Reroute (8) are not sent
    }
    assert conversion.notes == []
    assert validate_prompt(conversion.prompt, OBJECT_INFO) == []


def test_bypassed_node_passes_its_matching_input_through():
    workflow = ui_workflow()
    sampler = next(n for n in workflow["nodes"] if n["id"] == 4)
    sampler["mode"] = 4  # bypass: IMAGE out has no IMAGE input connected -> input dropped
    encode = next(n for n in workflow["nodes"] if n["id"] == 3)
    encode["mode"] = 4  # CONDITIONING out, no CONDITIONING input -> dropped too
    prompt = ui_to_api(workflow, OBJECT_INFO).prompt
    assert "4" not in prompt and "3" not in prompt
    assert "images" not in prompt["5"]["inputs"]
    problems = [str(p) for p in validate_prompt(prompt, OBJECT_INFO)]
    assert problems == ["#5 FakeSaveImage ('Save') · images: required input is not connected "
                        "(expects IMAGE). Fix: connect an output of type IMAGE to it"]


def test_bypass_reroutes_a_same_type_input():
    workflow = ui_workflow()
    # a pass-through node: the sampler gets an IMAGE input from a loader and is bypassed
    workflow["nodes"].append({
        "id": 9, "type": "FakeLoadImage", "mode": 0, "inputs": [],
        "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [7]}],
        "widgets_values": ["cat.png", "image"]})  # "image" is the upload button's value
    workflow["links"].append([7, 9, 0, 4, 2, "IMAGE"])
    next(i for i in workflow["nodes"][3]["inputs"] if i["name"] == "image")["link"] = 7
    workflow["nodes"][3]["mode"] = 4
    prompt = ui_to_api(workflow, OBJECT_INFO).prompt
    assert prompt["5"]["inputs"]["images"] == ["9", 0]
    assert prompt["9"]["inputs"] == {"image": "cat.png"}


def test_primitive_node_writes_its_value_into_the_target_widget():
    workflow = ui_workflow()
    workflow["nodes"].append({
        "id": 10, "type": "PrimitiveNode", "mode": 0, "title": "steps", "inputs": [],
        "outputs": [{"name": "INT", "type": "INT", "links": [8],
                     "widget": {"name": "steps"}}],
        "widgets_values": [17, "fixed"]})
    workflow["links"].append([8, 10, 0, 4, 4, "INT"])
    next(i for i in workflow["nodes"][3]["inputs"] if i["name"] == "steps")["link"] = 8
    prompt = ui_to_api(workflow, OBJECT_INFO).prompt
    assert prompt["4"]["inputs"]["steps"] == 17
    assert "10" not in prompt


def test_muted_source_leaves_the_input_empty_and_says_so():
    workflow = ui_workflow()
    workflow["nodes"][1]["mode"] = 2  # mute the clip loader
    conversion = ui_to_api(workflow, OBJECT_INFO)
    assert "clip" not in conversion.prompt["3"]["inputs"]
    assert conversion.notes == ["#3 Positive · clip: its source node is muted or missing, so the "
                                "input is left empty"]


def test_widgets_saved_by_name_and_list_values():
    info = copy.deepcopy(OBJECT_INFO)
    workflow = ui_workflow()
    workflow["nodes"][4]["widgets_values"] = {"filename_prefix": "by-name"}
    workflow["nodes"][2]["widgets_values"] = [["a", "b"]]  # a list value is wrapped
    prompt = ui_to_api(workflow, info).prompt
    assert prompt["5"]["inputs"]["filename_prefix"] == "by-name"
    assert prompt["3"]["inputs"]["text"] == {"__value__": ["a", "b"]}


def test_control_value_is_only_skipped_when_it_was_saved():
    workflow = ui_workflow()
    workflow["nodes"][3]["widgets_values"] = [42, 3, 5.5, "euler"]  # an old save, no control
    assert ui_to_api(workflow, OBJECT_INFO).prompt["4"]["inputs"]["steps"] == 3


def test_formats_are_recognised_and_other_files_explained():
    api = ui_to_api(ui_workflow(), OBJECT_INFO).prompt
    assert workflow_kind(ui_workflow()) == "ui"
    assert workflow_kind(api) == "api"
    assert workflow_kind({"prompt": api, "client_id": "x"}) == "api-wrapped"
    assert to_api_prompt({"prompt": api}, OBJECT_INFO).prompt == api
    with pytest.raises(WorkflowFormatError, match="neither a UI workflow"):
        workflow_kind({"hello": 1})


def test_subgraphs_are_expanded_with_path_ids():
    """The text encoder and sampler packed into a subgraph (as the editor saves it), with the
    seed promoted to a widget of the subgraph node."""
    workflow = ui_workflow()
    nodes = {n["id"]: n for n in workflow["nodes"]}
    inner_encode, inner_sampler = copy.deepcopy(nodes[3]), copy.deepcopy(nodes[4])
    inner_encode.update(id=1)
    inner_encode["inputs"][0]["link"] = 101
    inner_encode["outputs"][0]["links"] = [103]
    inner_sampler.update(id=2)
    inner_sampler["inputs"][0]["link"] = 102
    inner_sampler["inputs"][1]["link"] = 103
    inner_sampler["inputs"][3]["link"] = 104  # seed comes from the subgraph's input
    inner_sampler["outputs"][0]["links"] = [105]
    definition = {
        "id": "9f1c2d3e-4b5a-4c6d-8e7f-0a1b2c3d4e5f", "version": 1, "revision": 0,
        "state": {"lastGroupId": 0, "lastNodeId": 2, "lastLinkId": 105, "lastRerouteId": 0},
        "config": {}, "name": "Encode and sample",
        "inputNode": {"id": -10, "bounding": [0, 0, 120, 60]},
        "outputNode": {"id": -20, "bounding": [900, 0, 120, 60]},
        "inputs": [{"id": "a", "name": "clip", "type": "CLIP", "linkIds": [101]},
                   {"id": "b", "name": "model", "type": "MODEL", "linkIds": [102]},
                   {"id": "c", "name": "seed", "type": "INT", "linkIds": [104]}],
        "outputs": [{"id": "d", "name": "IMAGE", "type": "IMAGE", "linkIds": [105]}],
        "widgets": [], "nodes": [inner_encode, inner_sampler], "groups": [],
        "links": [
            {"id": 101, "origin_id": -10, "origin_slot": 0, "target_id": 1, "target_slot": 0,
             "type": "CLIP"},
            {"id": 102, "origin_id": -10, "origin_slot": 1, "target_id": 2, "target_slot": 0,
             "type": "MODEL"},
            {"id": 103, "origin_id": 1, "origin_slot": 0, "target_id": 2, "target_slot": 1,
             "type": "CONDITIONING"},
            {"id": 104, "origin_id": -10, "origin_slot": 2, "target_id": 2, "target_slot": 3,
             "type": "INT"},
            {"id": 105, "origin_id": 2, "origin_slot": 0, "target_id": -20, "target_slot": 0,
             "type": "IMAGE"}],
        "extra": {}}
    workflow["definitions"] = {"subgraphs": [definition]}
    instance = {"id": 20, "type": definition["id"], "pos": [500, 100], "size": [300, 120],
                "flags": {}, "order": 4, "mode": 0, "title": "Encode and sample",
                "inputs": [{"name": "clip", "type": "CLIP", "link": 2},
                           {"name": "model", "type": "MODEL", "link": 6},
                           {"name": "seed", "type": "INT", "widget": {"name": "seed"},
                            "link": None}],
                "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [4]}],
                "properties": {"proxyWidgets": [["2", "seed"]]}, "widgets_values": [777]}
    workflow["nodes"] = [n for n in workflow["nodes"] if n["id"] not in (3, 4, 7)] + [instance]
    workflow["links"] = [[1, 1, 0, 8, 0, "*"], [2, 2, 0, 20, 0, "CLIP"],
                         [6, 8, 0, 20, 1, "MODEL"], [4, 20, 0, 5, 0, "IMAGE"]]
    prompt = ui_to_api(workflow, OBJECT_INFO).prompt
    assert sorted(prompt) == ["1", "2", "20:1", "20:2", "5"]
    assert prompt["20:1"]["inputs"] == {"text": "a red ball rolls to the left", "clip": ["2", 0]}
    assert prompt["20:2"]["inputs"] == {"model": ["1", 0], "positive": ["20:1", 0], "seed": 777,
                                        "steps": 3, "cfg": 5.5, "sampler_name": "euler"}
    assert prompt["5"]["inputs"]["images"] == ["20:2", 0]
    assert validate_prompt(prompt, OBJECT_INFO) == []


class _Example:
    DESCRIPTION = "An example node."
    CATEGORY = "VideoDiT/test"
    FUNCTION = "run"
    RETURN_TYPES = ("LATENT", "INT")
    RETURN_NAMES = ("latent", "count")
    OUTPUT_TOOLTIPS = ("the latent", "how many")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"steps": ("INT", {"default": 20, "min": 1, "max": 200}),
                             "mode": (["a", "b"], {"tooltip": "which"})},
                "optional": {"latent": ("LATENT",)},
                "hidden": {"unique_id": "UNIQUE_ID"}}


def test_node_info_has_the_shape_of_object_info():
    info = node_info("VideoDiTExample", _Example, "VideoDiT Example")
    assert info == {
        "input": {"required": {"steps": ["INT", {"default": 20, "min": 1, "max": 200}],
                               "mode": [["a", "b"], {"tooltip": "which"}]},
                  "optional": {"latent": ["LATENT"]},
                  "hidden": {"unique_id": "UNIQUE_ID"}},
        "input_order": {"required": ["steps", "mode"], "optional": ["latent"],
                        "hidden": ["unique_id"]},
        "output": ["LATENT", "INT"], "output_is_list": [False, False],
        "output_name": ["latent", "count"], "name": "VideoDiTExample",
        "display_name": "VideoDiT Example", "description": "An example node.",
        "python_module": _Example.__module__, "category": "VideoDiT/test",
        "output_node": False, "output_tooltips": ["the latent", "how many"]}
