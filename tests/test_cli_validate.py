"""Validation messages: one per problem, naming node and input, in plain words with a fix."""
from __future__ import annotations

import copy

from comfyui_videodit.cli.validate import (problems_from_node_errors, problems_from_server_error,
                                           validate_prompt)

from fake_comfy_server import OBJECT_INFO

GOOD = {
    "1": {"class_type": "FakeModelLoader", "inputs": {"ckpt_name": "tiny.safetensors"}},
    "2": {"class_type": "FakeClipLoader", "inputs": {"clip_name": "clip.safetensors"}},
    "3": {"class_type": "FakeTextEncode", "inputs": {"text": "a cat", "clip": ["2", 0]}},
    "4": {"class_type": "FakeSampler", "inputs": {
        "model": ["1", 0], "positive": ["3", 0], "seed": 3, "steps": 4, "cfg": 5.0,
        "sampler_name": "euler"}, "_meta": {"title": "Main sampler"}},
    "5": {"class_type": "FakeSaveImage", "inputs": {"images": ["4", 0],
                                                    "filename_prefix": "x"}},
}


def messages(prompt):
    return [str(p) for p in validate_prompt(prompt, OBJECT_INFO)]


def test_a_good_prompt_has_no_problems():
    assert messages(GOOD) == []


def test_every_problem_is_listed_once_with_node_input_and_fix():
    prompt = copy.deepcopy(GOOD)
    sampler = prompt["4"]["inputs"]
    sampler["steps"] = 500
    sampler["cfg"] = "high"
    sampler["sampler_name"] = "eulr"
    sampler["positive"] = ["1", 0]  # a MODEL into a CONDITIONING input
    del sampler["seed"]
    prompt["5"]["inputs"]["images"] = ["4", 0]
    prompt["1"]["inputs"]["ckpt_name"] = "huge.safetensors"
    assert messages(prompt) == [
        "#1 FakeModelLoader · ckpt_name: 'huge.safetensors' is not one of the choices. Fix: pick "
        "one of 'tiny.safetensors', 'small.safetensors' (closest: 'tiny.safetensors')",
        "#4 FakeSampler ('Main sampler') · positive: expects CONDITIONING but is connected to "
        "output 'MODEL' (MODEL) of #1 FakeModelLoader. Fix: connect an output of type "
        "CONDITIONING instead",
        "#4 FakeSampler ('Main sampler') · seed: required value is missing. Fix: set a value in "
        "the node (or with --set)",
        "#4 FakeSampler ('Main sampler') · steps: 500 is above the maximum 100. Fix: use a value "
        "from 1 to 100",
        "#4 FakeSampler ('Main sampler') · cfg: 'high' is not a number. Fix: give it a number",
        "#4 FakeSampler ('Main sampler') · sampler_name: 'eulr' is not one of the choices. Fix: "
        "pick one of 'euler', 'dpmpp_2m' (closest: 'euler')",
    ]


def test_unknown_node_types_and_missing_outputs():
    prompt = copy.deepcopy(GOOD)
    prompt["9"] = {"class_type": "FakeSamplr", "inputs": {}}
    assert messages(prompt) == [
        "#9 FakeSamplr: unknown node type 'FakeSamplr'. Fix: did you mean 'FakeSampler'?"]
    prompt = copy.deepcopy(GOOD)
    del prompt["5"]
    assert messages(prompt) == ["the workflow has no output node. Fix: add a node that saves or "
                                "shows a result (e.g. a Save node)"]


def test_only_nodes_an_output_needs_are_checked_like_comfyui():
    prompt = copy.deepcopy(GOOD)
    prompt["7"] = {"class_type": "FakeSampler", "inputs": {"steps": 0}}  # unused, broken
    assert messages(prompt) == []


def test_links_to_missing_nodes_or_outputs():
    prompt = copy.deepcopy(GOOD)
    prompt["4"]["inputs"]["model"] = ["42", 0]
    prompt["3"]["inputs"]["clip"] = ["2", 3]
    problems = messages(prompt)
    assert problems == [
        "#3 FakeTextEncode · clip: is linked to output 3 of #2 FakeClipLoader, which has only 1 "
        "outputs. Fix: reconnect the input",
        "#4 FakeSampler ('Main sampler') · model: is linked to node #42, which is not in the "
        "workflow. Fix: reconnect the input"]


def test_combo_with_options_list_is_checked_too():
    info = copy.deepcopy(OBJECT_INFO)
    info["FakeSampler"]["input"]["required"]["sampler_name"] = [
        "COMBO", {"options": ["euler", "dpmpp_2m"]}]
    prompt = copy.deepcopy(GOOD)
    prompt["4"]["inputs"]["sampler_name"] = "heun"
    assert [p.input for p in validate_prompt(prompt, info)] == ["sampler_name"]


def test_server_node_errors_in_plain_words():
    node_errors = {"4": {"class_type": "FakeSampler", "dependent_outputs": ["5"], "errors": [
        {"type": "value_bigger_than_max", "message": "Value 500 bigger than max of 100",
         "details": "steps", "extra_info": {
             "input_name": "steps", "received_value": 500,
             "input_config": ["INT", {"default": 3, "min": 1, "max": 100}]}},
        {"type": "required_input_missing", "message": "Required input is missing",
         "details": "seed", "extra_info": {"input_name": "seed"}}]}}
    assert [str(p) for p in problems_from_node_errors(node_errors, GOOD)] == [
        "#4 FakeSampler ('Main sampler') · steps: the value is above the maximum (got 500). "
        "Fix: use a value from 1 to 100",
        "#4 FakeSampler ('Main sampler') · seed: required input is missing"]
    body = {"error": {"type": "invalid_prompt",
                      "message": "Cannot execute because node Foo does not exist.",
                      "details": "Node ID '#3'", "extra_info": {}}, "node_errors": {}}
    assert [str(p) for p in problems_from_server_error(body)] == [
        "Cannot execute because node Foo does not exist. (Node ID '#3')"]


def test_numeric_strings_are_coerced_like_comfyui_or_refused():
    prompt = copy.deepcopy(GOOD)
    prompt["4"]["inputs"].update(steps="2", cfg="4.5", seed=" 7 ")
    assert messages(prompt) == []
    assert (prompt["4"]["inputs"]["steps"], prompt["4"]["inputs"]["cfg"],
            prompt["4"]["inputs"]["seed"]) == (2, 4.5, 7)
    assert type(prompt["4"]["inputs"]["steps"]) is int
    prompt["4"]["inputs"].update(steps="2.5", cfg=True)
    assert messages(prompt) == [
        "#4 FakeSampler ('Main sampler') · steps: '2.5' is not a whole number. Fix: give it a "
        "whole number",
        "#4 FakeSampler ('Main sampler') · cfg: True is not a number. Fix: give it a number",
    ]
