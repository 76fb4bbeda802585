"""Reader for the console of an MLX-LM fine-tune (``mlx_lm.lora``; saved with ``| tee train.log`` / nohup).

``mlx_lm/tuner/trainer.py`` prints one line per report and per validation::

    Iter 10: Train loss 2.345, Learning Rate 1.000e-05, It/sec 0.512, Tokens/sec 401.3, Trained Tokens 7840, Peak mem 5.210 GB
    Iter 200: Val loss 1.876, Val took 12.345s

(the DPO/ORPO/GRPO trainers of forks add ``Chosen reward``, ``Accuracy``, ``Margin`` fields).
The step is ``Iter N`` (MLX-LM's iteration = optimizer step). Each ``Name value[unit]``
field becomes a series named in snake case (``train_loss`` -> canonical ``loss``,
``val_loss`` -> ``eval_loss``); throughput, memory, token counts and ``Val took`` are
bookkeeping. Claimed only when at least two ``Iter N: ... loss`` lines appear in the first
256 KiB; an ``Iter`` line that does not parse is counted. Values are printed with 3
decimals: precision ``rounded``.
"""

from __future__ import annotations

import re
from pathlib import Path

from logsage.core.errors import IngestError
from logsage.core.history import Cleanup
from logsage.ingest.readers.base import ReadContext, ReadResult
from logsage.ingest.readers.console_log import CONSOLE_SUFFIXES, console_lines, sniff
from logsage.ingest.text import PointCollector, natural_key

FORMAT = "mlx-lm"
DESCRIPTION = "console of an MLX-LM fine-tune (Iter N: Train loss ..., Val loss ...)"
PRECISION = "rounded"

_SIGNATURE = re.compile(rb"(?m)^\s*Iter \d+: (Train|Val) loss ")
_LINE = re.compile(r"^\s*Iter (\d+): (.*)$")
_FIELD = re.compile(r"^([A-Za-z][A-Za-z /]*?) (-?(?:\d+\.?\d*(?:e[-+]?\d+)?|nan|inf))\s*([A-Za-z%]*)$")
_OTHER = ("it/sec", "tokens/sec", "trained_tokens", "peak_mem", "val_took")


def claims(path: Path, head: bytes) -> bool:
    if path.suffix.lower() not in CONSOLE_SUFFIXES:
        return False
    return len(_SIGNATURE.findall(sniff(path, head))) >= 2


def read(paths: list[Path], *, ctx: ReadContext) -> ReadResult:
    res = ReadResult(format=FORMAT, precision=PRECISION)
    points = PointCollector(format=FORMAT, precision=PRECISION)
    for path in sorted(paths, key=natural_key):
        file = str(path)
        res.files.append(file)
        bad: list[int] = []
        n = 0
        for lineno, text in console_lines(path):
            m = _LINE.match(text)
            if m is None:
                continue
            fields: list[tuple[str, float]] = []
            for part in m[2].split(", "):
                f = _FIELD.match(part.strip())
                if f is None:
                    fields = []  # one part that is not "Name value" makes the whole line unreadable
                    break
                name = re.sub(r"\s+", "_", f[1].strip()).lower()
                fields.append((name, float(f[2])))
            if not fields:
                bad.append(lineno)
                continue
            n += 1
            for name, _ in fields:
                if name in _OTHER:
                    points.name_as(name, canonical=name.replace("/", "_per_"), kind="other")
            points.add_fields(int(m[1]), fields, file=file)
        if not n:
            raise IngestError(f"{path}: holds no 'Iter N: ...' lines of MLX-LM; pass --format to pick another reader")
        if bad:
            shown = ", ".join(map(str, bad[:5])) + (", ..." if len(bad) > 5 else "")
            res.cleanups.append(Cleanup("dropped_record", f"{len(bad)} 'Iter' line(s) that do not parse skipped "
                                        f"(line {shown})", file=file, count=len(bad)))
    res.series, cleanups = points.build()
    res.cleanups.extend(cleanups)
    return res
