"""Node definitions in the shape of ComfyUI's ``GET /object_info``.

The workflow converter and the validator read only this shape, so the same code works with our
own classes (the headless runner) and with any ComfyUI server's ``/object_info`` (the queue
client). The fields and their defaults follow ComfyUI's ``server.py`` ``node_info``.
"""
from __future__ import annotations

import json
from typing import Any, Mapping

# Types the editor shows as a widget (a value in ``widgets_values``); any other type is a socket.
WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
# Inputs the frontend gives a fixed/increment/decrement/randomize control without being asked.
AUTO_CONTROL_NAMES = frozenset({"seed", "noise_seed"})
CONTROL_VALUES = ("fixed", "increment", "decrement", "randomize")


def node_info(node_id: str, cls: type, display_name: str | None = None) -> dict[str, Any]:
    """One node class described exactly as ``GET /object_info`` describes it (JSON types)."""
    inputs = cls.INPUT_TYPES()
    info: dict[str, Any] = {
        "input": inputs,
        "input_order": {section: list(entries) for section, entries in inputs.items()},
        "output": cls.RETURN_TYPES,
        "output_is_list": getattr(cls, "OUTPUT_IS_LIST", [False] * len(cls.RETURN_TYPES)),
        "output_name": getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES),
        "name": node_id,
        "display_name": display_name or node_id,
        "description": getattr(cls, "DESCRIPTION", ""),
        "python_module": getattr(cls, "RELATIVE_PYTHON_MODULE", cls.__module__),
        "category": getattr(cls, "CATEGORY", "sd"),
        "output_node": getattr(cls, "OUTPUT_NODE", False) is True,
    }
    if hasattr(cls, "OUTPUT_TOOLTIPS"):
        info["output_tooltips"] = cls.OUTPUT_TOOLTIPS
    if getattr(cls, "DEPRECATED", False):
        info["deprecated"] = True
    if getattr(cls, "EXPERIMENTAL", False):
        info["experimental"] = True
    # A JSON round trip gives the server's types (tuples become lists), so local and remote
    # definitions are interchangeable.
    return json.loads(json.dumps(info, default=str))


def object_info(class_mappings: Mapping[str, type],
                display_names: Mapping[str, str] | None = None) -> dict[str, dict]:
    """``GET /object_info`` for a registry of node classes."""
    display_names = display_names or {}
    return {node_id: node_info(node_id, cls, display_names.get(node_id))
            for node_id, cls in class_mappings.items()}


def input_spec(info: Mapping, name: str) -> tuple[str, Any, dict] | None:
    """``(section, type, options)`` of one input (section: required/optional/hidden), or None."""
    for section in ("required", "optional", "hidden"):
        entries = info.get("input", {}).get(section) or {}
        if name in entries:
            entry = entries[name]
            if isinstance(entry, (list, tuple)):
                kind = entry[0] if entry else None
                options = entry[1] if len(entry) > 1 and isinstance(entry[1], dict) else {}
            else:  # hidden inputs are plain strings ("PROMPT", "UNIQUE_ID", ...)
                kind, options = entry, {}
            return section, kind, options
    return None


def ordered_inputs(info: Mapping) -> list[str]:
    """Required then optional input names, in the order the node declares them."""
    order = info.get("input_order") or {
        section: list(entries) for section, entries in (info.get("input") or {}).items()}
    return list(order.get("required", [])) + list(order.get("optional", []))


def combo_options(kind: Any, options: Mapping) -> list | None:
    """The allowed values of a combo input (a list type, or ``"COMBO"`` + ``options``)."""
    if isinstance(kind, list):
        return kind
    if kind == "COMBO":
        return list(options.get("options") or [])
    return None


def is_widget(kind: Any, options: Mapping) -> bool:
    """Does the editor store this input in ``widgets_values``?"""
    if options.get("forceInput") or options.get("defaultInput"):
        return False
    return isinstance(kind, list) or kind in WIDGET_TYPES


def has_control_widget(name: str, kind: Any, options: Mapping) -> bool:
    """Does the editor add a control_after_generate value right after this widget?"""
    flag = options.get("control_after_generate")
    if flag is not None:
        return bool(flag)
    return kind == "INT" and name in AUTO_CONTROL_NAMES


def has_upload_widget(kind: Any, options: Mapping) -> bool:
    """Combos with an upload button. The editor adds the button as the last required widget;
    current editors do not save a value for it (it is ``serialize: false``), older ones saved
    ``"image"`` there. Workflows from either are read correctly; files we write carry none."""
    return combo_options(kind, options) is not None and any(
        options.get(flag) for flag in ("image_upload", "video_upload", "audio_upload",
                                       "animated_image_upload"))


def title_of(info: Mapping | None, class_type: str) -> str:
    return (info or {}).get("display_name") or class_type
