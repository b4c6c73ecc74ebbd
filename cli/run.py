"""``python -m comfyui_videodit run WORKFLOW.json``: run a workflow headless with this pack's nodes.

Steps: read the file (UI or API format), convert it with our own node definitions, apply
``--set`` overrides, validate like ComfyUI (every problem listed at once), run, and print where
the outputs went. Existing files are never replaced: save nodes number their files, and the
runner checks that every reported output is a file that did not exist before the run.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

from ..runtime import io_folders
from .executor import ExecutionResult, NodeExecutionError, TerminalProgress, execute_prompt, \
    output_files
from .node_info import object_info
from .overrides import (OverrideError, apply_overrides, coerce_value, resolve_target,
                        split_assignment)
from .validate import Problem, ValidationFailed, validate_prompt
from .workflow_format import WorkflowFormatError, load_workflow, to_api_prompt, workflow_kind


@dataclass
class RunResult:
    prompt: dict
    execution: ExecutionResult
    outputs: list[Path] = field(default_factory=list)  # every file written
    # What to tell the user: the files, except that a folder made for one node's files (a PNG
    # sequence) stands for them once.
    shown: list[Path] = field(default_factory=list)
    # The text the nodes show on their face in ComfyUI (``{"ui": {"text": [...]}}``, e.g. the
    # consistency report's verdict), one "#id Node: text" line each; printed with the progress.
    messages: list[str] = field(default_factory=list)


def build_prompt(workflow: dict, info: Mapping[str, dict], sets: Sequence[str] = (),
                 classes: Mapping[str, type] | None = None) -> tuple[dict, list[str]]:
    """The API prompt to run: converted, overridden and validated (raises with all problems)."""
    conversion = to_api_prompt(workflow, info)
    values = {}
    for text in sets:
        label, raw = split_assignment(text)
        target = resolve_target(label, conversion.prompt, info)
        values[target] = coerce_value(raw, target, conversion.prompt, info)
    prompt = apply_overrides(conversion.prompt, values)
    problems = validate_prompt(prompt, info, classes=classes)
    if problems:
        raise ValidationFailed(problems)
    return prompt, conversion.notes


def run_workflow(workflow: dict | str | Path, *, sets: Sequence[str] = (),
                 output_dir: str | Path | None = None, models_dir: str | Path | None = None,
                 input_dir: str | Path | None = None,
                 classes: Mapping[str, type] | None = None,
                 display_names: Mapping[str, str] | None = None, stream=None) -> RunResult:
    """Run a workflow in this process. Folders given here apply to this run only; folders not
    given come from the environment (``VIDEODIT_OUTPUT_DIR``, ... or ``./output``)."""
    stream = stream or sys.stderr
    if classes is None:
        from ..nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

        classes, display_names = NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
    if isinstance(workflow, (str, Path)):
        workflow = load_workflow(workflow)
    with _folders(output_dir, input_dir, models_dir):
        out_root = io_folders.get_output_dir()  # set first: file choices list folder contents
        _prepare_output_dir(out_root)
        info = object_info(classes, display_names)
        prompt, notes = build_prompt(workflow, info, sets, classes)
        for note in notes:
            stream.write(f"note: {note}\n")
        before = _snapshot(out_root)
        extra = {"workflow": workflow} if workflow_kind(workflow) == "ui" else None
        execution = execute_prompt(prompt, classes, extra_pnginfo=extra,
                                   progress=TerminalProgress(stream), display_names=display_names)
        paths, shown = [], []
        for node_id, ui in execution.ui.items():
            written = []
            for entry in output_files({node_id: ui}):
                kind = entry.get("type", "output")
                getter = getattr(io_folders, f"get_{kind}_dir", io_folders.get_output_dir)
                path = (getter() / entry.get("subfolder", "") / entry["filename"]).resolve()
                if path in before:
                    raise RuntimeError(f"{path} existed before this run and was written again; "
                                       "the save node must choose a new name (please report "
                                       "this)")
                written.append(path)
            paths.extend(written)
            shown.extend(_collapse_new_folder(written, before, out_root.resolve()))
        messages = node_messages(prompt, execution, display_names or {})
        for message in messages:
            stream.write(message + "\n")
    return RunResult(prompt, execution, paths, shown, messages)


def node_messages(prompt: Mapping[str, dict], execution: ExecutionResult,
                  display_names: Mapping[str, str]) -> list[str]:
    """``#id Label: text`` for every ``text`` entry of the nodes' UI outputs, in run order."""
    messages = []
    for node_id in execution.order:
        texts = (execution.ui.get(node_id) or {}).get("text") or []
        node = prompt[node_id]
        label = ((node.get("_meta") or {}).get("title")
                 or display_names.get(node["class_type"]) or node["class_type"])
        for text in texts:
            body = str(text).strip().replace("\n", "\n    ")
            messages.append(f"#{node_id} {label}: {body}")
    return messages


