"""Check an API prompt against node definitions the way ComfyUI's ``POST /prompt`` does.

One :class:`Problem` per fault, each naming the node (id, type and title) and the input, in plain
words with a fix. ComfyUI validates only output nodes and what they depend on, and rejects
unknown node types anywhere; so do we. Numbers written as text (``"steps": "2"``) are
converted in the prompt, as ComfyUI does. Unlike ComfyUI 0.3.64 we also check ``"COMBO"`` inputs
declared with an ``options`` list, refuse NaN and infinity in number inputs (ComfyUI's range
check lets them through, and they end as a black clip) and refuse a graph with a loop. The same wording is used for the ``node_errors`` a server
returns, so local and remote problems read alike.
"""
from __future__ import annotations

import difflib
import inspect
import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from .executor import WorkflowLoop, execution_order
from .node_info import combo_options, input_spec, ordered_inputs

MAX_LISTED_CHOICES = 20


@dataclass
class Problem:
    node_id: str | None
    class_type: str | None
    title: str | None
    input: str | None
    message: str
    fix: str | None = None

    def __str__(self) -> str:
        where = []
        if self.node_id is not None:
            node = f"#{self.node_id} {self.class_type or '?'}"
            if self.title and self.title != self.class_type:
                node += f" ({self.title!r})"
            where.append(node)
        if self.input:
            where.append(self.input)
        text = " · ".join(where) + ": " + self.message if where else self.message
        return f"{text}. Fix: {self.fix}" if self.fix else text


class ValidationFailed(Exception):
    """Raised with every problem found, so the user can fix them all in one go."""

    def __init__(self, problems: list[Problem], header: str = "the workflow is not valid"):
        self.problems = problems
        super().__init__(header + ":\n" + "\n".join(f"  - {p}" for p in problems))


def validate_prompt(prompt: Mapping[str, dict], object_info: Mapping[str, dict], *,
                    classes: Mapping[str, type] | None = None) -> list[Problem]:
    """Every problem of the nodes the outputs need. With ``classes`` (the runner's own node
    classes) a node's ``VALIDATE_INPUTS`` is also called, with ComfyUI's rule that the inputs it
    names skip the built-in range and choice checks."""
    problems: list[Problem] = []
    for node_id, node in prompt.items():
        if not isinstance(node, dict) or "class_type" not in node:
            problems.append(Problem(str(node_id), None, None, None,
                                    "the node has no class_type",
                                    "export the workflow again from ComfyUI"))
        elif not isinstance(node.get("inputs", {}), dict):
            problems.append(Problem(str(node_id), str(node["class_type"]), None, "inputs",
                                    "'inputs' must be an object of input names to values",
                                    "export the workflow again from ComfyUI"))
        elif node["class_type"] not in object_info:
            close = difflib.get_close_matches(node["class_type"], list(object_info), 1)
            problems.append(Problem(
                str(node_id), node["class_type"], _title(node), None,
                f"unknown node type {node['class_type']!r}",
                f"did you mean {close[0]!r}?" if close else
                "install the node pack that provides it, or remove the node"))
    if problems:
        return problems
    outputs = [node_id for node_id, node in prompt.items()
               if object_info[node["class_type"]].get("output_node")]
    if not outputs:
        return [Problem(None, None, None, None, "the workflow has no output node",
                        "add a node that saves or shows a result (e.g. a Save node)")]
    try:
        execution_order(prompt, outputs)
    except WorkflowLoop as loop:
        node_id, origin = loop.path[-2], loop.path[-1]
        node = prompt[node_id]
        name = next((n for n, v in (node.get("inputs") or {}).items()
                     if _is_link(v) and str(v[0]) == origin), None)
        return [Problem(str(node_id), node.get("class_type"), _title(node), name,
                        str(loop), "remove one of these links: a node cannot depend on its own "
                        "output")]
    for node_id in _ancestors_first(prompt, outputs):
        cls = (classes or {}).get(prompt[node_id]["class_type"])
        problems.extend(_check_node(node_id, prompt, object_info, cls))
    return problems


