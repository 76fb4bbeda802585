"""Reader for the results file of an OpenAI / Azure OpenAI fine-tuning job (``step_metrics.csv``, ``results.csv``).

The job's result file (``client.files.content(job.result_files[0])``) is a CSV, one row per
step: ``step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy,
train_mean_token_accuracy,full_valid_loss,full_valid_mean_token_accuracy`` (Azure:
``train_mean_token_accuracy``, ``validation_mean_token_accuracy``; the 2023 legacy file:
``step,elapsed_tokens,elapsed_examples,training_loss,training_sequence_accuracy,
training_token_accuracy,validation_loss,...``). Blank cells are steps where a value was not
computed.

* ``valid_loss`` is computed on one validation batch at some steps (noisy);
  ``full_valid_loss`` on the whole validation set at the end of each epoch. When the file
  has ``full_valid_loss`` it is the run's eval loss (canonical ``eval_loss``, the primary
  metric) and ``valid_loss`` becomes ``eval_batch_loss``; otherwise ``valid_loss`` is the
  eval loss. ``full_valid_*``/``valid_*``/``validation_*`` are evaluations, ``train_*``/
  ``training_*`` training series, ``elapsed_*`` bookkeeping.
* Claimed on the header: a ``step`` column and ``train_loss`` with ``valid_loss``,
  ``full_valid_loss`` or ``train_mean_token_accuracy``, or the legacy ``elapsed_tokens``.

Values are as the service wrote them: precision float64.
"""

from __future__ import annotations

import re
from pathlib import Path

from logsage.core.errors import IngestError
from logsage.core.history import Cleanup
from logsage.ingest.readers.base import ReadContext, ReadResult
from logsage.ingest.text import PointCollector, csv_files, find_column, header_of, row_step

FORMAT = "openai-ft"
DESCRIPTION = "OpenAI / Azure OpenAI fine-tuning results CSV (step,train_loss,...,full_valid_loss)"
PRECISION = "float64"


def claims(path: Path, head: bytes) -> bool:
    if path.suffix.lower() != ".csv":
        return False
    cols = set(header_of(head, path))
    if "step" not in cols:
        return False
    if {"elapsed_tokens", "elapsed_examples", "training_loss"} <= cols:
        return True
    return "train_loss" in cols and bool(cols & {"valid_loss", "full_valid_loss", "train_mean_token_accuracy"})


def _name(col: str, has_full: bool) -> tuple[str, str]:
    low = col.lower()
    if low == "full_valid_loss" or (low in ("valid_loss", "validation_loss") and not has_full):
        return "eval_loss", "eval"
    if low in ("valid_loss", "validation_loss"):
        return "eval_batch_loss", "eval"
    for prefix, kind in (("full_valid_", "eval"), ("valid_", "eval"), ("validation_", "eval")):
        if low.startswith(prefix):
            rest = low[len(prefix):]
            return ("eval_full_" if prefix == "full_valid_" else "eval_") + rest, kind
    if low in ("train_loss", "training_loss"):
        return "loss", "train"
    if low.startswith("elapsed_"):
        return low, "other"
    return re.sub(r"^(train|training)_", "", low), "train"


def read(paths: list[Path], *, ctx: ReadContext) -> ReadResult:
    res = ReadResult(format=FORMAT, precision=PRECISION)
    points = PointCollector(format=FORMAT, precision=PRECISION)
    for path, file, table in csv_files(paths, res):
        step_col = find_column(table.header, ("step",))
        if step_col is None:
            raise IngestError(f"{path}: has no 'step' column; not an OpenAI fine-tuning results file - "
                              "pass --format to pick another reader")
        has_full = "full_valid_loss" in table.header
        steps, rows, no_step = [], [], 0
        for lineno, cells in table.rows:
            step = row_step(path, lineno, cells[step_col])
            if step is None:
                no_step += 1
                continue
            steps.append(step)
            rows.append(cells)
        cols = [(i, c) for i, c in enumerate(table.header) if i != step_col and c]
        cols.sort(key=lambda ic: ic[1] != ("full_valid_loss" if has_full else "valid_loss"))
        for i, col in cols:
            canonical, kind = _name(col, has_full)
            points.name_as(col, canonical=canonical, kind=kind)
            points.add_column(col, steps, [c[i].strip() for c in rows], file=file)
        if no_step:
            res.cleanups.append(Cleanup("dropped_record", f"{no_step} row(s) without a step skipped",
                                        file=file, count=no_step))
    res.series, cleanups = points.build()
    res.cleanups.extend(cleanups)
    return res
