"""The headless runner with small node classes defined here (an injected registry)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from comfyui_videodit.cli.executor import NodeExecutionError
from comfyui_videodit.cli.main import main
from comfyui_videodit.cli.overrides import OverrideError
from comfyui_videodit.cli.run import run_workflow
from comfyui_videodit.cli.validate import ValidationFailed

CALLS: list[str] = []


class Number:
    FUNCTION, RETURN_TYPES = "make", ("INT",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"seed": ("INT", {"default": 0, "min": 0, "max": 1000})}}

    def make(self, seed):
        CALLS.append("Number")
        return (seed,)


class Spread:
    """Three values from one: a list output, so the next node runs once per item."""
    FUNCTION, RETURN_TYPES, OUTPUT_IS_LIST = "spread", ("INT",), (True,)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"x": ("INT", {"forceInput": True})}}

    def spread(self, x):
        return ([x, x + 1, x + 2],)


class Scale:
    FUNCTION, RETURN_TYPES = "scale", ("FLOAT",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"x": ("INT", {"forceInput": True}),
                             "factor": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 10.0}),
                             "rounding": (["none", "floor"],)},
                "optional": {"offset": ("INT", {"default": 0})},
                "hidden": {"unique_id": "UNIQUE_ID"}}

    def scale(self, x, factor, rounding, offset=0, unique_id=None):
        CALLS.append(f"Scale#{unique_id}")
        value = x * factor + offset
        return (float(int(value)) if rounding == "floor" else value,)


class SaveText:
    """Writes its (list) input to a new numbered file, like a save node."""
    FUNCTION, RETURN_TYPES, OUTPUT_NODE, INPUT_IS_LIST = "save", (), True, True
    folder: Path = Path(".")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"values": ("FLOAT", {"forceInput": True}), "filename_prefix": ("STRING", {})},
                "hidden": {"prompt": "PROMPT", "extra": "EXTRA_PNGINFO", "uid": "UNIQUE_ID"}}

    def save(self, values, filename_prefix, prompt, extra, uid):
        number = 1
        while (self.folder / f"{filename_prefix[0]}_{number:05d}.json").exists():
            number += 1
        name = f"{filename_prefix[0]}_{number:05d}.json"
        (self.folder / name).write_text(json.dumps({
            "values": values, "node": uid[0], "prompt_nodes": sorted(prompt[0]),
            "has_workflow": "workflow" in (extra[0] or {})}))
        return {"ui": {"texts": [{"filename": name, "subfolder": "", "type": "output"}]}}


class Explode:
    FUNCTION, RETURN_TYPES = "go", ("INT",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"x": ("INT", {"forceInput": True})}}

    def go(self, x):
        raise RuntimeError("this node must not run")


class OverwritingSave(SaveText):
    def save(self, values, filename_prefix, prompt, extra, uid):
        (self.folder / "same.json").write_text("again")
        return {"ui": {"texts": [{"filename": "same.json", "subfolder": "", "type": "output"}]}}


class Checked:
    """Validates ``name`` itself (so ComfyUI skips its choice check) and sees link types."""
    FUNCTION, RETURN_TYPES = "go", ("FLOAT",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"x": ("INT", {"forceInput": True}),
                             "name": (["a.txt"],),
                             "gain": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 2.0})}}

    @classmethod
    def VALIDATE_INPUTS(cls, name, input_types):
        if input_types.get("x") != "INT":
            return "x must come from an INT output"
        return True if name.endswith(".txt") else f"{name!r} is not a .txt file"

    def go(self, x, name, gain):
        return (float(x) * gain,)


CLASSES = {"Checked": Checked, "Number": Number, "Spread": Spread, "Scale": Scale, "SaveText": SaveText,
           "Explode": Explode, "OverwritingSave": OverwritingSave}
NAMES = {"Scale": "Scale It"}


def ui_workflow() -> dict:
    """Number -> Reroute -> Spread -> Scale (factor from a PrimitiveNode) -> SaveText, plus a
    Note, a muted Explode and an unconnected Explode that must not run."""
    def node(node_id, kind, inputs=(), outputs=(), widgets=(), mode=0, title=None):
        entry = {"id": node_id, "type": kind, "pos": [node_id * 100, 0], "size": [200, 80],
                 "flags": {}, "order": node_id, "mode": mode, "inputs": list(inputs),
                 "outputs": list(outputs), "properties": {"Node name for S&R": kind},
                 "widgets_values": list(widgets)}
        if title:
            entry["title"] = title
        return entry

    return {
        "id": "5e0cf1a0-1111-4222-8333-944455556666", "revision": 0, "last_node_id": 9,
        "last_link_id": 7,
        "nodes": [
            node(1, "Number", outputs=[{"name": "INT", "type": "INT", "links": [1]}],
                 widgets=[7, "fixed"], title="Start"),
            node(2, "Reroute", inputs=[{"name": "", "type": "*", "link": 1}],
                 outputs=[{"name": "", "type": "INT", "links": [2]}], widgets=[]),
            node(3, "Spread", inputs=[{"name": "x", "type": "INT", "link": 2}],
                 outputs=[{"name": "INT", "type": "INT", "links": [3]}]),
            node(4, "Scale", inputs=[{"name": "x", "type": "INT", "link": 3},
                                     {"name": "factor", "type": "FLOAT", "link": 4,
                                      "widget": {"name": "factor"}}],
                 outputs=[{"name": "FLOAT", "type": "FLOAT", "links": [5]}],
                 widgets=[1.0, "none", 0]),
            node(5, "PrimitiveNode", outputs=[{"name": "FLOAT", "type": "FLOAT", "links": [4],
                                               "widget": {"name": "factor"}}],
                 widgets=[2.5, "fixed"], title="factor"),
            node(6, "SaveText", inputs=[{"name": "values", "type": "FLOAT", "link": 5}],
                 widgets=["result"], title="Save"),
            node(7, "Note", widgets=["x10 scale"]),
            node(8, "Explode", inputs=[{"name": "x", "type": "INT", "link": 6}], mode=2),
            node(9, "Explode", inputs=[{"name": "x", "type": "INT", "link": 7}]),
        ],
        "links": [[1, 1, 0, 2, 0, "*"], [2, 2, 0, 3, 0, "INT"], [3, 3, 0, 4, 0, "INT"],
                  [4, 5, 0, 4, 1, "FLOAT"], [5, 4, 0, 6, 0, "FLOAT"], [6, 1, 0, 8, 0, "INT"],
                  [7, 1, 0, 9, 0, "INT"]],
        "groups": [], "config": {}, "extra": {"ds": {"scale": 1, "offset": [0, 0]}},
        "version": 0.4,
    }


@pytest.fixture(autouse=True)
def _fresh(tmp_path):
    CALLS.clear()
    SaveText.folder = tmp_path / "out"
    yield


def run(workflow, tmp_path, **kwargs):
    import io

    log = io.StringIO()
    result = run_workflow(workflow, classes=CLASSES, display_names=NAMES,
                          output_dir=tmp_path / "out", stream=log, **kwargs)
    return result, log.getvalue()


def test_ui_workflow_runs_in_dependency_order_and_reports_outputs(tmp_path):
    result, log = run(ui_workflow(), tmp_path)
    assert result.execution.order == ["1", "3", "4", "6"]  # no Explode, no editor-only nodes
    assert result.outputs == [(tmp_path / "out" / "result_00001.json").resolve()]
    saved = json.loads(result.outputs[0].read_text())
    # Spread gave 7, 8, 9; Scale ran once per item with the PrimitiveNode's factor 2.5
    assert saved == {"values": [17.5, 20.0, 22.5], "node": "6", "has_workflow": True,
                     "prompt_nodes": ["1", "3", "4", "6", "9"]}
    assert CALLS == ["Number", "Scale#4", "Scale#4", "Scale#4"]
    assert "[3/4] #4 Scale It" in log and "[4/4] #6 Save" in log


def test_set_by_title_and_id_with_type_conversion(tmp_path):
    result, _ = run(ui_workflow(), tmp_path, sets=["Start.seed=1", "4.rounding=floor",
                                                    "4.factor=3", "Save.filename_prefix=b"])
    assert result.outputs[0].name == "b_00001.json"
    assert json.loads(result.outputs[0].read_text())["values"] == [3.0, 6.0, 9.0]
    with pytest.raises(OverrideError, match=r"has no input 'factr'; did you mean 'factor'\?"):
        run(ui_workflow(), tmp_path, sets=["4.factr=2"])
    with pytest.raises(OverrideError, match=r"no node with the id, title or type 'Nope'"):
        run(ui_workflow(), tmp_path, sets=["Nope.seed=2"])
    with pytest.raises(OverrideError, match="seed needs a whole number"):
        run(ui_workflow(), tmp_path, sets=["Start.seed=2.5"])


def test_every_validation_problem_is_reported_before_running(tmp_path):
    with pytest.raises(ValidationFailed) as failed:
        run(ui_workflow(), tmp_path, sets=["Start.seed=5000", "4.rounding=ceil"])
    text = str(failed.value)
    assert "#1 Number ('Start') · seed: 5000 is above the maximum 1000" in text
    assert "#4 Scale · rounding: 'ceil' is not one of the choices. Fix: pick one of 'none', " \
           "'floor'" in text
    assert CALLS == [] and not (tmp_path / "out" / "result_00001.json").exists()


def test_existing_files_are_never_overwritten(tmp_path):
    first, _ = run(ui_workflow(), tmp_path)
    second, _ = run(ui_workflow(), tmp_path)
    assert [p.name for p in first.outputs + second.outputs] == ["result_00001.json",
                                                                "result_00002.json"]
    workflow = ui_workflow()
    workflow["nodes"][5]["type"] = "OverwritingSave"
    run(workflow, tmp_path)
    with pytest.raises(RuntimeError, match="existed before this run"):
        run(workflow, tmp_path)


def test_a_failing_node_is_named(tmp_path):
    api = {"1": {"class_type": "Number", "inputs": {"seed": 1}},
           "2": {"class_type": "Explode", "inputs": {"x": ["1", 0]}, "_meta": {"title": "Boom"}},
           "3": {"class_type": "Spread", "inputs": {"x": ["2", 0]}},
           "4": {"class_type": "Scale", "inputs": {"x": ["3", 0], "factor": 1.0,
                                                   "rounding": "none"}},
           "5": {"class_type": "SaveText", "inputs": {"values": ["4", 0],
                                                      "filename_prefix": "x"}}}
    with pytest.raises(NodeExecutionError, match=r"#2 Explode \('Boom'\) failed: RuntimeError: "
                                                 "this node must not run"):
        run(api, tmp_path)


def test_command_line_run(tmp_path, monkeypatch, capsys):
    from comfyui_videodit import nodes

    monkeypatch.setattr(nodes, "NODE_CLASS_MAPPINGS", CLASSES)
    monkeypatch.setattr(nodes, "NODE_DISPLAY_NAME_MAPPINGS", NAMES)
    workflow = tmp_path / "wf.json"
    workflow.write_text(json.dumps(ui_workflow()))
    code = main(["run", str(workflow), "--output-dir", str(tmp_path / "out"),
                 "--set", "Start.seed=0"])
    captured = capsys.readouterr()
    assert code == 0
    assert captured.out.strip() == str((tmp_path / "out" / "result_00001.json").resolve())
    code = main(["run", str(workflow), "--set", "Start.sed=0"])
    assert code == 2 and "did you mean 'seed'" in capsys.readouterr().err


def test_validate_inputs_is_called_and_takes_over_its_inputs(tmp_path):
    api = {"1": {"class_type": "Number", "inputs": {"seed": 4}},
           "2": {"class_type": "Checked", "inputs": {"x": ["1", 0], "name": "other.txt",
                                                     "gain": 1.5}},
           "3": {"class_type": "SaveText", "inputs": {"values": ["2", 0],
                                                      "filename_prefix": "c"}}}
    result, _ = run(api, tmp_path)  # "other.txt" is not a listed choice, but the node says ok
    assert json.loads(result.outputs[0].read_text())["values"] == [6.0]
    with pytest.raises(ValidationFailed) as failed:
        run(api, tmp_path, sets=["2.name=notes.md", "2.gain=5"])
    assert str(failed.value).splitlines()[1:] == [
        "  - #2 Checked · gain: 5.0 is above the maximum 2.0. Fix: use a value from 0.0 to 2.0",
        "  - #2 Checked · name: the node rejected its inputs: 'notes.md' is not a .txt file"]
