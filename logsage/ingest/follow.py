"""Public pieces of ingest for readers that follow a growing run (`logsage.live`).

`load_history` reads a run once; a follower re-lists a run folder, sniffs new files and
merges partial results at every poll. These functions give it the same rules as the
one-shot loader (which files are logs, which reader claims a file, how sources merge)
without reaching into ingest's private names.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import ModuleType
from typing import Iterator

from logsage.core.errors import UsageError
from logsage.core.history import History
from logsage.core.runfolder import RUN_MANIFEST, checkpoint_step
from logsage.ingest import (
    KNOWN_NON_LOGS,
    NOT_LOG_SUFFIXES,
    SUMMARY_FILES,
    merge_sources,
    claiming_reader,
    reader_modules,
    formats,
)
from logsage.ingest.readers.base import ReadResult


def readers(format: str | None = None) -> list[ModuleType]:
    """The reader modules in detection order (only `format`'s when given).

    Raises:
        UsageError: `format` is not a supported format.
    """
    mods = reader_modules()
    if format is None:
        return mods
    mods = [r for r in mods if r.FORMAT == format]
    if not mods:
        raise UsageError(f"unknown format {format!r}; choose one of: {', '.join(formats())}")
    return mods


def reader_for(path: Path, candidates: list[ModuleType]) -> ModuleType | None:
    """The first reader that claims `path` (by name and first bytes), or None."""
    return claiming_reader(path, candidates)


def is_checkpoint_dir(name: str) -> bool:
    """`checkpoint-N` with N in ASCII digits (the one rule, `logsage.core.runfolder`)."""
    return checkpoint_step(name) is not None


def is_run_summary(path: Path) -> bool:
    """all_results.json and its kin, and logsage's own manifest: part of a run, never a curve."""
    return path.name in SUMMARY_FILES or path.name == RUN_MANIFEST


def never_a_log(path: Path) -> bool:
    """Weights, configs, tokenizers, images, code: files of a run folder no reader should sniff."""
    return path.name in KNOWN_NON_LOGS or path.suffix.lower() in NOT_LOG_SUFFIXES


def run_files(root: Path, *, skip_checkpoints: set[str] | None = None,
              found_checkpoint: set[str] | None = None) -> Iterator[Path]:
    """The run folder's files as `load_history` lists them (sorted; a checkpoint-N/ folder gives
    only its trainer_state.json).

    skip_checkpoints: checkpoint folder names not to list again (a follower that already
        follows their trainer_state.json), so that listing does not grow with the checkpoints.
    found_checkpoint: filled with the names of checkpoint folders whose trainer_state.json
        was listed.
    """
    skip = skip_checkpoints or set()
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        parts = here.relative_to(root).parts
        if parts and is_checkpoint_dir(parts[0]):
            dirnames[:] = []
            if len(parts) == 1 and "trainer_state.json" in filenames:
                if found_checkpoint is not None:
                    found_checkpoint.add(parts[0])
                yield here / "trainer_state.json"
            continue
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d != "__pycache__"
                             and not (not parts and d in skip))
        for fn in sorted(filenames):
            yield here / fn


def merge_results(history: History, results: list[ReadResult]) -> None:
    """Combine readers' results into `history` as `load_history` does (the most precise source wins)."""
    merge_sources(history, results)


__all__ = ["is_checkpoint_dir", "is_run_summary", "merge_results", "never_a_log", "reader_for", "readers",
           "run_files"]
