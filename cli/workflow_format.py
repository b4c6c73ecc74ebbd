"""Workflow files: tell UI format from API format, and convert UI to API.

The conversion follows what ComfyUI's editor does when you press Queue (``graphToPrompt``):
widget values are matched to inputs by the node definition's input order, the extra value of a
seed's control_after_generate (and of an upload button) is skipped, links become
``["<origin id>", slot]``, Reroutes are followed to their origin, a PrimitiveNode's value is
written into the inputs it feeds, Notes are dropped, muted nodes (mode 2) are left out together
with the inputs they fed, bypassed nodes (mode 4) pass their matching input through, and
subgraphs are expanded into ``<instance id>:<inner id>`` nodes.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from .node_info import (CONTROL_VALUES, combo_options, has_control_widget, has_upload_widget,
                        input_spec, is_widget, ordered_inputs)

MODE_MUTED = 2
MODE_BYPASS = 4
# Editor-only nodes: never sent to the server.
VIRTUAL_NODE_TYPES = frozenset({"Note", "MarkdownNote", "Reroute", "PrimitiveNode"})
UPLOAD_BUTTON_VALUES = frozenset({"image", "upload", "video", "audio"})


class WorkflowFormatError(ValueError):
    """The file is not a workflow this tool can read."""


@dataclass
class Conversion:
    """An API prompt plus what the conversion had to leave out (shown to the user)."""
    prompt: dict[str, dict]
    notes: list[str] = field(default_factory=list)


def load_workflow(path: str | Path) -> dict:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WorkflowFormatError(f"workflow file {str(path)!r} does not exist") from None
    except json.JSONDecodeError as err:
        raise WorkflowFormatError(f"{path} is not valid JSON ({err})") from None
    workflow_kind(data, source=str(path))
    return data


def workflow_kind(data: Any, source: str = "the workflow") -> str:
    """``"ui"`` (as saved by the editor) or ``"api"`` (as sent to ``POST /prompt``)."""
    if isinstance(data, dict) and isinstance(data.get("nodes"), list) and "links" in data:
        return "ui"
    if isinstance(data, dict) and isinstance(data.get("prompt"), dict) and all(
            isinstance(v, dict) and "class_type" in v for v in data["prompt"].values()):
        return "api-wrapped"
    if isinstance(data, dict) and data and all(
            isinstance(v, dict) and "class_type" in v for v in data.values()):
        return "api"
    raise WorkflowFormatError(
        f"{source} is neither a UI workflow (with 'nodes' and 'links') nor an API prompt "
        "(node ids mapping to {'class_type', 'inputs'}); save it from ComfyUI with "
        "Workflow > Save or Export (API)")


def to_api_prompt(data: dict, object_info: Mapping[str, dict]) -> Conversion:
    """Any accepted workflow file as an API prompt (a copy; the input is not changed)."""
    kind = workflow_kind(data)
    if kind == "ui":
        try:
            return ui_to_api(data, object_info)
        except WorkflowFormatError:
            raise
        except (AttributeError, TypeError, KeyError, IndexError, ValueError) as err:
            raise WorkflowFormatError(
                f"the UI workflow is damaged and cannot be read ({type(err).__name__}: {err}); "
                "open it in ComfyUI and save it again, or export it with Export (API)") from None
    prompt = data["prompt"] if kind == "api-wrapped" else data
    return Conversion(json.loads(json.dumps(prompt)))


def ui_to_api(workflow: dict, object_info: Mapping[str, dict]) -> Conversion:
    prompt: dict[str, dict] = {}
    notes: list[str] = []
    for scope, node in _Scope.root(workflow).real_nodes():
        node_type = node.get("type")
        node_id = scope.prefix + str(node.get("id"))
        info = object_info.get(node_type)
        title = node.get("title") or (info or {}).get("display_name") or node_type
        entry = {"class_type": node_type, "inputs": {}, "_meta": {"title": title}}
        prompt[node_id] = entry
        if info is None:  # reported by validation as an unknown node type
            for ui_input in node.get("inputs") or []:
                resolved = scope.resolve_input(ui_input)
                if resolved is not None and resolved is not OWN_WIDGET:
                    entry["inputs"][ui_input["name"]] = resolved
            continue
        widget_values = _widget_values(node, info)
        ui_inputs = {i.get("name"): i for i in node.get("inputs") or []}
        for name in ordered_inputs(info):
            ui_input = ui_inputs.get(name)
            if ui_input is not None and ui_input.get("link") is not None:
                resolved = scope.resolve_input(ui_input)
                if resolved is OWN_WIDGET:
                    resolved = widget_values.get(name)
                    if resolved is None:
                        continue
                    if isinstance(resolved, list):
                        resolved = {"__value__": resolved}
                if resolved is None:
                    notes.append(f"#{node_id} {title} · {name}: its source node is muted or "
                                 "missing, so the input is left empty")
                else:
                    entry["inputs"][name] = resolved
            elif name in widget_values:
                value = widget_values[name]
                entry["inputs"][name] = {"__value__": value} if isinstance(value, list) else value
    return Conversion(prompt, notes)


def _widget_values(node: dict, info: Mapping) -> dict[str, Any]:
    """Map a node's positional ``widgets_values`` to input names."""
    names, extras = [], []
    for name in ordered_inputs(info):
        spec = input_spec(info, name)
        if spec is None or not is_widget(spec[1], spec[2]):
            continue
        names.append(name)
        extras.append((has_control_widget(name, spec[1], spec[2]),
                       has_upload_widget(spec[1], spec[2]) or bool(
                           combo_options(spec[1], spec[2]) is not None
                           and spec[2].get("control_after_generate"))))
    values = node.get("widgets_values")
    if isinstance(values, dict):  # some editors save widgets by name
        return {name: values[name] for name in names if name in values}
    values = list(values or [])
    spare = len(values) - len(names)  # how many extra (control/upload) values were saved
    mapped: dict[str, Any] = {}
    position = 0
    for name, (control, upload) in zip(names, extras):
        if position >= len(values):
            break
        mapped[name] = values[position]
        position += 1
        if spare > 0 and position < len(values):
            following = values[position]
            if (control and following in CONTROL_VALUES) or (
                    upload and isinstance(following, str) and following in UPLOAD_BUTTON_VALUES):
                position += 1
                spare -= 1
    return mapped


