"""Write docs/nodes.md, the node reference, from the node definitions themselves.

Every input, output and tooltip comes from the classes, so the reference cannot drift from
the code (tests/test_node_reference.py fails when this file is stale).
Run: python scripts/build_node_reference.py
"""
from __future__ import annotations

import sys
from pathlib import Path

from comfyui_videodit import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

OUT = Path(__file__).resolve().parent.parent / "docs" / "nodes.md"


def _cell(text) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _kind(entry) -> str:
    kind, options = entry[0], (entry[1] if len(entry) > 1 else {})
    if isinstance(kind, list):
        # File lists have no default and depend on the machine; fixed choices are spelled out.
        return "file from the list" if "default" not in options else " / ".join(map(str, kind))
    return str(kind)


def _default(options: dict) -> str:
    if "default" not in options:
        return ""
    value = options["default"]
    return f"`{value}`" if not isinstance(value, str) or len(value) < 40 else "(text)"


def render() -> str:
    lines = ["# Node reference", "",
             "Generated from the node definitions by `scripts/build_node_reference.py`; do not "
             "edit by hand. Inputs are listed in widget order, which saved workflows depend on.",
             ""]
    by_category: dict[str, list[str]] = {}
    for node_id, cls in NODE_CLASS_MAPPINGS.items():
        by_category.setdefault(cls.CATEGORY, []).append(node_id)
    for category in sorted(by_category):
        lines += [f"## {category}", ""]
        for node_id in sorted(by_category[category]):
            cls = NODE_CLASS_MAPPINGS[node_id]
            lines += [f"### {NODE_DISPLAY_NAME_MAPPINGS[node_id]} (`{node_id}`)", "",
                      cls.DESCRIPTION, "", "| input | type | default | what it does |",
                      "|---|---|---|---|"]
            spec = cls.INPUT_TYPES()
            for section in ("required", "optional"):
                for name, entry in spec.get(section, {}).items():
                    options = entry[1] if len(entry) > 1 else {}
                    label = name if section == "required" else f"{name} (optional)"
                    lines.append(f"| `{label}` | {_cell(_kind(entry))} | {_cell(_default(options))} "
                                 f"| {_cell(options.get('tooltip', ''))} |")
            names = getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)
            if cls.RETURN_TYPES:
                lines += ["", "| output | type | what it is |", "|---|---|---|"]
                for name, kind, tip in zip(names, cls.RETURN_TYPES, cls.OUTPUT_TOOLTIPS):
                    lines.append(f"| `{name}` | {kind} | {_cell(tip)} |")
            lines.append("")
    return "\n".join(lines)


def main() -> int:
    OUT.parent.mkdir(exist_ok=True)
    OUT.write_text(render(), encoding="utf-8")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
