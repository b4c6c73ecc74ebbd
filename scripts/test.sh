#!/usr/bin/env bash
# The test command from the README: install the pack with its test extra, then run pytest.
# torch==2.13.0 is pinned first because that pin is a CPU build; a looser one can pull a
# multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q --upgrade pip
python -m pip install -q torch==2.13.0
python -m pip install -q -e ".[test]"
python -m pytest "$@"
