"""What every VideoDiT node shares: its id, display name, category and error wording.

Nodes use ComfyUI's classic class contract (``INPUT_TYPES``, ``RETURN_TYPES``, ``FUNCTION``,
...), which needs no ComfyUI import. :func:`videodit_node` registers a class under its id and
wraps its ``FUNCTION`` so any :class:`~..errors.InputError` raised below it names the node.
"""
from __future__ import annotations

import functools
import inspect
import math

from ..errors import InputError

CATEGORY_ROOT = "VideoDiT"


def videodit_node(node_id: str, display_name: str, stage: str):
    """Class decorator: set the id, display name and ``VideoDiT/<stage>`` category."""
    if not node_id.startswith("VideoDiT"):
        raise ValueError(f"node id {node_id!r} must start with 'VideoDiT'")
    if not display_name.startswith("VideoDiT "):
        raise ValueError(f"display name {display_name!r} must start with 'VideoDiT '")

    def decorate(cls):
        cls.NODE_ID = node_id
        cls.DISPLAY_NAME = display_name
        cls.CATEGORY = f"{CATEGORY_ROOT}/{stage}"
        method_name = cls.FUNCTION
        method = getattr(cls, method_name)
        signature = inspect.signature(method)

        @functools.wraps(method)
        def run_naming_errors(self, *args, **kwargs):
            try:
                _refuse_non_finite(_named_arguments(signature, self, args, kwargs))
                return method(self, *args, **kwargs)
            except InputError as err:
                raise err.with_node(display_name)

        setattr(cls, method_name, run_naming_errors)
        return cls

    return decorate


def _named_arguments(signature, self, args, kwargs) -> dict:
    if not args:
        return kwargs
    try:
        return signature.bind_partial(self, *args, **kwargs).arguments
    except TypeError:  # the call itself will say what is wrong
        return kwargs


def _non_finite_error(name: str, value: float) -> InputError:
    return InputError(f"{value} is not a finite number", input=name,
                      fix="give it an ordinary number (NaN and infinity are not allowed)")


def _refuse_non_finite(kwargs) -> None:
    """A NaN or infinite number widget would only show up as a black clip at the end."""
    for name, value in kwargs.items():
        if isinstance(value, float) and not math.isfinite(value):
            raise _non_finite_error(name, value)


def validate_numbers(cls, **values) -> bool | str:
    """``VALIDATE_INPUTS`` body for number widgets: refuse NaN and infinity when the workflow
    is queued (ComfyUI's own range check lets them through, and they would end as a black clip
    after the whole render). Naming an input in ``VALIDATE_INPUTS`` turns ComfyUI's range check
    off for it, so the ranges of ``INPUT_TYPES`` are checked here too. Linked inputs arrive as
    None and are checked when the node runs."""
    spec = cls.INPUT_TYPES()
    found = []
    for name, value in values.items():
        entry = (spec.get("required") or {}).get(name) or (spec.get("optional") or {}).get(name)
        options = entry[1] if entry and len(entry) > 1 and isinstance(entry[1], dict) else {}
        if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        low, high = options.get("min"), options.get("max")
        if not math.isfinite(value):
            found.append(_non_finite_error(name, value))
        elif (low is not None and value < low) or (high is not None and value > high):
            found.append(InputError(f"{value} is outside {low}..{high}", input=name,
                                    fix=f"use a value from {low} to {high}"))
    return "\n".join(map(str, found)) or True


def mappings(classes) -> tuple[dict, dict]:
    """``NODE_CLASS_MAPPINGS`` and ``NODE_DISPLAY_NAME_MAPPINGS`` for a list of node classes."""
    return ({cls.NODE_ID: cls for cls in classes}, {cls.NODE_ID: cls.DISPLAY_NAME for cls in classes})