def check_inputs(prompt: Mapping[str, dict], object_info: Mapping[str, dict],
                 inputs: Iterable[tuple[str, str]]) -> list[Problem]:
    """The built-in checks of some value inputs only (e.g. the seeds of a batch whose other
    inputs were validated with :func:`validate_prompt` already)."""
    problems = []
    for node_id, name in inputs:
        node = prompt[node_id]
        info = object_info[node["class_type"]]
        spec, value = input_spec(info, name), (node.get("inputs") or {}).get(name)
        if spec is None or value is None or isinstance(value, (list, dict)):
            continue
        title = _title(node)
        if title == info.get("display_name"):
            title = None

        def problem(input_name, message, fix=None):
            return Problem(str(node_id), node["class_type"], title, input_name, message, fix)

        problems.extend(_check_value(name, value, spec[1], spec[2], problem))
    return problems


def _ancestors_first(prompt: Mapping[str, dict], outputs: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    stack = list(outputs)
    while stack:
        node_id = stack.pop()
        if node_id in seen or node_id not in prompt:
            continue
        seen.add(node_id)
        for value in prompt[node_id].get("inputs", {}).values():
            if _is_link(value):
                stack.append(str(value[0]))
    return sorted(seen, key=_id_sort_key)


def _id_sort_key(node_id: str):
    parts = str(node_id).split(":")
    return [(0, int(p)) if p.isdigit() else (1, p) for p in parts]


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[1], int) \
        and isinstance(value[0], (str, int))


def _title(node: Mapping) -> str | None:
    return (node.get("_meta") or {}).get("title")


def _check_node(node_id: str, prompt: Mapping[str, dict], object_info: Mapping[str, dict],
                cls: type | None = None):
    node = prompt[node_id]
    class_type = node["class_type"]
    info = object_info[class_type]
    inputs = node.get("inputs") or {}

    title = _title(node)
    if title == info.get("display_name"):
        title = None  # only a title the user gave helps find the node

    def problem(name, message, fix=None):
        return Problem(str(node_id), class_type, title, name, message, fix)

    custom = _custom_validation(cls)
    reported: set[str] = set()
    for name in ordered_inputs(info):
        section, kind, options = input_spec(info, name)
        if name not in inputs:
            if section == "required":
                if isinstance(kind, str) and kind not in ("INT", "FLOAT", "STRING", "BOOLEAN",
                                                          "COMBO"):
                    yield problem(name, f"required input is not connected (expects {kind})",
                                  f"connect an output of type {kind} to it")
                else:
                    yield problem(name, "required value is missing",
                                  "set a value in the node (or with --set)")
            continue
        value = inputs[name]
        if isinstance(value, list):
            yield from _check_link(name, value, kind, prompt, object_info, problem)
            continue
        if isinstance(value, dict) and "__value__" in value:
            value = value["__value__"]
        checked_by_node = custom is not None and (custom[1] or name in custom[0])
        found = list(_check_value(name, value, kind, options, problem,
                                  builtin_checks=not checked_by_node))
        yield from found
        if found:
            reported.add(name)
        elif not isinstance(inputs[name], dict):
            inputs[name] = _coerced(value, kind)  # "2" -> 2, as ComfyUI stores it
    if custom is not None:
        for found in _call_custom_validation(cls, custom, node, info, prompt, object_info,
                                             problem):
            if found.input not in reported:  # said once is enough
                yield found


def _custom_validation(cls: type | None):
    """``(argument names, takes **kwargs)`` of a class's VALIDATE_INPUTS, or None."""
    function = getattr(cls, "VALIDATE_INPUTS", None) if cls is not None else None
    if function is None:
        return None
    spec = inspect.getfullargspec(function)
    return [a for a in spec.args if a not in ("cls", "s", "self")], spec.varkw is not None


