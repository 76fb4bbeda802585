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

from logsage.core.errors import IngestError
from logsage.core.history import Cleanup
from logsage.ingest.readers.base import ReadContext, ReadResult
from logsage.ingest.readers.console_log import console_lines
from logsage.ingest.text import PointCollector, natural_key

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


def read(paths: list[Path], *, ctx: ReadContext) -> ReadResult:
    res = ReadResult(format=FORMAT, precision=PRECISION)
    points = PointCollector(format=FORMAT, precision=PRECISION)
    for path in sorted(paths, key=natural_key):
        file = str(path)
        res.files.append(file)
        bad: list[int] = []
        n = 0
        for lineno, text in console_lines(path):
            m = _LINE.match(text.strip())
            if m is None:
                if text.strip():
                    bad.append(lineno)
                continue
            fields: list[tuple[str, str]] = []
            for token in m[2].split():
                name, sep, value = token.rpartition(":")
                if not sep or not name:
                    fields = []  # one token that is not name:value makes the whole line unreadable
                    break
                t = _TENSOR.match(value)
                fields.append((name, t[1] if t else value))
            if not fields:
                bad.append(lineno)
                continue
            n += 1
            for name, _ in fields:
                if name in _OTHER:
                    points.name_as(name, canonical=name, kind="other")
            points.add_fields(int(m[1]), fields, file=file)
        if not n:
            raise IngestError(f"{path}: holds no 'Step N | name:value' lines of torchtune's DiskLogger; "
                              "pass --format to pick another reader")
        if bad:
            shown = ", ".join(map(str, bad[:5])) + (", ..." if len(bad) > 5 else "")
            res.cleanups.append(Cleanup("dropped_record", f"{len(bad)} line(s) that are not 'Step N | name:value' "
                                        f"skipped (line {shown})", file=file, count=len(bad)))
    res.series, cleanups = points.build()
    res.cleanups.extend(cleanups)
    return res
