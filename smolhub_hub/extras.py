"""Optional dependencies: each belongs to an extra of the package (`pip install 'smolhub[demo]'`, ...).

`smolhub_hub` and the model folders import only the core requirements at top level; a feature that needs
more imports it through `require`, which names the extra to install when the module is missing.
"""

from __future__ import annotations

import importlib

from smolhub_hub.errors import UserError

EXTRA_OF = {"gradio": "demo", "wandb": "wandb", "trl": "alignment", "sacrebleu": "alignment",
            "rapidfuzz": "alignment", "gguf": "gguf", "torchao": "quantize"}


def require(module: str, feature: str):
    """`import module`, or one line saying that `feature` needs it and which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        extra = EXTRA_OF[module.split(".")[0]]
        raise UserError(f"{feature} needs {module}: pip install 'smolhub[{extra}]'") from None