def _call_custom_validation(cls, custom, node, info, prompt, object_info, problem):
    names, takes_all = custom
    inputs = node.get("inputs") or {}
    arguments, received = {}, {}
    for name, value in inputs.items():
        if input_spec(info, name) is None:
            continue
        if isinstance(value, list):  # a link: ComfyUI passes None at validation time
            origin = prompt.get(str(value[0])) or {}
            outputs = object_info.get(origin.get("class_type"), {}).get("output") or []
            if _is_link(value) and value[1] < len(outputs):
                received[name] = outputs[value[1]]
            value = None
        if not (takes_all or name in names):
            continue
        elif isinstance(value, dict) and "__value__" in value:
            value = value["__value__"]
        arguments[name] = value
    if "input_types" in names:
        arguments["input_types"] = received
    try:
        verdict = cls.VALIDATE_INPUTS(**arguments)
    except Exception as err:  # noqa: BLE001 - reported like ComfyUI reports it
        verdict = f"{type(err).__name__}: {err}"
    if verdict is not True:
        named = [n for n in arguments if n != "input_types"]
        if verdict is False:
            yield problem(named[0] if len(named) == 1 else None, "the node rejected its inputs")
            return
        for line in str(verdict).splitlines() or [str(verdict)]:
            # "<input>: <problem>. Fix: <fix>" (this pack's wording) names its input itself
            name, sep, rest = line.partition(": ")
            if sep and name in named:
                message, _, fix = rest.partition(". Fix: ")
                yield problem(name, f"the node rejected its inputs: {message}", fix or None)
            else:
                yield problem(named[0] if len(named) == 1 else None,
                              f"the node rejected its inputs: {line}")


def _check_link(name, value, kind, prompt, object_info, problem):
    if not _is_link(value):
        yield problem(name, f"{value!r} is not a link (expected [node id, output index])",
                      "export the workflow again; list values must be written as "
                      "{\"__value__\": [...]}")
        return
    origin_id, slot = str(value[0]), value[1]
    origin = prompt.get(origin_id)
    if origin is None:
        yield problem(name, f"is linked to node #{origin_id}, which is not in the workflow",
                      "reconnect the input")
        return
    origin_info = object_info.get(origin.get("class_type"), {})
    outputs = origin_info.get("output") or []
    if not 0 <= slot < len(outputs):
        yield problem(name, f"is linked to output {slot} of #{origin_id} "
                            f"{origin.get('class_type')}, which has only {len(outputs)} outputs",
                      "reconnect the input")
        return
    received = outputs[slot]
    if not types_compatible(received, kind):
        names = origin_info.get("output_name") or outputs
        expected = "a choice" if isinstance(kind, list) else kind
        yield problem(name, f"expects {expected} but is connected to output "
                            f"{names[slot]!r} ({received}) of #{origin_id} {origin['class_type']}",
                      f"connect an output of type {expected} instead")


def types_compatible(received: Any, expected: Any) -> bool:
    """ComfyUI's link check: equal, a wildcard, or comma-separated type sets that fit."""
    if isinstance(expected, list) or expected == "COMBO":
        return isinstance(received, list) or received in ("COMBO", "*")
    if isinstance(received, list):
        return expected == "*"
    if received == expected or "*" in (received, expected):
        return True
    got = {t.strip() for t in str(received).split(",")}
    want = {t.strip() for t in str(expected).split(",")}
    return got <= want or want <= got


def _check_value(name, value, kind, options, problem, builtin_checks: bool = True):
    choices = combo_options(kind, options)
    if choices is not None:
        if builtin_checks and value not in choices and not _annotated_path(value):
            yield problem(name, f"{value!r} is not one of the choices", _choice_fix(value, choices))
        return
    try:
        if kind == "INT":
            if isinstance(value, float) and not value.is_integer():
                raise ValueError("not a whole number")
            number = int(value)
        elif kind == "FLOAT":
            if isinstance(value, bool):
                raise ValueError("not a number")
            number = float(value)
            if not math.isfinite(number):
                yield problem(name, f"{value!r} is not a finite number (NaN and infinity would "
                                    "turn the result black)", "give it an ordinary number")
                return
        elif kind == "BOOLEAN":
            if not isinstance(value, bool):
                raise ValueError("not true/false")
            return
        elif kind == "STRING":
            if not isinstance(value, str):
                raise ValueError("not text")
            return
        else:
            yield problem(name, f"expects a connection ({kind}) but has the value {value!r}",
                          f"connect an output of type {kind} to it")
            return
    except (TypeError, ValueError):
        article = {"INT": "a whole number", "FLOAT": "a number", "BOOLEAN": "true or false",
                   "STRING": "text"}[kind]
        yield problem(name, f"{value!r} is not {article}", f"give it {article}")
        return
    low, high = options.get("min"), options.get("max")
    if not builtin_checks:
        return
    if low is not None and number < low:
        yield problem(name, f"{number} is below the minimum {low}", _range_fix(low, high))
    elif high is not None and number > high:
        yield problem(name, f"{number} is above the maximum {high}", _range_fix(low, high))


