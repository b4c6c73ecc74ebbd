"""What every VideoDiT node shares: its id, display name, category and error wording.

Nodes use ComfyUI's classic class contract (``INPUT_TYPES``, ``RETURN_TYPES``, ``FUNCTION``,
...), which needs no ComfyUI import. :func:`videodit_node` registers a class under its id and
wraps its ``FUNCTION`` so any :class:`~..errors.InputError` raised below it names the node.
"""
from __future__ import annotations

import functools

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

        @functools.wraps(method)
        def run_naming_errors(self, *args, **kwargs):
            try:
                return method(self, *args, **kwargs)
            except InputError as err:
                raise err.with_node(display_name)

        setattr(cls, method_name, run_naming_errors)
        return cls

    return decorate


def mappings(classes) -> tuple[dict, dict]:
    """``NODE_CLASS_MAPPINGS`` and ``NODE_DISPLAY_NAME_MAPPINGS`` for a list of node classes."""
    return ({cls.NODE_ID: cls for cls in classes}, {cls.NODE_ID: cls.DISPLAY_NAME for cls in classes})
