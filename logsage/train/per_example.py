"""Per-example eval losses during training: capture them at each evaluation, write them into its checkpoint.

At every evaluation the Trainer (see `recipe.LogsageTrainer`) hands each eval
batch's logits and labels to `PerExampleCapture`, which keeps, per example, the
summed token cross-entropy and the number of target tokens, computed exactly as the
causal-LM loss of transformers computes them (float32 logits, labels shifted by one,
-100 ignored). Under several processes the rows of all ranks are gathered, and the
duplicates that the distributed sampler pads the last step with are dropped, so the
list is complete on rank 0.

The checkpoint folder of an evaluation is created by the save that follows it, so
`PerExampleWriter.on_save` writes `checkpoint-<step>/per_example_eval_loss.jsonl`
(rank 0 only) from what was captured at that step. The file format and the formula
that recombines it into the logged `eval_loss` are in `logsage.ingest.per_example`.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from logsage.core.runfolder import checkpoint_name
from logsage.ingest.per_example import FILENAME


def per_example_losses(logits: Any, labels: Any) -> tuple[Any, Any]:
    """(loss_sum, n_tokens) per row of a causal-LM batch, as transformers' ForCausalLMLoss counts them."""
    import torch
    import torch.nn.functional as F

    shift = torch.nn.functional.pad(labels, (0, 1), value=-100)[..., 1:]
    sums = []
    for i in range(logits.shape[0]):  # one row at a time: no second full-batch float32 logits copy
        sums.append(F.cross_entropy(logits[i].float(), shift[i].to(logits.device), ignore_index=-100,
                                    reduction="sum"))
    return torch.stack(sums).detach(), (shift != -100).sum(dim=-1).detach()


class PerExampleCapture:
    """Collects one evaluation's per-example rows; `finish` gathers ranks and files them under the step."""

    def __init__(self, ids: list[Any]):
        self.ids = ids  # dataset index -> stable example id
        self._rows: list[tuple[int, int, float, int]] | None = None  # (batch, index, loss_sum, n_tokens)
        self._batch = 0
        self.pending: dict[int, list[dict[str, Any]]] = {}  # step -> rows not yet written
        self.by_step: dict[int, list[dict[str, Any]]] = {}  # every evaluation of this process's run

    @property
    def active(self) -> bool:
        return self._rows is not None

    def begin(self) -> None:
        self._rows = []
        self._batch = 0

    def add_batch(self, index: Any, logits: Any, labels: Any) -> None:
        if self._rows is None:
            return
        loss_sum, n_tokens = per_example_losses(logits, labels)
        for i, s, n in zip(index.tolist(), loss_sum.float().cpu().tolist(), n_tokens.cpu().tolist()):
            self._rows.append((self._batch, int(i), float(s), int(n)))
        self._batch += 1

    def finish(self, step: int) -> list[dict[str, Any]]:
        rows, self._rows = self._rows or [], None
        rows = _gather_rows(rows)
        seen: set[int] = set()
        out = []
        for batch, index, loss_sum, n_tokens in sorted(rows):
            if index in seen:  # a padded duplicate from the distributed sampler
                continue
            seen.add(index)
            out.append({"id": self.ids[index], "loss_sum": loss_sum if math.isfinite(loss_sum) else None,
                        "n_tokens": n_tokens, "batch": batch})
        self.pending[step] = out
        self.by_step[step] = out
        return out


def _gather_rows(rows: list[tuple]) -> list[tuple]:
    """All ranks' rows on every rank (a no-op in one process)."""
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover
        return rows
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return rows
    parts: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, rows)
    # Rank order within a step: the Trainer gathers rank 0's batch first.
    merged: list[tuple[Any, ...]] = []  # (batch, rank, id, loss sum, tokens)
    for rank, part in enumerate(parts):
        merged.extend((b, rank, i, s, n) for b, i, s, n in part)
    merged.sort()
    return [(b, i, s, n) for b, _rank, i, s, n in merged]


def write_rows(path: str | os.PathLike, rows: list[dict[str, Any]]) -> None:
    """Write the JSONL file atomically (a temp file, then a rename)."""
    p = Path(path)
    tmp = p.with_name(p.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, allow_nan=False) + "\n")
    os.replace(tmp, p)


class PerExampleWriter(TrainerCallback):
    """On each save, writes the per-example losses captured at that step into its checkpoint folder (rank 0)."""

    def __init__(self, capture: PerExampleCapture):
        self.capture = capture

    def on_save(self, args, state, control, **kwargs):
        rows = self.capture.pending.pop(state.global_step, None)
        if rows is None or not state.is_world_process_zero:
            return control
        folder = Path(args.output_dir) / checkpoint_name(state.global_step)
        if folder.is_dir():
            write_rows(folder / FILENAME, rows)
        return control
