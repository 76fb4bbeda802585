"""Public pieces of ingest for readers that follow a growing run (`logsage.live`).

`load_history` reads a run once; a follower re-lists a run folder, sniffs new files and
merges partial results at every poll. These functions give it the same rules as the
one-shot loader (which files are logs, which reader claims a file, how sources merge)
without reaching into ingest's private names.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Iterator

from logsage.core.errors import UsageError
from logsage.core.history import History
from logsage.core.runfolder import RUN_MANIFEST
from logsage.ingest import (KNOWN_NON_LOGS, NOT_LOG_SUFFIXES, SUMMARY_FILES, SkippedFiles, formats, reader_modules,
                            walk_run)


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


def is_run_summary(path: Path) -> bool:
    """all_results.json and its kin, and logsage's own manifest: part of a run, never a curve."""
    return path.name in SUMMARY_FILES or path.name == RUN_MANIFEST


def never_a_log(path: Path) -> bool:
    """Weights, configs, tokenizers, images, code: files of a run folder no reader should sniff."""
    return path.name in KNOWN_NON_LOGS or path.suffix.lower() in NOT_LOG_SUFFIXES


def run_files(root: Path, *, skip_checkpoints: set[str] | None = None,
              found_checkpoint: set[str] | None = None) -> Iterator[Path]:
    """The run folder's files as `load_history` lists them: the same walk (sorted, regular files only:
    a FIFO named like a log never blocks a follower; a checkpoint-N/ folder gives only its
    trainer_state.json).

    skip_checkpoints: checkpoint folder names not to list again (a follower that already
        follows their trainer_state.json), so that listing does not grow with the checkpoints.
    found_checkpoint: filled with the names of checkpoint folders whose trainer_state.json
        was listed.
    """
    yield from walk_run(root, History(path=str(root), format=""), SkippedFiles(root), skip_checkpoints=skip_checkpoints,
                    found_checkpoint=found_checkpoint)


__all__ = ["is_run_summary", "never_a_log", "readers", "run_files"]
