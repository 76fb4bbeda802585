"""Reader for torchtune's ``DiskLogger`` files (``<output_dir>/logs/log_<unix time>.txt``).

``torchtune/training/metric_logging.py`` writes ``Step {step} | {name}:{value}`` for one
metric and ``Step {step} | name:value name:value `` (space-separated, a trailing space) for
a dict::

    Step 1 | loss:1.8392 lr:2e-05 tokens_per_second_per_gpu:1204.5 peak_memory_active:9.1 ...

The step is torchtune's global step. ``loss`` is the training loss; torchtune's recipes log
no validation by default (a recipe with ``run_val_every_n_steps`` logs ``val_loss``, an
evaluation by the alias table). A value printed as ``tensor(0.5)`` is read as 0.5. Claimed
on the name ``log_*.txt`` and at least two ``Step N | name:value`` lines; any other
non-blank line is counted as unparsable. Precision float64 (Python's float repr).
"""

from __future__ import annotations

import re
from pathlib import Path

from typing import Any

from logsage.ingest.readers.base import ReadContext, ReadResult
from logsage.ingest.readers.console_log import BAD_LINE, read_step_lines

FORMAT = "torchtune"
DESCRIPTION = "torchtune DiskLogger log_*.txt (Step N | loss:... lr:...)"
PRECISION = "float64"

_SIGNATURE = re.compile(rb"(?m)^Step \d+ \| [\w/.\-]+:")
_LINE = re.compile(r"^Step (\d+) \| (.*)$")
_TENSOR = re.compile(r"^tensor\((.*?)(?:, .*)?\)$")
_OTHER = ("tokens_per_second_per_gpu", "peak_memory_active", "peak_memory_alloc", "peak_memory_reserved",
          "tokens_per_second", "throughput")


def claims(path: Path, head: bytes) -> bool:
    return (path.suffix.lower() == ".txt" and path.name.startswith("log_")
            and len(_SIGNATURE.findall(head)) >= 2)


def parse_line(text: str) -> Any:
    """(step, [(name, value)]) of a `Step N | name:value ...` line; None for a blank line; BAD_LINE
    for any other line, or one with a token that is not name:value."""
    m = _LINE.match(text.strip())
    if m is None:
        return BAD_LINE if text.strip() else None
    fields: list[tuple[str, str]] = []
    for token in m[2].split():
        name, sep, value = token.rpartition(":")
        if not sep or not name:
            return BAD_LINE
        t = _TENSOR.match(value)
        fields.append((name, t[1] if t else value))
    return (int(m[1]), fields) if fields else BAD_LINE


def read(paths: list[Path], *, ctx: ReadContext) -> ReadResult:
    return read_step_lines(paths, format=FORMAT, precision=PRECISION, parse=parse_line, other=_OTHER,
                           canonical_other=lambda name: name, what="'Step N | name:value' (torchtune DiskLogger)")
