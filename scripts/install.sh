#!/usr/bin/env bash
# Install vpr_ros and what its demo, tests and training need, into the current Python.
# torch is pinned to the CPU build first so nothing pulls in a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet "torch==2.13.0"
python3 -m pip install --quiet -e ".[test,train]"
