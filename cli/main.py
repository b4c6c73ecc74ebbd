"""Entry point of ``python -m comfyui_videodit`` and of ``videodit`` (the console script pip
installs)."""
from __future__ import annotations

import argparse
import os
import sys


def program_name(argv0: str | None = None) -> str:
    """How the user started us: ``videodit`` (pip's console script) or
    ``python -m comfyui_videodit``, so help and usage lines show a command that works."""
    name = os.path.basename(argv0 if argv0 is not None else (sys.argv[0] if sys.argv else ""))
    if not name or name in ("__main__.py", "-c") or name.startswith("python"):
        return "python -m comfyui_videodit"
    return name.removesuffix(".exe").removesuffix("-script.py")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=program_name(),
                                     description="ComfyUI-VideoDiT command line")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    from . import queue_client, run

    run_parser = commands.add_parser(
        "run", help="run a workflow headless with this pack's nodes",
        description="Run a workflow file (UI or API format) in this process and print the "
                    "paths of its outputs. Existing files are never overwritten.")
    run.add_arguments(run_parser)
    run_parser.set_defaults(handler=run.run_from_args)

    queue_parser = commands.add_parser(
        "queue", help="queue a batch of jobs on ComfyUI servers (resumable)",
        description="Queue jobs (sweeps, seeds, a jobs file) on one or more ComfyUI servers, "
                    "download the outputs and keep a manifest. Re-run the same command to "
                    "resume; Ctrl-C cancels what this client queued.")
    queue_client.add_arguments(queue_parser)
    queue_parser.set_defaults(handler=queue_client.run_from_args)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    return args.handler(args)
