#!/usr/bin/env bash
# Install vpr_ros and what its demo, tests and training need, into the current Python.
# torch comes first, from PyTorch's own CPU wheel index as well as PyPI: for the same version
# its CPU build (2.13.0+cpu) ranks above PyPI's plain 2.13.0, which on Linux x86_64 is the
# multi-GB CUDA build. Where download.pytorch.org cannot be reached pip warns, retries once and
# takes what PyPI or a local wheel directory offers.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet --retries 1 \
  --extra-index-url https://download.pytorch.org/whl/cpu "torch==2.13.0"
python3 -m pip install --quiet -e ".[test,train]"