def _parse_link(link, position: int) -> tuple[str, tuple]:
    """One entry of ``links``: ``[id, origin, slot, target, slot, type]`` or the object form."""
    try:
        if isinstance(link, dict):
            fields = (link.get("id"), link.get("origin_id"), link.get("origin_slot"),
                      link.get("target_id"), link.get("target_slot"), link.get("type", "*"))
        elif isinstance(link, list) and len(link) >= 5:
            fields = (link[0], link[1], link[2], link[3], link[4],
                      link[5] if len(link) > 5 else "*")
        else:
            raise ValueError
        link_id, origin, slot, target, target_slot, kind = fields
        if any(isinstance(v, (bool, list, dict)) or v is None
               for v in (link_id, origin, target)):
            raise ValueError
        return str(link_id), (str(origin), int(slot), str(target), int(target_slot), kind)
    except (TypeError, ValueError):
        raise WorkflowFormatError(
            f"entry {position} of the workflow's 'links' is not a link: {json.dumps(link)[:120]} "
            "(expected [link id, origin node, origin slot, target node, target slot, type]); "
            "remove it or save the workflow again from ComfyUI") from None


SUBGRAPH_INPUT_NODE = "-10"   # inside a subgraph: the node standing for its inputs
SUBGRAPH_OUTPUT_NODE = "-20"  # ... and the one standing for its outputs
OWN_WIDGET = object()  # a subgraph input with nothing behind it: the inner widget's value


