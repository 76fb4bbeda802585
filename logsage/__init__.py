"""logsage: replay fine-tuning logs through stopping rules, score the decisions, ship the checkpoint.

The public Python API (everything the CLI does can be done from here):

    >>> import logsage
    >>> run = logsage.load_history("runs/qwen-lora")          # any supported log, file or folder
    >>> run.metric("eval_loss").values                         # numpy array, by global step

Names are imported lazily so that `import logsage` (and `logsage --help`) stays
fast; torch, transformers and peft are never imported here.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "LogsageError": "logsage.core.errors",
    "Checkpoint": "logsage.core.history",
    "Cleanup": "logsage.core.history",
    "History": "logsage.core.history",
    "Series": "logsage.core.history",
    "FORMATS": "logsage.ingest",
    "formats": "logsage.ingest",
    "load_history": "logsage.ingest",
    "stitch_histories": "logsage.ingest",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'logsage' has no attribute {name!r}")
    value = getattr(importlib.import_module(mod), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
