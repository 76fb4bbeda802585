"""Reader for Hugging Face `trainer_state.json` (Trainer, TRL, LLaMA-Factory, ms-swift, axolotl).

Given the file, a run folder or a folder of `checkpoint-N/`: the loader hands every
trainer_state.json of the run to `read`, which keeps the one with the longest
history (largest `global_step`, then most records; the run root's file wins a tie,
being written last), and records the others as superseded.

`log_history` mixes record kinds in one list; they are split here:

* train and eval records (`loss`, `eval_loss`, `eval_<set>_loss`, TRL/DPO keys...)
  become points of series named as written, at their `step`;
* `epoch` becomes a series of its own, so every step has an epoch;
* the final summary record (`train_runtime`, `train_loss`, ...) is a run summary
  (`meta`/`summary`), never a point of a curve;
* an evaluation written after that summary at a step the curve already has (a
  final `trainer.evaluate()`, of the best model under load_best_model_at_end) is a
  summary too; the periodic value stays on the curve;
* records without a `step` (`predict_*` from Seq2Seq scripts) cannot be placed on
  the curve: their values go to `summary` and the count is recorded.

Lenient about what Python's json writes and Windows checkouts leave: bare
`NaN`/`Infinity` tokens, CRLF, a BOM, Windows paths in `best_model_checkpoint`
(kept verbatim in meta, never used to find files). Values are float64.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from logsage.core.errors import IngestError
from logsage.core.history import Cleanup
from logsage.ingest.readers.base import ReadContext, ReadResult, loads_lenient, read_text, series_from_columns, to_float

FORMAT = "trainer-state"
DESCRIPTION = "Hugging Face trainer_state.json (Trainer, TRL, LLaMA-Factory, ms-swift, axolotl)"
PRECISION = "float64"

_SUMMARY_KEYS = {"train_runtime", "train_samples_per_second", "train_steps_per_second", "train_loss", "total_flos"}
_META_KEYS = ("global_step", "max_steps", "num_train_epochs", "eval_steps", "save_steps", "logging_steps",
              "best_metric", "best_model_checkpoint", "best_global_step", "train_batch_size", "epoch",
              "stateful_callbacks")


def claims(path: Path, head: bytes) -> bool:
    if path.name == "trainer_state.json":
        return True
    if path.suffix.lower() in (".jsonl", ".csv", ".md"):
        return False
    start = head.lstrip()
    return start.startswith(b"{") and b'"log_history"' in head and b'"global_step"' in head


def _load(path: Path) -> dict[str, Any]:
    data = loads_lenient(read_text(path), file=str(path))
    if not isinstance(data, dict) or not isinstance(data.get("log_history"), list):
        raise IngestError(f"{path}: not a trainer_state.json (no log_history list); pass --format to pick another reader")
    return data


def read(paths: list[Path], *, ctx: ReadContext) -> ReadResult:
    res = ReadResult(format=FORMAT, precision=PRECISION)
    loaded = []
    for p in paths:
        try:
            loaded.append((p, _load(p)))
        except IngestError as e:
            if len(paths) == 1:
                raise
            res.warnings.append(str(e))
            res.cleanups.append(Cleanup("skipped_file", str(e), file=str(p)))
    if not loaded:
        raise IngestError(f"{paths[0]}: no readable trainer_state.json; check the files or pass --format")

    def rank(item: tuple[Path, dict]) -> tuple:
        p, d = item
        is_root = ctx.run_root is not None and p.parent == ctx.run_root
        return (int(d.get("global_step") or 0), len(d["log_history"]), is_root)

    path, state = max(loaded, key=rank)
    for p, d in loaded:
        if p is not path:
            res.cleanups.append(Cleanup(
                "skipped_file",
                f"{p}: superseded by {path} (global_step {d.get('global_step')} vs {state.get('global_step')})",
                file=str(p)))
    res.files.append(str(path))
    for k in _META_KEYS:
        if k in state:
            res.meta[k] = state[k]
    res.meta["trainer_state_file"] = str(path)
    ctrl = (state.get("stateful_callbacks") or {}).get("TrainerControl", {}).get("args", {})
    if "should_training_stop" in ctrl:
        res.meta["should_training_stop"] = ctrl["should_training_stop"]

    columns: dict[str, tuple[list[int], list[float]]] = {}
    no_step: dict[str, float] = {}
    n_no_step = 0
    n_null = 0
    after_summary = False
    n_final_evals = 0
    for rec in state["log_history"]:
        if not isinstance(rec, dict):
            continue
        step = rec.get("step")
        if _SUMMARY_KEYS & rec.keys() and not any(k.startswith("eval_") for k in rec):
            after_summary = True
            for k, v in rec.items():
                fv = to_float(v)
                if fv is not None and k not in ("step", "epoch"):
                    res.summary[k] = fv
                    res.meta.setdefault(k, fv)
            continue
        if after_summary and isinstance(step, int) and any(
                step in columns.get(k, ((), ()))[0] for k in rec if k.startswith("eval_")):
            # trainer.evaluate() after training (often of the best model, with
            # load_best_model_at_end) at a step the curve already has: a summary.
            n_final_evals += 1
            res.summary.update({k: fv for k, v in rec.items()
                                if k.startswith("eval_") and (fv := to_float(v)) is not None})
            continue
        if not isinstance(step, (int, float)) or isinstance(step, bool):
            n_no_step += 1
            for k, v in rec.items():
                fv = to_float(v)
                if fv is not None:
                    no_step[k] = fv
            continue
        for k, v in rec.items():
            if k == "step":
                continue
            fv = to_float(v)
            if fv is None:
                if v is None:
                    n_null += 1
                continue
            col = columns.setdefault(k, ([], []))
            col[0].append(int(step))
            col[1].append(fv)
    if n_no_step:
        res.summary.update({k: v for k, v in no_step.items() if k != "epoch"})
        res.cleanups.append(Cleanup(
            "dropped_record",
            f"{n_no_step} log_history record(s) without a step (e.g. predict_*) kept as run summary, not curve points",
            file=str(path), count=n_no_step))
    if n_final_evals:
        res.cleanups.append(Cleanup(
            "duplicates",
            f"{n_final_evals} evaluation record(s) written after the training summary at an already evaluated step "
            "(a final trainer.evaluate(), e.g. of the best model) kept as run summary, not curve points",
            file=str(path), count=n_final_evals))
    if n_null:
        res.cleanups.append(Cleanup("dropped_record", f"{n_null} null value(s) in log_history skipped",
                                    file=str(path), count=n_null))
    series, cleanups = series_from_columns(columns, file=str(path), format=FORMAT, precision=PRECISION)
    res.series.extend(series)
    res.cleanups.extend(cleanups)
    return res
