"""Run an API prompt in this process with node classes (no ComfyUI needed).

Follows ComfyUI's execution rules that matter for results: only output nodes and what they
depend on run, each once, in dependency order; a link passes the origin's output at that slot;
unconnected optional inputs are not passed; hidden inputs (``PROMPT``, ``EXTRA_PNGINFO``,
``UNIQUE_ID``) are filled in; list semantics (``INPUT_IS_LIST`` / ``OUTPUT_IS_LIST``: a node
fed a list runs once per item) are kept; a ``{"ui": ..., "result": ...}`` return is split.
"""
from __future__ import annotations

import asyncio
import inspect
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

from .downloads import file_entries



class NodeExecutionError(RuntimeError):
    """A node raised while running; names the node and keeps the original exception."""

    def __init__(self, node_id: str, class_type: str, title: str | None, error: BaseException):
        self.node_id, self.class_type, self.title, self.error = node_id, class_type, title, error
        where = f"#{node_id} {class_type}" + (f" ({title!r})" if title and title != class_type
                                               else "")
        super().__init__(f"{where} failed: {type(error).__name__}: {error}")


@dataclass
class ExecutionResult:
    ui: dict[str, dict] = field(default_factory=dict)  # node id -> merged "ui" dict
    seconds: dict[str, float] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)


class WorkflowLoop(ValueError):
    """Some node depends on itself through its links; ``path`` is the loop, first id again last."""

    def __init__(self, path: list[str], prompt: Mapping[str, dict]):
        self.path = path
        steps = " -> ".join(f"#{n} {(prompt.get(n) or {}).get('class_type', '?')}" for n in path)
        super().__init__(f"the workflow has a loop: {steps}")


def execution_order(prompt: Mapping[str, dict], output_node_ids) -> list[str]:
    """The output nodes and their ancestors, every node after the nodes it reads from.

    Iterative (a chain of thousands of nodes is fine); a loop raises :class:`WorkflowLoop`.
    """
    order: list[str] = []
    state: dict[str, str] = {}
    for start in sorted(output_node_ids, key=lambda i: [int(p) if p.isdigit() else p
                                                        for p in str(i).split(":")]):
        start = str(start)
        if state.get(start) == "done":
            continue
        state[start] = "visiting"
        stack = [(start, iter(_links_of(prompt, start)))]
        while stack:
            node_id, pending = stack[-1]
            origin = next(pending, None)
            if origin is None:
                stack.pop()
                state[node_id] = "done"
                order.append(node_id)
            elif state.get(origin) == "visiting":
                path = [n for n, _ in stack]
                raise WorkflowLoop(path[path.index(origin):] + [origin], prompt)
            elif state.get(origin) != "done" and origin in prompt:
                state[origin] = "visiting"
                stack.append((origin, iter(_links_of(prompt, origin))))
    return order


def _links_of(prompt: Mapping[str, dict], node_id: str) -> list[str]:
    return [str(v[0]) for v in ((prompt[node_id].get("inputs") or {}).values()) if _is_link(v)]


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[1], int)


class TerminalProgress:
    """``[2/5] #7 VideoDiT Sampler`` per node on stderr, with the time each one took."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr

    def node_started(self, position: int, total: int, node_id: str, label: str) -> None:
        self.stream.write(f"[{position}/{total}] #{node_id} {label}\n")
        self.stream.flush()

    def node_finished(self, node_id: str, seconds: float) -> None:
        if seconds >= 0.5:
            self.stream.write(f"        done in {seconds:.1f} s\n")
            self.stream.flush()


def execute_prompt(prompt: Mapping[str, dict], classes: Mapping[str, type], *,
                   extra_pnginfo: dict | None = None, progress: TerminalProgress | None = None,
                   display_names: Mapping[str, str] | None = None) -> ExecutionResult:
    display_names = display_names or {}
    outputs = [node_id for node_id, node in prompt.items()
               if getattr(classes[node["class_type"]], "OUTPUT_NODE", False) is True]
    order = execution_order(prompt, outputs)
    values: dict[str, list[list[Any]]] = {}  # node id -> per output slot, a list of items
    result = ExecutionResult(order=order)
    for position, node_id in enumerate(order, 1):
        node = prompt[node_id]
        class_type = node["class_type"]
        title = (node.get("_meta") or {}).get("title")
        label = title or display_names.get(class_type) or class_type
        if progress:
            progress.node_started(position, len(order), node_id, label)
        started = time.perf_counter()
        try:
            slots, ui = _run_node(node_id, node, classes[class_type], values, prompt,
                                  extra_pnginfo)
        except NodeExecutionError:
            raise
        except Exception as err:  # noqa: BLE001 - reported with the node that raised it
            raise NodeExecutionError(node_id, class_type, title, err) from err
        values[node_id] = slots
        if ui:
            result.ui[node_id] = ui
        result.seconds[node_id] = time.perf_counter() - started
        if progress:
            progress.node_finished(node_id, result.seconds[node_id])
    return result


def _run_node(node_id, node, cls, values, prompt, extra_pnginfo):
    spec = cls.INPUT_TYPES()
    arguments: dict[str, list[Any]] = {}
    for name, value in (node.get("inputs") or {}).items():
        entry = (spec.get("required") or {}).get(name) or (spec.get("optional") or {}).get(name)
        if entry is None:
            continue  # ComfyUI ignores inputs a node does not declare
        raw_link = len(entry) > 1 and isinstance(entry[1], dict) and entry[1].get("rawLink")
        if _is_link(value) and not raw_link:
            origin_slots = values[str(value[0])]
            arguments[name] = origin_slots[value[1]]
        else:
            if isinstance(value, dict) and "__value__" in value:
                value = value["__value__"]
            arguments[name] = [value]
    hidden_values = {"PROMPT": prompt, "EXTRA_PNGINFO": extra_pnginfo, "UNIQUE_ID": node_id}
    for name, kind in (spec.get("hidden") or {}).items():
        arguments[name] = [hidden_values.get(kind)]

    instance = cls()
    function = getattr(instance, cls.FUNCTION)
    if getattr(cls, "INPUT_IS_LIST", False):
        calls = [{name: items for name, items in arguments.items()}]
    else:
        count = max((len(items) for items in arguments.values()), default=1)
        if any(len(items) == 0 for items in arguments.values()):
            count = 0
        calls = [{name: items[min(i, len(items) - 1)] for name, items in arguments.items()}
                 for i in range(count)]
    returned = [_call(function, kwargs) for kwargs in calls]

    output_is_list = list(getattr(cls, "OUTPUT_IS_LIST", [False] * len(cls.RETURN_TYPES)))
    slots: list[list[Any]] = [[] for _ in cls.RETURN_TYPES]
    ui: dict[str, list] = {}
    for value in returned:
        if isinstance(value, dict):
            for key, items in (value.get("ui") or {}).items():
                ui.setdefault(key, []).extend(items if isinstance(items, (list, tuple))
                                              else [items])
            value = value.get("result", ())
        value = tuple(value or ())
        for slot in range(len(slots)):
            if slot < len(value):
                if slot < len(output_is_list) and output_is_list[slot]:
                    slots[slot].extend(value[slot])
                else:
                    slots[slot].append(value[slot])
    return slots, ui


def _call(function, kwargs):
    value = function(**kwargs)
    if inspect.isawaitable(value):
        value = asyncio.run(_await(value))
    return value


async def _await(awaitable):
    return await awaitable


def output_files(ui: Mapping[str, dict]) -> list[dict]:
    """``{filename, subfolder, type}`` entries of every node's UI output."""
    return list(file_entries(list(ui.values())))