class _Scope:
    """The nodes and links of the workflow or of one subgraph instance in it.

    Node ids inside a subgraph instance are ``<instance id>:<inner id>`` (nested: ``a:b:c``),
    as ComfyUI's editor sends them. A link is followed through Reroutes, PrimitiveNodes,
    bypassed nodes and subgraph boundaries to the real node that produces the value.
    """

    def __init__(self, nodes, links, definitions, prefix="", parent=None, instance=None,
                 definition=None):
        if not isinstance(nodes, list) or not all(isinstance(n, dict) for n in nodes):
            raise WorkflowFormatError(
                "the workflow's 'nodes' must be a list of node objects; save or export the "
                "workflow again from ComfyUI")
        self.nodes = {str(n.get("id")): n for n in nodes}
        self.links: dict[str, tuple] = {}
        if links is not None and not isinstance(links, list):
            raise WorkflowFormatError(
                f"the workflow's 'links' must be a list, not {type(links).__name__}; save the "
                "workflow again from ComfyUI")
        for position, link in enumerate(links or []):
            self.links.update([_parse_link(link, position)])
        self.definitions = definitions
        self.prefix = prefix
        self.parent = parent
        self.instance = instance
        self.definition = definition

    @classmethod
    def root(cls, workflow: dict) -> "_Scope":
        subgraphs = (workflow.get("definitions") or {}).get("subgraphs") or []
        return cls(workflow.get("nodes") or [], workflow.get("links"),
                   {s.get("id"): s for s in subgraphs})

    def child(self, node: dict) -> "_Scope":
        definition = self.definitions[node.get("type")]
        if self.prefix.count(":") > 32:
            raise WorkflowFormatError(f"subgraph {definition.get('name')!r} contains itself")
        return _Scope(definition.get("nodes") or [], definition.get("links"), self.definitions,
                      f"{self.prefix}{node.get('id')}:", self, node, definition)

    def real_nodes(self):
        """``(scope, node)`` for every node the server executes, subgraphs expanded."""
        for node in self.nodes.values():
            if node.get("mode", 0) in (MODE_MUTED, MODE_BYPASS):
                continue
            if node.get("type") in self.definitions:
                yield from self.child(node).real_nodes()
            elif node.get("type") not in VIRTUAL_NODE_TYPES:
                yield self, node

    def resolve_input(self, ui_input: dict, depth: int = 0):
        link_id = ui_input.get("link")
        if link_id is None or depth > 256:
            return None
        link = self.links.get(str(link_id))
        return self._resolve_link(link, depth) if link is not None else None

    def _resolve_link(self, link: tuple, depth: int):
        """``[origin id, slot]``, a literal value (from a PrimitiveNode), or None (cut off)."""
        origin_id, slot, _, _, kind = link
        if origin_id == SUBGRAPH_INPUT_NODE and self.instance is not None:
            return self._resolve_subgraph_input(slot, depth)
        origin = self.nodes.get(origin_id)
        if origin is None:
            return None
        origin_type, mode = origin.get("type"), origin.get("mode", 0)
        if origin_type == "Reroute":
            inputs = origin.get("inputs") or []
            return self.resolve_input(inputs[0], depth + 1) if inputs else None
        if origin_type == "PrimitiveNode":
            values = origin.get("widgets_values") or []
            if mode == MODE_MUTED or not values:
                return None
            return {"__value__": values[0]} if isinstance(values[0], list) else values[0]
        if origin_type in ("Note", "MarkdownNote") or mode == MODE_MUTED:
            return None
        if mode == MODE_BYPASS:
            passed = self._bypass_input(origin, slot, kind)
            return self.resolve_input(passed, depth + 1) if passed is not None else None
        if origin_type in self.definitions:  # into the subgraph, to what feeds that output
            inner = self.child(origin)
            for inner_link in inner.links.values():
                if inner_link[2] == SUBGRAPH_OUTPUT_NODE and inner_link[3] == slot:
                    return inner._resolve_link(inner_link, depth + 1)
            return None
        return [self.prefix + origin_id, slot]

    def _resolve_subgraph_input(self, slot: int, depth: int):
        """A link from the subgraph's input node: continue from the instance's input, or take
        the instance's widget value when that input is a (promoted) widget left unlinked."""
        declared = (self.definition.get("inputs") or [])
        name = declared[slot].get("name") if slot < len(declared) else None
        inputs = self.instance.get("inputs") or []
        outer = next((i for i in inputs if name is not None and i.get("name") == name), None)
        if outer is None and slot < len(inputs):
            outer = inputs[slot]
        if outer is None:
            return OWN_WIDGET
        if outer.get("link") is None and outer.get("widget"):
            widget_inputs = [i for i in inputs if i.get("widget")]
            values = self.instance.get("widgets_values")
            position = widget_inputs.index(outer)
            if isinstance(values, list) and position < len(values):
                return values[position]
            return OWN_WIDGET
        return self.parent.resolve_input(outer, depth + 1)

    @staticmethod
    def _bypass_input(node: dict, slot: int, kind: str) -> dict | None:
        """The input a bypassed node hands through: same slot if the type matches, else the
        first input of that type."""
        inputs = node.get("inputs") or []

        def matches(ui_input):
            other = ui_input.get("type")
            return kind == "*" or other == "*" or other == kind

        if slot < len(inputs) and matches(inputs[slot]) and inputs[slot].get("link") is not None:
            return inputs[slot]
        for ui_input in inputs:
            if matches(ui_input) and ui_input.get("link") is not None:
                return ui_input
        return None
