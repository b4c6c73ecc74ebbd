#!/usr/bin/env bash
# The main-job command from the README: install the pack, then render the demo text-to-video
# workflow with the bundled demo model (CPU, a few seconds) and print where the .mp4 went.
# torch==2.13.0 is pinned first because that pin is a CPU build; a looser one can pull a
# multi-GB CUDA build. Extra arguments go to `python -m comfyui_videodit run`.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q --upgrade pip
python -m pip install -q torch==2.13.0
python -m pip install -q -e .
python -m comfyui_videodit run example_workflows/demo_text_to_video.json "$@"
