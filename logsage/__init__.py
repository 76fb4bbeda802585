"""logsage: replay fine-tuning logs through stopping rules, score the decisions, ship the checkpoint.

The public Python API: every stage of the pipeline, importable from here.

    >>> import logsage
    >>> run = logsage.load_history("runs/qwen-lora")          # ingest: any supported log, file or folder
    >>> result = logsage.replay([run], ["hf:patience=3", "gl"])  # replay: scored decisions per rule
    >>> best = logsage.tune([run, ...])                         # analysis: which rule next time

Stages, in pipeline order: ingest (`load_history`, `stitch_histories`, `History`) ->
rules (`list_rules`, `get_rule`) -> replay (`replay`, `replay_paths`, `decide_values`,
`Decision`, `ReplayResult`) -> analysis (`tune`, `tune_paths`) -> report
(`build_report`, `report_paths`) -> ship (`select_checkpoint`, `export_checkpoint`,
`prune`) and live (`Watcher`, `watch`). Errors are `LogsageError` subclasses.

Names are imported lazily so that `import logsage` (and `logsage --help`) stays
fast; torch, transformers and peft are never imported here.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    # core
    "LogsageError": "logsage.core.errors",
    "UsageError": "logsage.core.errors",
    "IngestError": "logsage.core.errors",
    "Checkpoint": "logsage.core.history",
    "Cleanup": "logsage.core.history",
    "History": "logsage.core.history",
    "Series": "logsage.core.history",
    # ingest
    "FORMATS": "logsage.ingest",
    "formats": "logsage.ingest",
    "load_history": "logsage.ingest",
    "stitch_histories": "logsage.ingest",
    # rules
    "get_rule": "logsage.rules.base",
    "list_rules": "logsage.rules.base",
    # replay
    "Decision": "logsage.decide.engine",
    "ReplayResult": "logsage.decide.engine",
    "decide_values": "logsage.decide.engine",
    "expand_rules": "logsage.decide.engine",
    "replay": "logsage.decide.engine",
    "replay_paths": "logsage.decide.engine",
    # analysis
    "TuneResult": "logsage.analysis.tune",
    "tune": "logsage.analysis.tune",
    "tune_paths": "logsage.analysis.tune",
    # report
    "build_report": "logsage.report.html",
    "report_paths": "logsage.report.html",
    "report_runs": "logsage.report.html",
    # ship
    "ExportOptions": "logsage.ship.select",
    "ReevalOptions": "logsage.ship.select",
    "select_checkpoint": "logsage.ship.select",
    "export_checkpoint": "logsage.ship.export",
    "prune": "logsage.ship.prune",
    # live
    "Watcher": "logsage.live.watch",
    "watch": "logsage.live.watch",
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
