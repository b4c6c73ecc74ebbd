"""The runner answers a broken workflow with one message and exit code 2, never a traceback."""
from __future__ import annotations

import json

import pytest

from comfyui_videodit.cli.main import main

from test_cli_run import CLASSES, NAMES, SaveText, run, ui_workflow


@pytest.fixture(autouse=True)
def _our_classes(monkeypatch, tmp_path):
    from comfyui_videodit import nodes

    monkeypatch.setattr(nodes, "NODE_CLASS_MAPPINGS", CLASSES)
    monkeypatch.setattr(nodes, "NODE_DISPLAY_NAME_MAPPINGS", NAMES)
    SaveText.folder = tmp_path / "out"


def _run_cli(tmp_path, workflow, capsys, *extra):
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(workflow))
    code = main(["run", str(path), "--output-dir", str(tmp_path / "out"), *extra])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return code, captured.err


def test_numeric_strings_in_an_api_workflow_reach_the_node_as_numbers(tmp_path):
    api = {"1": {"class_type": "Number", "inputs": {"seed": "3"}},
           "2": {"class_type": "Scale", "inputs": {"x": ["1", 0], "factor": "2",
                                                   "rounding": "none"}},
           "3": {"class_type": "SaveText", "inputs": {"values": ["2", 0],
                                                      "filename_prefix": "n"}}}
    result, _ = run(api, tmp_path)
    assert json.loads(result.outputs[0].read_text())["values"] == [6.0]


def test_a_loop_in_the_graph_names_the_nodes(tmp_path, capsys):
    api = {"1": {"class_type": "Spread", "inputs": {"x": ["2", 0]}},
           "2": {"class_type": "Spread", "inputs": {"x": ["1", 0]}},
           "3": {"class_type": "Scale", "inputs": {"x": ["2", 0], "factor": 1.0,
                                                   "rounding": "none"}},
           "4": {"class_type": "SaveText", "inputs": {"values": ["3", 0],
                                                      "filename_prefix": "x"}}}
    code, err = _run_cli(tmp_path, api, capsys)
    assert code == 2
    assert "#1 Spread · x: the workflow has a loop: #2 Spread -> #1 Spread -> #2 Spread. " \
           "Fix: remove one of these links" in err


def test_a_chain_of_1500_nodes_runs(tmp_path, monkeypatch, capsys):
    class Pass:
        FUNCTION, RETURN_TYPES = "go", ("INT",)

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"x": ("INT", {"forceInput": True})}}

        def go(self, x):
            return (x + 1,)

    monkeypatch.setitem(CLASSES, "Pass", Pass)
    api = {"0": {"class_type": "Number", "inputs": {"seed": 0}}}
    for i in range(1, 1500):
        api[str(i)] = {"class_type": "Pass", "inputs": {"x": [str(i - 1), 0]}}
    api["s"] = {"class_type": "Scale", "inputs": {"x": ["1499", 0], "factor": 1.0,
                                                  "rounding": "none"}}
    api["out"] = {"class_type": "SaveText", "inputs": {"values": ["s", 0],
                                                       "filename_prefix": "chain"}}
    result, _ = run(api, tmp_path)
    assert json.loads(result.outputs[0].read_text())["values"] == [1499.0]


@pytest.mark.parametrize("links", ["x", [1, 2], [None], {"a": 1}, [[1, [2], 0, 3, 0]]])
def test_garbage_in_links_is_a_message(tmp_path, capsys, links):
    workflow = ui_workflow()
    workflow["links"] = links
    code, err = _run_cli(tmp_path, workflow, capsys)
    assert code == 2 and "'links'" in err and "Nothing was run." in err


def test_an_output_folder_that_cannot_be_created(tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(ui_workflow()))
    code = main(["run", str(path), "--output-dir", str(tmp_path / "a_file" / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "--output-dir: the output folder" in err and "cannot be created" in err


def test_nan_written_in_a_workflow_file_is_refused_before_running(tmp_path, capsys):
    path = tmp_path / "wf.json"
    path.write_text('{"1": {"class_type": "Number", "inputs": {"seed": 1}}, '
                    '"2": {"class_type": "Scale", "inputs": {"x": ["1", 0], "factor": NaN, '
                    '"rounding": "none"}}, "3": {"class_type": "SaveText", "inputs": '
                    '{"values": ["2", 0], "filename_prefix": "x"}}}')
    code = main(["run", str(path), "--output-dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and "#2 Scale · factor: nan is not a finite number" in err


@pytest.mark.parametrize("damage", ["inputs", "nodes"])
def test_other_damage_to_a_workflow_is_a_message(tmp_path, capsys, damage):
    if damage == "inputs":
        workflow = {"1": {"class_type": "Number", "inputs": "seed=1"},
                    "2": {"class_type": "SaveText", "inputs": {"values": ["1", 0],
                                                              "filename_prefix": "x"}}}
    else:
        workflow = ui_workflow()
        workflow["nodes"][0]["inputs"] = "garbage"
        workflow["nodes"][0]["widgets_values"] = 5
    code, err = _run_cli(tmp_path, workflow, capsys)
    assert code == 2 and "Nothing was run." in err
