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

from typing import Any

from logsage.ingest.readers.base import ReadContext, ReadResult
from logsage.ingest.readers.console_log import BAD_LINE, CONSOLE_SUFFIXES, read_step_lines, sniff

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


def parse_line(text: str) -> Any:
    """(iteration, [(name, value)]) of an `Iter N: Name value, ...` line; None for console noise;
    BAD_LINE when one part is not `Name value` (the whole line is unreadable then)."""
    m = _LINE.match(text)
    if m is None:
        return None
    fields: list[tuple[str, float]] = []
    for part in m[2].split(", "):
        f = _FIELD.match(part.strip())
        if f is None:
            return BAD_LINE
        fields.append((re.sub(r"\s+", "_", f[1].strip()).lower(), float(f[2])))
    return (int(m[1]), fields) if fields else BAD_LINE


def read(paths: list[Path], *, ctx: ReadContext) -> ReadResult:
    return read_step_lines(paths, format=FORMAT, precision=PRECISION, parse=parse_line, other=_OTHER,
                           canonical_other=lambda name: name.replace("/", "_per_"), what="'Iter N: ...' (MLX-LM)")
