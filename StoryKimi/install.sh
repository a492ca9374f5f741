#!/usr/bin/env bash
# Install SmolHub (all model folders and the `smolhub` command) from the repository root.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -r requirements.txt
python -m pip install -e .
