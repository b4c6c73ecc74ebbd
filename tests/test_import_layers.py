"""The imports go one way: nodes/cli -> runtime -> library folders -> networks.

Library folders run the same in ComfyUI, the CLI and scripts because they never ask which host
they are in: progress, Cancel, previews, output paths and device placement come in as arguments.
This reads every module's imports (statically, so lazy imports inside functions count too).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = ("core", "networks", "model_loaders", "families", "samplers", "consistency", "media")
HOST_SIDE = {"runtime", "nodes", "cli"}
# What each library folder may import from the pack (besides errors.py and itself).
ALLOWED = {
    "core": set(),
    "networks": set(),
    "model_loaders": {"core", "networks"},
    "families": {"core", "networks", "model_loaders"},
    "samplers": {"core"},
    "consistency": {"core"},
    "media": {"core"},
}
HOST_MODULES = ("comfy", "comfy_extras", "comfy_execution", "comfy_api", "folder_paths",
                "server", "execution", "node_helpers", "latent_preview")


def pack_imports(path: Path):
    """(line, imported top-level pack folder or module) for relative imports; absolute ones
    are returned as ("abs", name)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package_depth = len(path.relative_to(ROOT).parts) - 1
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 0:
                yield node.lineno, ("abs", node.module or "")
                continue
            up = node.level - 1
            base = list(path.relative_to(ROOT).parts[:package_depth])
            base = base[:len(base) - up] if up else base
            target = base + (node.module.split(".") if node.module else [])
            if not target:   # "from .. import x": x is a top-level folder or module
                for alias in node.names:
                    yield node.lineno, ("rel", alias.name)
            else:
                yield node.lineno, ("rel", target[0])
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, ("abs", alias.name)


@pytest.mark.parametrize("folder", LIBRARY)
def test_library_folders_import_only_what_lies_below_them(folder):
    wrong = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for line, (kind, name) in pack_imports(path):
            where = f"{path.relative_to(ROOT)}:{line}"
            if kind == "abs":
                top = name.split(".")[0]
                if top in HOST_MODULES or top == "comfyui_videodit":
                    wrong.append(f"{where} imports {name}")
                continue
            if name in (folder, "errors"):
                continue
            if name in HOST_SIDE or name not in ALLOWED[folder]:
                wrong.append(f"{where} imports {name}")
    assert not wrong, "\n".join(wrong)


def test_no_library_module_looks_up_comfyui_by_name():
    """Not even through strings (importlib / sys.modules lookups of ComfyUI modules)."""
    found = []
    for folder in LIBRARY:
        for path in sorted((ROOT / folder).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            for needle in ('"comfy.', "'comfy.", '"folder_paths"', "'folder_paths'",
                           "comfy_module("):
                if needle in text:
                    found.append(f"{path.relative_to(ROOT)}: {needle}")
    assert not found, "\n".join(found)
