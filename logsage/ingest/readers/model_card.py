"""Reader for the "Training results" table of a model card (`README.md`) written by HF Trainer or axolotl.

`Trainer.create_model_card` builds the table from ``log_history``: one row per evaluation,

    | Training Loss | Epoch | Step | Validation Loss | Accuracy | F1 |

``Training Loss`` is the last train loss logged before that evaluation (``No log`` when none
was), ``Validation Loss`` is ``eval_loss``, and every further column is an ``eval_<metric>``
title-cased (``F1 Macro`` for ``eval_f1_macro``): those are eval series here too. ``No log``
and blank cells are missing. Values are rounded to 4 decimals, so the precision is
``rounded`` and a ``rounded`` cleanup says so: any other log of the run wins.

Best effort, never failing the read: the axolotl YAML config embedded in a ``<details>``
block goes to ``meta["axolotl_config"]`` with a few keys lifted (``num_epochs``,
``evals_per_epoch``, ``lora_r``...); the "Training hyperparameters" list to
``meta["hyperparameters"]``; the "results on the evaluation set" list to `summary`
(``- Loss: 3.0309`` as ``eval_loss``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from logsage.core.errors import IngestError
from logsage.core.history import Cleanup
from logsage.ingest.text import PointCollector, as_step, cell_value, natural_key, plain
from logsage.ingest.readers.base import ReadContext, ReadResult, read_text

FORMAT = "model-card"
DESCRIPTION = "Training-results table of a Hugging Face / axolotl model card (README.md)"
PRECISION = "rounded"

_TABLE_HEADER = re.compile(r"^\s*\|.*\bStep\b.*\|\s*$")
_NO_LOG = {"no log"}
_LIFTED = ("base_model", "adapter", "lora_r", "lora_alpha", "lora_dropout", "num_epochs", "evals_per_epoch",
           "eval_steps", "saves_per_epoch", "save_steps", "val_set_size", "learning_rate", "micro_batch_size",
           "gradient_accumulation_steps", "sequence_len", "max_steps")
_MAX_CLAIM_BYTES = 1 << 20


def _has_table(text: str) -> bool:
    return any(_TABLE_HEADER.match(ln) and ("Validation Loss" in ln or "Training Loss" in ln)
               for ln in text.split("\n"))


def claims(path: Path, head: bytes) -> bool:
    if path.suffix.lower() != ".md":
        return False
    if _has_table(head.decode("utf-8", errors="replace")):
        return True
    # The table sits near the end of a card; cards are small, so look at the whole file.
    try:
        if path.stat().st_size > _MAX_CLAIM_BYTES:
            return False
        return _has_table(path.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return False


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def read(paths: list[Path], *, ctx: ReadContext) -> ReadResult:
    res = ReadResult(format=FORMAT, precision=PRECISION)
    points = PointCollector(format=FORMAT, precision=PRECISION)
    for path in sorted(paths, key=natural_key):
        text = read_text(path)
        res.files.append(str(path))
        _read_table(path, text, points, res)
        _read_extras(text, res)
    res.series, cleanups = points.build()
    res.cleanups.extend(cleanups)
    res.cleanups.append(Cleanup("rounded", "model-card values are rounded to 4 decimals (a summary of the run's "
                                "log, not the log): any other log of the run wins", file="; ".join(res.files)))
    return res


def _read_table(path: Path, text: str, points: PointCollector, res: ReadResult) -> None:
    lines = text.split("\n")
    start = next((i for i, ln in enumerate(lines) if _TABLE_HEADER.match(ln)
                  and ("Validation Loss" in ln or "Training Loss" in ln)), None)
    if start is None:
        raise IngestError(f"{path}: no 'Training results' table (| Training Loss | Epoch | Step | Validation Loss |); "
                          "the card has no training history - use the run's trainer_state.json")
    header = _cells(lines[start])
    step_col = header.index("Step")
    for name in header:
        if name not in ("Training Loss", "Validation Loss", "Epoch", "Step"):
            # Every extra column is an eval metric that the card title-cased ("F1 Macro" <- eval_f1_macro).
            points.name_as(name, canonical="eval_" + re.sub(r"[\s\-]+", "_", name.strip()).lower(), kind="eval")
    rows = 0
    for offset, line in enumerate(lines[start + 1:], start=start + 2):
        if not line.strip().startswith("|"):
            break
        cells = _cells(line)
        if all(set(c) <= set(":- ") for c in cells):  # the |:---:| alignment row
            continue
        if len(cells) != len(header):
            raise IngestError(f"{path}:{offset}: table row has {len(cells)} cells but the header has {len(header)}; "
                              "repair the row")
        step = as_step(cells[step_col])
        if step is None:
            raise IngestError(f"{path}:{offset}: step {cells[step_col]!r} is not an integer; repair the row")
        rows += 1
        for i, name in enumerate(header):
            if i != step_col and cells[i].lower() not in _NO_LOG:
                points.add_cell(name, step, cells[i], file=str(path))
    if not rows:
        raise IngestError(f"{path}:{start + 1}: the Training results table has no rows; "
                          "use the run's trainer_state.json")


def _read_extras(text: str, res: ReadResult) -> None:
    """Best effort: nothing here may fail the read."""
    m = re.search(r"axolotl version: `([^`]+)`", text)
    if m:
        res.meta["axolotl_version"] = m[1]
    m = re.search(r"```yaml\n(.*?)```", text, re.S)
    if m:
        config = plain(_safe_yaml(m[1]))
        if isinstance(config, dict):
            res.meta["axolotl_config"] = config
            for k in _LIFTED:
                if config.get(k) is not None:
                    res.meta[k] = config[k]
            if isinstance(config.get("num_epochs"), (int, float)):
                res.meta.setdefault("num_train_epochs", config["num_epochs"])
    hyper = _bullets(text, "### Training hyperparameters")
    if hyper:
        res.meta["hyperparameters"] = hyper
    for name, value in _bullets(text, "following results on the evaluation set").items():
        if isinstance(value, (int, float)):
            res.summary["eval_" + re.sub(r"[\s\-]+", "_", name.strip()).lower()] = float(value)


def _bullets(text: str, after: str) -> dict[str, Any]:
    """``- key: value`` lines of the list that follows the line containing `after`."""
    i = text.find(after)
    if i < 0:
        return {}
    out: dict[str, Any] = {}
    started = False
    for line in text[i:].split("\n")[1:]:
        m = re.match(r"^- ([^:]+): (.*)$", line.strip())
        if m:
            started = True
            out[m[1].strip()] = _scalar(m[2].strip())
        elif started or line.startswith("#"):
            break
    return out


def _scalar(text: str) -> Any:
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    v = cell_value(text)
    return v if isinstance(v, float) else text


def _safe_yaml(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return None