def _collapse_new_folder(files: list[Path], before: set[Path], root: Path) -> list[Path]:
    """``[folder]`` when a node's several files all sit in one folder that this run created
    (a PNG sequence's frames), else the files."""
    folders = {f.parent for f in files}
    if len(files) > 1 and len(folders) == 1:
        folder = folders.pop()
        if folder != root and not any(p.is_relative_to(folder) for p in before):
            return [folder]
    return files


def _prepare_output_dir(folder: Path) -> None:
    """Create the output folder and make sure files can be written there, before anything runs."""
    fix = "choose another folder with --output-dir (or VIDEODIT_OUTPUT_DIR)"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ValidationFailed([Problem(None, None, None, "--output-dir",
                                        f"the output folder {folder} cannot be created "
                                        f"({err.strerror or err})", fix)]) from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise ValidationFailed([Problem(None, None, None, "--output-dir",
                                        f"the output folder {folder} is not writable", fix)])


@contextlib.contextmanager
def _folders(output_dir, input_dir, models_dir):
    """Point the pack's folders at the given ones for the duration of a run."""
    from ..runtime import model_folders

    def resolved(path):
        return Path(path).expanduser().resolve()

    if output_dir is not None:
        io_folders.set_output_dir(resolved(output_dir))
    if input_dir is not None:
        io_folders.set_input_dir(resolved(input_dir))
    if models_dir is not None:
        model_folders.set_models_dir(resolved(models_dir))
    try:
        yield
    finally:
        if output_dir is not None:
            io_folders.set_output_dir(None)
        if input_dir is not None:
            io_folders.set_input_dir(None)
        if models_dir is not None:
            model_folders.set_models_dir(None)


def _snapshot(folder: Path) -> set[Path]:
    return {p.resolve() for p in folder.rglob("*") if p.is_file()} if folder.is_dir() else set()


def run_from_args(args) -> int:
    try:
        result = run_workflow(args.workflow, sets=args.set or [], output_dir=args.output_dir,
                              models_dir=args.models_dir, input_dir=args.input_dir)
    except (WorkflowFormatError, OverrideError, ValidationFailed) as err:
        sys.stderr.write(f"error: {err}\nNothing was run.\n")
        return 2
    except NodeExecutionError as err:
        sys.stderr.write(f"error: {err}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("\ncancelled\n")
        return 130
    if result.shown:
        sys.stdout.write("\n".join(str(p) for p in result.shown) + "\n")
    else:
        sys.stderr.write("finished; no node reported an output file\n")
    if args.print_ui:
        sys.stdout.write(json.dumps(result.execution.ui, default=str) + "\n")
    return 0


def add_arguments(parser) -> None:
    parser.add_argument("workflow", help="workflow JSON (UI format as saved, or API format)")
    parser.add_argument("--set", action="append", metavar="NODE.INPUT=VALUE",
                        help="override an input: NODE is a node id, title or type")
    parser.add_argument("--output-dir", metavar="DIR", help="where outputs go (default ./output)")
    parser.add_argument("--input-dir", metavar="DIR",
                        help="folder that file inputs (videos, images) are read from "
                             "(default ./input or VIDEODIT_INPUT_DIR)")
    parser.add_argument("--models-dir", metavar="DIR",
                        help="models folder with ComfyUI's sub-folders (diffusion_models, vae, ...)")
    parser.add_argument("--print-ui", action="store_true",
                        help="also print the nodes' UI outputs as JSON")

