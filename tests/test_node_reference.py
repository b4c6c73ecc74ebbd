"""docs/nodes.md is the node reference generated from the node definitions; it must be current."""
from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_node_reference_is_up_to_date():
    spec = importlib.util.spec_from_file_location("build_node_reference",
                                                  ROOT / "scripts" / "build_node_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    current = (ROOT / "docs" / "nodes.md").read_text(encoding="utf-8")
    assert current == module.render(), "docs/nodes.md is stale: run scripts/build_node_reference.py"
    from comfyui_videodit import NODE_CLASS_MAPPINGS
    for node_id in NODE_CLASS_MAPPINGS:
        assert f"(`{node_id}`)" in current
