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

Nothing is dropped silently (each is a `Cleanup` with a count and an example):

* a value that is not a number (``"0.5x"``, ``[0.4]``, ``{"value": 0.3}``) is dropped
  and counted per metric; ``null`` is counted as before;
* a step written as a string of digits (``"step": "5"``) is read as that step and
  said so (``coerced``); a step written as a float that is a whole number (``10.0``) is
  that step;
* a step that is not a whole number - fractional (``10.7``), NaN, infinite, beyond
  int64, text (``"forty"``), a bool - drops its record (counted, with examples).
  Decision: a fractional step is never rounded or truncated onto a real step (10.7
  must not replace the evaluation at step 10, nor invent one at 11);
* duplicate keys in one JSON object are reported (``duplicates``); as in every JSON
  reader the last value wins;
* log_history entries that are not objects are counted.
Meta values of the wrong type (``"global_step": "forty"``, a list for
``stateful_callbacks``) are left out with a warning, never a traceback.

Speed (issue 14): the file is decoded by `logsage.ingest.fastjson` (orjson when it is
installed, bare NaN/Infinity included; the stdlib decoder otherwise, with the same result),
and records are read by shape: records with the same keys are gathered and each
column is converted to numpy at once; only unusual values take the per-value path.
"""

from __future__ import annotations

import json
import math
from array import array
from itertools import chain
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np

from logsage.core.errors import IngestError
from logsage.core.history import Cleanup
from logsage.ingest.fastjson import QUOTED_NON_FINITE, count_keys, decode, duplicate_keys
from logsage.ingest.readers.base import ReadContext, ReadResult, max_json_bytes, read_bytes, series_from_columns, to_float

FORMAT = "trainer-state"
DESCRIPTION = "Hugging Face trainer_state.json (Trainer, TRL, LLaMA-Factory, ms-swift, axolotl)"
PRECISION = "float64"

_SUMMARY_KEYS = frozenset({"train_runtime", "train_samples_per_second", "train_steps_per_second", "train_loss",
                           "total_flos"})
_NUMERIC_META = ("global_step", "max_steps", "num_train_epochs", "eval_steps", "save_steps", "logging_steps",
                 "best_metric", "best_global_step", "train_batch_size", "epoch")
_OTHER_META = ("best_model_checkpoint", "stateful_callbacks")
_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_EXAMPLES = 3


def claims(path: Path, head: bytes) -> bool:
    if path.name == "trainer_state.json":
        return True
    if path.suffix.lower() in (".jsonl", ".csv", ".md"):
        return False
    start = head.lstrip()
    return start.startswith(b"{") and b'"log_history"' in head and b'"global_step"' in head


def _load(path: Path) -> tuple[dict[str, Any], bytes]:
    data = read_bytes(path, max_bytes=max_json_bytes(), what="JSON log")
    state, quoted = decode(data, file=str(path))
    if not isinstance(state, dict) or not isinstance(state.get("log_history"), list):
        raise IngestError(f"{path}: not a trainer_state.json (no log_history list); pass --format to pick another reader")
    if quoted:  # meta values written as bare NaN/Infinity: floats again
        for k, v in state.items():
            if isinstance(v, str) and v in QUOTED_NON_FINITE:
                state[k] = QUOTED_NON_FINITE[v]
    return state, data


# --------------------------------------------------------------------- cells
def _step_of(v: Any) -> tuple[int | None, str]:
    """(step, how): how is "" (an int), "float" (10.0), "string" ("5"), else why it is no step."""
    t = type(v)
    if t is int:
        return (v, "") if _INT64_MIN <= v <= _INT64_MAX else (None, "beyond int64")
    if t is str:
        try:
            i = int(v.strip())
        except ValueError:
            f = to_float(v)
            if f is not None and not math.isfinite(f):
                return None, "not finite"
            if f is None or f != int(f):
                return None, "not a whole number"
            i = int(f)
        return (i, "string") if _INT64_MIN <= i <= _INT64_MAX else (None, "beyond int64")
    if t is float:
        if not math.isfinite(v):
            return None, "not finite"
        if v != int(v):
            return None, "fractional"
        i = int(v)
        return (i, "float") if _INT64_MIN <= i <= _INT64_MAX else (None, "beyond int64")
    return None, "not a number"


def _value_of(v: Any) -> float | None:
    """A float from a value cell, None when it is not a number (never raises)."""
    try:
        return to_float(v)
    except (OverflowError, ValueError):
        return None


def _short(v: Any) -> str:
    """A value as a short example for a message (never raises)."""
    if isinstance(v, str) and v in QUOTED_NON_FINITE:  # shown as the file has it, whichever decoder read it
        return v
    try:
        text = json.dumps(v, allow_nan=True, default=str) if not isinstance(v, str) else repr(v)
    except (RecursionError, ValueError, TypeError):
        text = f"a deeply nested {type(v).__name__}"
    return text if len(text) <= 30 else text[:27] + "..."


class _Tally:
    """Counts and first examples of one kind of problem."""

    def __init__(self) -> None:
        self.n = 0
        self.examples: list[str] = []

    def add(self, example: str, n: int = 1) -> None:
        self.n += n
        if len(self.examples) < _EXAMPLES:
            self.examples.append(example)

    def eg(self) -> str:
        return ", ".join(self.examples) + (", ..." if self.n > len(self.examples) else "")


# --------------------------------------------------------------------- records
class _Collector:
    """Gathers the curve points of log_history: fast by record shape, per value where unusual."""

    def __init__(self, file: str) -> None:
        self.file = file
        # metric -> list of (record indices, steps, values) parts, each in write order
        self.parts: dict[str, list[tuple[list[int], np.ndarray, np.ndarray]]] = {}
        self.late: dict[str, tuple[list[int], list[int], list[float]]] = {}
        self.n_null = 0
        self.bad_values: dict[str, _Tally] = {}
        self.bad_steps = _Tally()
        self.bad_step_values = 0
        self.coerced_steps = _Tally()
        self.nested_keys = 0
        self._seen: dict[str, set[int]] = {}

    def add_value(self, idx: int, key: str, step: int, v: Any) -> None:
        fv = _value_of(v)
        if fv is None:
            if v is None:
                self.n_null += 1
                return
            if type(v) in (dict, list):
                self.nested_keys += count_keys(v, file=self.file)
            self.bad_values.setdefault(key, _Tally()).add(f"{_short(v)} at step {step}")
            return
        col = self.late.setdefault(key, ([], [], []))
        if key in self._seen:
            self._seen[key].add(step)
        col[0].append(idx)
        col[1].append(step)
        col[2].append(fv)

    def add_record(self, idx: int, rec: dict, step: int) -> None:
        for k, v in rec.items():
            if k != "step":
                self.add_value(idx, k, step, v)

    def add_shape(self, keys: tuple[str, ...], idx: list[int], history: list) -> None:
        """Records `history[i] for i in idx`, which share `keys` (one being "step"): column by column.

        All columns at once when every value is a number (or a numeric string, as `to_float`
        reads it); else per column with `array`, which converts a whole column in C and
        refuses what is not a number (None, text, lists) with a TypeError; those columns, and
        steps that are not all ints, go value by value.
        """
        recs = itemgetter(*idx)(history) if len(idx) > 1 else (history[idx[0]],)
        steps_raw = list(map(itemgetter("step"), recs))
        steps = None
        if set(map(type, steps_raw)) == {int}:  # bools are ints to array("q"): excluded here
            try:
                steps = np.frombuffer(array("q", steps_raw), dtype=np.int64)
            except OverflowError:
                steps = None
        if steps is None:  # strings, floats, NaN...: record by record
            good = []
            for i, r, v in zip(idx, recs, steps_raw):
                step, how = _step_of(v)
                if step is None:
                    self.bad_steps.add(f"{_short(v)} ({how})")
                    self.bad_step_values += len(r) - 1
                    continue
                if how == "string":
                    self.coerced_steps.add(repr(v))
                good.append((i, r, step))
            for i, r, step in good:
                self.add_record(i, r, step)
            return
        # All columns in one pass: the records of a shape list their values in the same key
        # order, so their values, chained, are a row-major matrix (when they are all numbers).
        # np.fromiter is the fastest converter measured here, but it reads None (JSON null) as NaN:
        # a matrix with any NaN goes the exact way below, which tells null from NaN.
        flat: np.ndarray | None
        try:
            flat = np.fromiter(chain.from_iterable(map(dict.values, recs)), dtype=np.float64,
                               count=len(recs) * len(keys))
            if np.isnan(flat).any():
                flat = None
        except (TypeError, ValueError, OverflowError):
            flat = None
        if flat is not None:
            matrix = flat.reshape(len(recs), len(keys))
            for j, k in enumerate(keys):
                if k != "step":
                    self.parts.setdefault(k, []).append((idx, steps, np.ascontiguousarray(matrix[:, j])))
            return
        for k in keys:
            if k == "step":
                continue
            values: np.ndarray | None
            try:
                values = np.frombuffer(array("d", map(itemgetter(k), recs)), dtype=np.float64)
            except (TypeError, OverflowError):
                values = self._with_quoted_non_finite(list(map(itemgetter(k), recs)))
                if values is None:
                    for i, step, v in zip(idx, steps.tolist(), map(itemgetter(k), recs)):
                        self.add_value(i, k, step, v)
                    continue
            self.parts.setdefault(k, []).append((idx, steps, values))

    @staticmethod
    def _with_quoted_non_finite(col: list) -> np.ndarray | None:
        """A column whose only non-numbers are "NaN"/"Infinity"/"-Infinity" (the decoder quotes the
        bare tokens; `to_float` reads them so), converted at once; None for any other value."""
        q = QUOTED_NON_FINITE
        # Any: a value that is not a number is left in for array() to reject (TypeError below)
        numbers: list[Any] = [q.get(v, v) if type(v) is str else v for v in col]
        try:
            return np.frombuffer(array("d", numbers), dtype=np.float64)
        except (TypeError, OverflowError):
            return None

    def has_step(self, key: str, step: int) -> bool:
        """Whether `key` already has a point at `step` (a set per key, built once, kept up to date)."""
        seen = self._seen.get(key)
        if seen is None:
            seen = set()
            for _, s, _ in self.parts.get(key, ()):
                seen.update(s.tolist())
            seen.update(self.late.get(key, ((), (), ()))[1])
            self._seen[key] = seen
        return step in seen

    def columns(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """metric -> (steps, values) in write order."""
        out = {}
        for k in dict.fromkeys([*self.parts, *self.late]):
            parts = list(self.parts.get(k, ()))
            if k in self.late:
                i, s, v = self.late[k]
                parts.append((i, np.array(s, dtype=np.int64), np.array(v, dtype=np.float64)))
            if len(parts) == 1:
                out[k] = (parts[0][1], parts[0][2])
                continue
            index = np.concatenate([np.asarray(p[0], dtype=np.int64) for p in parts])
            order = np.argsort(index, kind="stable")
            out[k] = (np.concatenate([p[1] for p in parts])[order], np.concatenate([p[2] for p in parts])[order])
        return out


def _group_by_shape(history: list) -> tuple[dict[tuple[str, ...], list[int]], int]:
    """{keys of a record: indices of the records with exactly those keys, ascending}, and the
    number of entries that are not objects. (A plain loop: measured faster here than
    building the shape codes with map/numpy; consecutive records often share a shape.)"""
    shapes: dict[tuple[str, ...], list[int]] = {}
    not_objects = 0
    prev: tuple | None = None
    group: list[int] = []
    for i, rec in enumerate(history):
        if type(rec) is not dict:
            not_objects += 1
            continue
        key = tuple(rec)
        if key != prev:
            known = shapes.get(key)
            if known is None:
                known = shapes[key] = []
            group = known
            prev = key
        group.append(i)
    return shapes, not_objects


def _is_summary(keys) -> bool:
    return not _SUMMARY_KEYS.isdisjoint(keys) and not any(k.startswith("eval_") for k in keys)


def _meta_number(v: Any) -> bool:
    return v is None or (type(v) in (int, float) and not isinstance(v, bool))


# --------------------------------------------------------------------- read
def _global_step(state: dict) -> int:
    v = state.get("global_step")
    step, _ = _step_of(v) if v is not None else (0, "")
    return step or 0


def _read_meta(state: dict, path: Path, res: ReadResult) -> None:
    for k in _NUMERIC_META:
        if k not in state:
            continue
        v = state[k]
        if not _meta_number(v):
            step, how = _step_of(v) if k != "best_metric" else (None, "")
            if step is None or how != "string":
                res.warnings.append(f"{path}: {k} is {_short(v)}, not a number; ignored it")
                continue
            v = step
        res.meta[k] = v
    for k in _OTHER_META:
        if k in state:
            res.meta[k] = state[k]
    callbacks = state.get("stateful_callbacks")
    if callbacks is not None and not isinstance(callbacks, dict):
        res.warnings.append(f"{path}: stateful_callbacks is a {type(callbacks).__name__}, not an object; "
                            "ignored it (should_training_stop unknown)")
        return
    ctrl = (callbacks or {}).get("TrainerControl")
    if isinstance(ctrl, list):  # HF writes a list when several instances of one callback class exist
        ctrl = next((c for c in reversed(ctrl) if isinstance(c, dict)), None)
    args = ctrl.get("args") if isinstance(ctrl, dict) else None
    if isinstance(args, dict) and "should_training_stop" in args:
        res.meta["should_training_stop"] = args["should_training_stop"]


def read(paths: list[Path], *, ctx: ReadContext) -> ReadResult:
    res = ReadResult(format=FORMAT, precision=PRECISION)
    loaded = []
    for p in paths:
        try:
            loaded.append((p, *_load(p)))
        except IngestError as e:
            if len(paths) == 1:
                raise
            res.warnings.append(str(e))
            res.cleanups.append(Cleanup("skipped_file", str(e), file=str(p)))
    if not loaded:
        raise IngestError(f"{paths[0]}: no readable trainer_state.json; check the files or pass --format")

    def rank(item: tuple[Path, dict, bytes]) -> tuple:
        p, d, _ = item
        is_root = ctx.run_root is not None and p.parent == ctx.run_root
        return (_global_step(d), len(d["log_history"]), is_root)

    path, state, data = max(loaded, key=rank)
    for p, d, _ in loaded:
        if p is not path:
            res.cleanups.append(Cleanup(
                "skipped_file",
                f"{p}: superseded by {path} (global_step {_short(d.get('global_step'))} vs "
                f"{_short(state.get('global_step'))})",
                file=str(p)))
    res.files.append(str(path))
    file = str(path)
    _read_meta(state, path, res)
    res.meta["trainer_state_file"] = str(path)

    history = state["log_history"]
    n_keys = 1 + count_keys({k: v for k, v in state.items() if k != "log_history"}, file=file)
    shapes, not_objects = _group_by_shape(history)
    if not_objects:
        n_keys += sum(count_keys(rec, file=file) for rec in history if type(rec) is not dict)

    # Records in order-sensitive roles (the training summary, and whatever follows it; records
    # without a step) are read one by one; the rest, by shape.
    first_summary = min((g[0] for k, g in shapes.items() if _is_summary(k)), default=len(history))
    col = _Collector(file)
    slow: list[int] = []
    for keys, idx in shapes.items():
        n_keys += len(keys) * len(idx)
        # Only evaluations after the summary are order-sensitive (a final evaluate() at a step the
        # curve has); train records after it (a resumed run) stay on the fast path.
        has_eval = any(k.startswith("eval_") for k in keys)
        if "step" not in keys or _is_summary(keys) or (has_eval and idx[-1] >= first_summary):
            cut = idx if ("step" not in keys or _is_summary(keys)) else [i for i in idx if i >= first_summary]
            slow.extend(cut)
            idx = [] if cut is idx else [i for i in idx if i < first_summary]
        if idx:
            col.add_shape(keys, idx, history)
    slow.sort()

    no_step: dict[str, float] = {}
    n_no_step = 0
    n_final_evals = 0
    after_summary = False
    for i in slow:
        rec = history[i]
        if _is_summary(rec.keys()):
            after_summary = True
            for k, v in rec.items():
                fv = _value_of(v)
                if fv is not None and k not in ("step", "epoch"):
                    res.summary[k] = fv
                    res.meta.setdefault(k, fv)
            continue
        if "step" not in rec or rec["step"] is None:
            n_no_step += 1
            for k, v in rec.items():
                fv = _value_of(v)
                if fv is not None:
                    no_step[k] = fv
            continue
        step, how = _step_of(rec["step"])
        if step is None:
            col.bad_steps.add(f"{_short(rec['step'])} ({how})")
            col.bad_step_values += len(rec) - 1
            continue
        if how == "string":
            col.coerced_steps.add(repr(rec["step"]))
        if after_summary and any(col.has_step(k, step) for k in rec if k.startswith("eval_")):
            # trainer.evaluate() after training (often of the best model, with
            # load_best_model_at_end) at a step the curve already has: a summary.
            n_final_evals += 1
            res.summary.update({k: fv for k, v in rec.items()
                                if k.startswith("eval_") and (fv := _value_of(v)) is not None})
            continue
        col.add_record(i, rec, step)

    if n_no_step:
        res.summary.update({k: v for k, v in no_step.items() if k != "epoch"})
        res.cleanups.append(Cleanup(
            "dropped_record",
            f"{n_no_step} log_history record(s) without a step (e.g. predict_*) kept as run summary, not curve points",
            file=file, count=n_no_step))
    if n_final_evals:
        res.cleanups.append(Cleanup(
            "duplicates",
            f"{n_final_evals} evaluation record(s) written after the training summary at an already evaluated step "
            "(a final trainer.evaluate(), e.g. of the best model) kept as run summary, not curve points",
            file=file, count=n_final_evals))
    _report(col, not_objects, file, res)
    n_keys += col.nested_keys
    if data.count(b":") != n_keys:  # more colons than keys: some are in strings, or a key is repeated
        dups = duplicate_keys(data, file)
        if dups:
            k, step = dups[0]
            where = f"the record at step {_short(step)}" if step is not None else "an object"
            msg = (f"{len(dups)} repeated key(s) in JSON objects (first: {k!r} in {where}); the last value of each "
                   "was kept, as JSON readers do - check the writer")
            res.warnings.append(f"{file}: {msg}")
            res.cleanups.append(Cleanup("duplicates", msg, file=file, count=len(dups)))
    series, cleanups = series_from_columns(col.columns(), file=file, format=FORMAT, precision=PRECISION)
    res.series.extend(series)
    res.cleanups.extend(cleanups)
    return res


def _report(col: _Collector, not_objects: int, file: str, res: ReadResult) -> None:
    if col.n_null:
        res.cleanups.append(Cleanup("dropped_record", f"{col.n_null} null value(s) in log_history skipped",
                                    file=file, count=col.n_null))
    for key, t in col.bad_values.items():
        res.cleanups.append(Cleanup("dropped_record", f"{key}: {t.n} value(s) that are not numbers dropped "
                                    f"(e.g. {t.eg()})", file=file, metric=key, count=t.n))
    if col.bad_steps.n:
        msg = (f"{col.bad_steps.n} log_history record(s) whose step is not a whole number (e.g. {col.bad_steps.eg()}) "
               f"dropped with their {col.bad_step_values} value(s): a record cannot be placed on the curve "
               "without its step (a fractional step is never rounded onto a real one)")
        res.warnings.append(f"{file}: {msg}")
        res.cleanups.append(Cleanup("dropped_record", msg, file=file, count=col.bad_steps.n))
    if col.coerced_steps.n:
        res.cleanups.append(Cleanup("coerced", f"{col.coerced_steps.n} log_history record(s) wrote their step as a "
                                    f"string (e.g. {col.coerced_steps.eg()}); read as integer steps",
                                    file=file, count=col.coerced_steps.n))
    if not_objects:
        res.cleanups.append(Cleanup("dropped_record", f"{not_objects} log_history entr(ies) that are not JSON "
                                    "objects skipped", file=file, count=not_objects))