def _coerced(value, kind):
    """A checked INT/FLOAT value as the number the node receives (``"2"`` -> ``2``)."""
    if kind == "INT":
        return int(value) if isinstance(value, (str, float)) else value
    if kind == "FLOAT" and not isinstance(value, float):
        return float(value)
    return value


def _annotated_path(value) -> bool:
    """``"name.png [output]"``: ComfyUI's way to pick a file from another folder."""
    return isinstance(value, str) and value.endswith((" [input]", " [output]", " [temp]"))


def _range_fix(low, high) -> str:
    if low is not None and high is not None:
        return f"use a value from {low} to {high}"
    return f"use a value of at least {low}" if low is not None else f"use at most {high}"


def _choice_fix(value, choices: list) -> str:
    if not choices:
        return "the list is empty: put the file into the folder the node reads from"
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], 3)
    if len(choices) <= MAX_LISTED_CHOICES:
        listed = ", ".join(repr(c) for c in choices)
        return f"pick one of {listed}" + (f" (closest: {close[0]!r})" if close else "")
    hint = f"; closest: {', '.join(repr(c) for c in close)}" if close else ""
    return f"pick one of the {len(choices)} choices{hint}"


# --- errors reported by a ComfyUI server -------------------------------------------------------

_SERVER_ERROR_WORDS = {
    "required_input_missing": "required input is missing",
    "bad_linked_input": "the link is malformed",
    "return_type_mismatch": "is connected to an output of the wrong type",
    "exception_during_inner_validation": "a node it depends on failed to validate",
    "exception_during_validation": "validation raised an error",
    "invalid_input_type": "the value has the wrong type",
    "value_smaller_than_min": "the value is below the minimum",
    "value_bigger_than_max": "the value is above the maximum",
    "value_not_in_list": "the value is not one of the choices",
    "custom_validation_failed": "the node rejected the value",
}


def problems_from_node_errors(node_errors: Mapping[str, dict],
                              prompt: Mapping[str, dict] | None = None) -> list[Problem]:
    """ComfyUI's ``node_errors`` (from ``POST /prompt``) as plain-worded problems."""
    prompt = prompt or {}
    problems = []
    for node_id, entry in (node_errors or {}).items():
        node = prompt.get(str(node_id), {})
        class_type = entry.get("class_type") or node.get("class_type")
        for error in entry.get("errors") or []:
            extra = error.get("extra_info") or {}
            name = extra.get("input_name")
            words = _SERVER_ERROR_WORDS.get(error.get("type"), error.get("message", "error"))
            details = error.get("details") or ""
            if "received_value" in extra:
                words += f" (got {extra['received_value']!r})"
            config = extra.get("input_config")
            fix = None
            if isinstance(config, list) and len(config) == 2 and isinstance(config[1], dict):
                low, high = config[1].get("min"), config[1].get("max")
                if error.get("type") in ("value_smaller_than_min", "value_bigger_than_max"):
                    fix = _range_fix(low, high)
                elif error.get("type") == "value_not_in_list" and isinstance(config[0], list):
                    fix = _choice_fix(extra.get("received_value"), config[0])
            if name and details.startswith(f"{name} - "):  # ComfyUI's "<input> - <reason>"
                details = details[len(name) + 3:]
            if fix is None and details and details != name:
                words += f": {details}"
            problems.append(Problem(str(node_id), class_type, _title(node), name, words, fix))
        if not entry.get("errors"):
            problems.append(Problem(str(node_id), class_type, _title(node), None,
                                    "failed validation (no details from the server)"))
    return problems


def problems_from_server_error(body: Mapping, prompt: Mapping[str, dict] | None = None
                               ) -> list[Problem]:
    """A ``POST /prompt`` 400 body: per-node problems, else the top-level error."""
    problems = problems_from_node_errors(body.get("node_errors") or {}, prompt)
    if problems:
        return problems
    error = body.get("error") or {}
    if isinstance(error, str):
        return [Problem(None, None, None, None, error)]
    message = error.get("message") or "the server rejected the workflow"
    details = error.get("details")
    return [Problem(None, None, None, None, f"{message} ({details})" if details else message)]
