#!/usr/bin/env bash
# Fresh machine → the main job: install, then map the bundled day sample and relocalize the
# night sample (`vpr-ros demo`). Extra arguments go to `vpr-ros demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
vpr-ros demo "$@"
