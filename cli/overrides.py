"""``--set NODE.INPUT=VALUE``: change one input of one node of an API prompt.

``NODE`` is a node id (``3``), its title (``My Sampler``) or, when only one node has it, its
type (``KSampler``). ``INPUT`` is the input's name. The value is converted to the input's type
from the node definition, so ``--set 3.steps=30`` sets the integer 30, and a bad target or value
is reported before anything runs. A value written as a JSON list (``[5, 6, 7]``) is a sweep.
"""
from __future__ import annotations

import difflib
import json
from dataclasses import dataclass
from typing import Any, Mapping

from .node_info import combo_options, input_spec, ordered_inputs

SEED_INPUT_NAMES = ("seed", "noise_seed")


class OverrideError(ValueError):
    """A ``--set`` that names an unknown node or input, or a value of the wrong type."""


@dataclass(frozen=True)
class Target:
    node_id: str
    input: str
    label: str  # as the user wrote it, for messages and job names


def split_assignment(text: str) -> tuple[str, str]:
    """``"NODE.INPUT=VALUE"`` -> ``("NODE.INPUT", "VALUE")``."""
    target, sep, value = text.partition("=")
    if not sep or "." not in target:
        raise OverrideError(f"--set {text!r}: expected NODE.INPUT=VALUE, e.g. --set 3.seed=42 "
                            "or --set \"KSampler.steps=30\"")
    return target.strip(), value


def parse_sweep_value(raw: str) -> list[Any]:
    """A JSON list is a sweep (each element one job); anything else is a single raw value."""
    text = raw.strip()
    if text.startswith("[") and text.endswith("]"):
        try:
            values = json.loads(text)
        except json.JSONDecodeError:
            return [raw]
        if isinstance(values, list) and values:
            return values
    return [raw]


def resolve_target(target: str, prompt: Mapping[str, dict],
                   object_info: Mapping[str, dict]) -> Target:
    """Find the node and input a ``NODE.INPUT`` string names; clear errors otherwise."""
    node_part, _, input_name = target.rpartition(".")
    node_id = _find_node(node_part, prompt, target)
    node = prompt[node_id]
    info = object_info.get(node["class_type"])
    if info is None:
        raise OverrideError(f"--set {target}: node #{node_id} has the unknown type "
                            f"{node['class_type']!r}")
    spec = input_spec(info, input_name)
    if spec is None or spec[0] == "hidden":
        names = ordered_inputs(info)
        close = difflib.get_close_matches(input_name, names, 1)
        raise OverrideError(
            f"--set {target}: node #{node_id} {node['class_type']} has no input {input_name!r}"
            + (f"; did you mean {close[0]!r}?" if close else "")
            + f" Its inputs: {', '.join(names)}")
    return Target(node_id, input_name, target)


def _find_node(node_part: str, prompt: Mapping[str, dict], target: str) -> str:
    if node_part in prompt:
        return node_part
    for field_name, getter in (("title", lambda n: (n.get("_meta") or {}).get("title")),
                               ("type", lambda n: n.get("class_type"))):
        found = [node_id for node_id, node in prompt.items() if getter(node) == node_part]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise OverrideError(f"--set {target}: {len(found)} nodes have the {field_name} "
                                f"{node_part!r} (ids {', '.join(found)}); use the node id")
    labels = [f"{node_id} ({(n.get('_meta') or {}).get('title') or n.get('class_type')})"
              for node_id, n in prompt.items()]
    raise OverrideError(f"--set {target}: no node with the id, title or type {node_part!r}. "
                        f"Nodes: {', '.join(labels)}")


def coerce_value(raw: Any, target: Target, prompt: Mapping[str, dict],
                 object_info: Mapping[str, dict]) -> Any:
    """``raw`` (a command-line string or a JSON value) as the type the input expects."""
    node = prompt[target.node_id]
    _, kind, options = input_spec(object_info[node["class_type"]], target.input)
    where = f"--set {target.label}"
    choices = combo_options(kind, options)
    if choices is not None:
        if raw in choices:
            return raw
        for choice in choices:  # a command line gives "7" for the choice 7
            if str(choice) == str(raw):
                return choice
        return str(raw) if not isinstance(raw, str) else raw  # validation lists the choices
    if kind not in ("INT", "FLOAT", "BOOLEAN", "STRING"):
        raise OverrideError(f"{where}: this input takes a connection ({kind}), not a value; "
                            "connect it in the workflow instead")
    try:
        if kind == "INT":
            if isinstance(raw, bool):
                raise ValueError
            if isinstance(raw, str):
                try:
                    return int(raw.strip())
                except ValueError:
                    raw = float(raw.strip())  # "1e3" or "30.0"
            if isinstance(raw, float) and not raw.is_integer():
                raise ValueError
            return int(raw)
        if kind == "FLOAT":
            if isinstance(raw, bool):
                raise ValueError
            return float(raw)
        if kind == "BOOLEAN":
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("true", "1", "yes", "on"):
                return True
            if text in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if kind == "STRING":
            return raw if isinstance(raw, str) else json.dumps(raw)
    except (TypeError, ValueError):
        words = {"INT": "a whole number", "FLOAT": "a number", "BOOLEAN": "true or false"}
        raise OverrideError(f"{where}={raw}: {target.input} needs {words[kind]}") from None
    return raw


def apply_overrides(prompt: Mapping[str, dict], values: Mapping[Target, Any]) -> dict:
    """A copy of ``prompt`` with the (already coerced) values set; links they replace are cut.

    Only the nodes that change are copied (a batch of 300,000 seeds makes 300,000 prompts);
    the others are shared with ``prompt`` and must be treated as read-only."""
    result = dict(prompt)
    copied: set[str] = set()
    for target, value in values.items():
        if target.node_id not in copied:
            node = dict(result[target.node_id])
            node["inputs"] = dict(node.get("inputs") or {})
            result[target.node_id] = node
            copied.add(target.node_id)
        result[target.node_id]["inputs"][target.input] = (
            {"__value__": value} if isinstance(value, list) else value)
    return result


def seed_targets(prompt: Mapping[str, dict], object_info: Mapping[str, dict]) -> list[Target]:
    """Every seed widget of the prompt (INT inputs named seed or noise_seed holding a value)."""
    found = []
    for node_id, node in prompt.items():
        info = object_info.get(node.get("class_type"))
        if info is None:
            continue
        for name in SEED_INPUT_NAMES:
            spec = input_spec(info, name)
            value = (node.get("inputs") or {}).get(name)
            if spec and spec[1] == "INT" and not isinstance(value, list):
                found.append(Target(node_id, name, f"{node_id}.{name}"))
    return found
