#!/usr/bin/env bash
# Install SmolHub (every model folder and the `smolhub` command) from the repository root.
exec bash "$(dirname "$0")/../install.sh" "$@"
