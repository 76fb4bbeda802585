"""Per-example eval losses of a run: `checkpoint-N/per_example_eval_loss.jsonl` files into arrays.

`logsage train` writes, at every evaluation, one JSON line per eval example:

    {"id": "eval-03", "loss_sum": 4.172, "n_tokens": 3, "batch": 1}

`loss_sum` is the example's summed token cross-entropy (natural log) over its
`n_tokens` response tokens (the causal-LM targets, after the one-token shift);
`batch` is the index of the eval batch that held it (under several processes: the
eval step, whose batch spans all ranks). `read_per_example(run_dir)` returns
``{step: {"id", "loss_sum", "n_tokens", "batch": numpy arrays}}`` for the whole run
(the significance rule pairs the examples of two evaluations by id).

`hf_eval_loss` recombines one evaluation the way Hugging Face Trainer (5.x)
computes `eval_loss`: each batch's loss is its token mean (sum over its examples'
losses / its tokens), and `eval_loss` is the mean of the batch losses weighted by
the number of examples in each batch (the Trainer repeats each batch loss
`eval_batch_size` times and trims the last, smaller batch to its real size).
Only numpy is imported here.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from logsage.core.errors import IngestError
from logsage.core.runfolder import PER_EXAMPLE_FILE, checkpoint_step, step_conflicts

FILENAME = PER_EXAMPLE_FILE


def read_per_example_file(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """One evaluation's per-example losses as arrays (ids: int64 when all are integers, else str)."""
    ids: list[Any] = []
    loss_sum: list[float] = []
    n_tokens: list[int] = []
    batch: list[int] = []
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as e:
        raise IngestError(f"{p}: cannot be read ({e.strerror}); check the file") from None
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
            ids.append(rec["id"])
            loss_sum.append(math.nan if rec["loss_sum"] is None else float(rec["loss_sum"]))
            n_tokens.append(int(rec["n_tokens"]))
            batch.append(int(rec["batch"]))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise IngestError(
                f"{p}:{lineno}: not a per-example loss record ({type(e).__name__}: {e}); expected "
                '{"id", "loss_sum", "n_tokens", "batch"} - the file may be truncated') from None
    all_int = all(isinstance(i, int) and not isinstance(i, bool) for i in ids)
    return {
        "id": np.asarray(ids, dtype=np.int64) if (ids and all_int) else np.asarray([str(i) for i in ids], dtype=str),
        "loss_sum": np.asarray(loss_sum, dtype=np.float64),
        "n_tokens": np.asarray(n_tokens, dtype=np.int64),
        "batch": np.asarray(batch, dtype=np.int64),
    }


def read_per_example(run_dir: str | os.PathLike) -> dict[int, dict[str, np.ndarray]]:
    """Every `checkpoint-N/per_example_eval_loss.jsonl` of a run folder, by step N (empty if none)."""
    root = Path(run_dir)
    out: dict[int, dict[str, np.ndarray]] = {}
    if not root.is_dir():
        return out
    children = [c for c in root.iterdir() if checkpoint_step(c.name) is not None and c.is_dir()]
    conflicts = step_conflicts(c.name for c in children)  # two folders for one step: neither is that step's
    for child in children:
        step = checkpoint_step(child.name)
        f = child / FILENAME
        if step is not None and step not in conflicts and f.is_file():
            out[step] = read_per_example_file(f)
    return dict(sorted(out.items()))


def hf_eval_loss(per_example: dict[str, np.ndarray]) -> float:
    """Recombine one evaluation's per-example losses into the `eval_loss` HF Trainer logs.

    Per batch: sum(loss_sum) / sum(n_tokens); then the mean over batches, each
    weighted by its number of examples. (Exact for one process, and under several
    processes when the eval set divides evenly into eval steps; otherwise the
    Trainer itself counts some padded duplicates in the last step.)
    """
    batch = per_example["batch"]
    if batch.size == 0:
        return math.nan
    losses, weights = [], []
    for b in np.unique(batch):
        sel = batch == b
        losses.append(per_example["loss_sum"][sel].sum() / per_example["n_tokens"][sel].sum())
        weights.append(int(sel.sum()))
    return float(np.average(np.asarray(losses), weights=np.asarray(weights, dtype=np.float64)))


def per_example_mean_loss(per_example: dict[str, np.ndarray]) -> np.ndarray:
    """Each example's mean token loss (loss_sum / n_tokens): the paired samples a significance test compares."""
    n = per_example["n_tokens"].astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return per_example["loss_sum"] / n
