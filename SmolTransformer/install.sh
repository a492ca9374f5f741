#!/usr/bin/env bash
# Install SmolHub (every model folder and the `smolhub` command) from the repository root.
# FLASH=1 also builds flash-attn (CUDA only); --dev adds the test tools.
exec bash "$(dirname "$0")/../install.sh" "$@"
