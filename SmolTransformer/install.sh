#!/usr/bin/env bash
# Install SmolHub (all model folders, editable) from the repository root. Optional extras:
#   FLASH=1 ./install.sh     also builds the flash-attn package (CUDA only; --attn-impl flash_attn)
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -r requirements.txt
python -m pip install -e .
if [[ "${FLASH:-0}" == "1" ]]; then
  python -m pip install flash-attn --no-build-isolation
fi
python -c "from SmolTransformer.config import FAMILY; print('SmolTransformer ready:', FAMILY.description)"
