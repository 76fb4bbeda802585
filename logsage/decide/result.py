"""The replay result: scored decisions held as columns, `Decision` objects built on demand.

`replay` scores every (run, rule, parameter set). A big grid gives millions of decisions
that share a handful of distinct (stop, selection) outcomes per run, so the result keeps,
per run and rule, one prototype per distinct outcome plus an index per parameter set
(`RunSegment`); `ReplayResult.decisions` is a sequence (`Decisions`) that builds a run's
`Decision` objects the first time one of them is read, and `ReplayResult.column(name)` gives
any outcome field as a (runs x rule sets) numpy array without building any object. The
decisions are the same, field for field, as the per-decision scorer's
(tests/decide/test_replay_fast.py, benchmarks/bench_sweep.py).
"""

from __future__ import annotations

import dataclasses
import gc
import operator
from collections import deque
from dataclasses import dataclass, field
from itertools import repeat
from typing import TYPE_CHECKING, Any, Callable, Iterator, Literal, Sequence, overload

import numpy as np

from logsage.core.history import History, json_safe

if TYPE_CHECKING:
    from logsage.decide.select import RunContext  # select imports this module


@dataclass(frozen=True)
class Decision:
    """One (run, rule, parameter set): the stop, the selection and their scores (see `logsage.decide.engine`)."""

    run: str
    rule: str
    params: dict
    metric: str | None
    mode: str | None
    stop_step: int | None
    stop_eval_index: int | None
    selected_step: int | None
    selected_value: float | None
    best_step: int | None
    best_value: float | None
    best_saved_step: int | None
    best_saved_value: float | None
    regret: float | None
    regret_rel: float | None
    regret_scaled: float | None  # |kept - best| / |first - best|: the share of the improvement given up
    steps_saved: int | None
    fraction_saved: float | None
    wall_saved_s: float | None
    stopped_before_best: bool | None
    trend_slope: float | None
    trend_p: float | None
    overfit_gap: float | None
    decidable: bool
    reason: str
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A strict-JSON-ready dict (NaN/inf become None; numpy scalars become Python)."""
        return json_safe({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})


FIELDS = tuple(f.name for f in dataclasses.fields(Decision))


@dataclass
class RunSegment:
    """One run's decisions for one rule: decision k is prototype `protos[ids[k]]` with its own
    parameters (`param_sets[k]`), reason and note."""

    make_protos: list[dict[str, Any]] | Callable[[], list[dict[str, Any]]]  # attributes per distinct outcome
    ids: np.ndarray  # int64, one per parameter set
    param_sets: Sequence[dict[str, Any]]
    reasons: list[str] | Callable[[], list[str]]  # worded when the decisions are built
    notes: dict[int, str | None] = field(default_factory=dict)
    # Outcome fields per distinct outcome as arrays (NaN for None), for `column` without prototypes.
    key_arrays: dict[str, np.ndarray] = field(default_factory=dict)
    # For the batched trend and gap before the build (`logsage.decide.select.fill_trend_and_gap`):
    # the evaluation index each prototype's trend and gap reach, and the run that caches them.
    horizons: list[int] = field(default_factory=list, compare=False, repr=False)
    ctx: RunContext | None = field(default=None, compare=False, repr=False)

    @property
    def protos(self) -> list[dict[str, Any]]:
        """The prototypes, made on first use (trend and gap are computed then, not at replay time)."""
        if callable(self.make_protos):
            self.make_protos = self.make_protos()
        return self.make_protos

    def build(self) -> list[Decision]:
        """The Decision objects: each a copy of its prototype's attribute dict (a split-table dict copy,
        cheap and as compact as the dataclass's own) with its parameters and reason, each step one
        C-level `map`."""
        reasons = self.reasons() if callable(self.reasons) else self.reasons
        count = len(self.param_sets)
        attrs = list(map(dict.copy, map(self.protos.__getitem__, self.ids.tolist())))
        deque(map(operator.setitem, attrs, repeat("params", count), map(dict.copy, self.param_sets)), maxlen=0)
        deque(map(operator.setitem, attrs, repeat("reason", count), reasons), maxlen=0)
        for k, note in self.notes.items():
            attrs[k]["note"] = note
        out = list(map(object.__new__, repeat(Decision, count)))
        deque(map(object.__setattr__, out, repeat("__dict__", count), attrs), maxlen=0)
        return out

    def column(self, name: str) -> list[Any] | np.ndarray:
        """Field `name` of every decision (no object built; an array where the scorer kept one)."""
        if name in self.key_arrays:
            return self.key_arrays[name][self.ids]
        if name == "params":
            return [dict(p) for p in self.param_sets]
        if name == "reason":
            return list(self.reasons() if callable(self.reasons) else self.reasons)
        values = [p[name] for p in self.protos]
        out = [values[i] for i in self.ids.tolist()]
        if name == "note":
            for k, note in self.notes.items():
                out[k] = note
        return out


class BuiltSegment(list):
    """Decisions already built (a run scored one decision at a time), usable as a segment."""

    def build(self) -> list[Decision]:
        return list(self)

    def column(self, name: str) -> list[Any]:
        return [getattr(d, name) for d in self]


# One run's decisions: already built, or segments (pair indices, RunSegment) per rule.
RunBlock = list  # list[Decision] | list[tuple[list[int], RunSegment]]


class Decisions(Sequence[Decision]):
    """The decisions of a replay in order (run by run, each run one per rule set), all built on the
    first read of any of them (in one batched pass) and kept. `ReplayResult.column` reads fields
    without building them. Compares equal to a list of the same decisions."""

    def __init__(self, blocks: list[tuple[bool, RunBlock]], per_run: int,
                 prepare: Callable[[], None] | None = None):
        self._blocks = blocks  # (built, block) per run
        self._per_run = per_run
        self._prepare = prepare  # run once before building every run (batched trend and gap)

    def __len__(self) -> int:
        return len(self._blocks) * self._per_run

    def _run(self, r: int) -> list[Decision]:
        built, block = self._blocks[r]
        if built:
            return block
        out: list[Any] = [None] * self._per_run
        # No cyclic collection while a run's decisions are built: they hold no cycles, and a big
        # grid allocates enough of them to trigger full collections again and again.
        enabled = gc.isenabled()
        gc.disable()
        try:
            for idx, seg in block:
                ds = seg.build()
                if idx == list(range(idx[0], idx[-1] + 1)):
                    out[idx[0]: idx[-1] + 1] = ds
                else:
                    for j, d in zip(idx, ds):
                        out[j] = d
        finally:
            if enabled:
                gc.enable()
        self._blocks[r] = (True, out)
        return out

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError("decision index out of range")
        self.build_all()  # callers that index usually read them all (tune): one batched build
        r, j = divmod(i, self._per_run)
        return self._run(r)[j]

    def __iter__(self) -> Iterator[Decision]:
        self.build_all()
        for _, block in self._blocks:
            yield from block

    def build_all(self) -> None:
        """Build every run's decisions now (trend and gap of all runs in one pass first), with the
        cyclic collector paused for the whole build: collections between runs would rescan every
        decision built so far."""
        if all(built for built, _ in self._blocks):
            return
        if self._prepare is not None:
            prepare, self._prepare = self._prepare, None
            prepare()
        enabled = gc.isenabled()
        gc.disable()
        try:
            for r in range(len(self._blocks)):
                self._run(r)
        finally:
            if enabled:
                gc.enable()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (Decisions, list, tuple)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    def __repr__(self) -> str:
        return f"<{len(self)} decisions>"

    @overload
    def column(self, name: str, numeric: Literal[True]) -> np.ndarray: ...

    @overload
    def column(self, name: str, numeric: Literal[False] = False) -> list[list[Any]]: ...

    def column(self, name: str, numeric: bool = False) -> list[list[Any]] | np.ndarray:
        """Field `name` per run and rule set: a (runs x rule sets) float array (NaN for None) when
        `numeric`, else lists; read from the scorer's arrays or prototypes where not built."""
        if numeric:
            out = np.full((len(self._blocks), self._per_run), np.nan)
            for r, (built, block) in enumerate(self._blocks):
                if built:
                    out[r] = [np.nan if (v := getattr(d, name)) is None else float(v) for d in block]
                    continue
                for idx, seg in block:
                    col = seg.column(name)
                    out[r, idx] = col if isinstance(col, np.ndarray) else \
                        [np.nan if v is None else float(v) for v in col]
            return out
        rows = []
        for built, block in self._blocks:
            if built:
                rows.append([getattr(d, name) for d in block])
                continue
            row: list[Any] = [None] * self._per_run
            for idx, seg in block:
                col = seg.column(name)
                for j, v in zip(idx, col.tolist() if isinstance(col, np.ndarray) else col):
                    row[j] = v
            rows.append(row)
        return rows


@dataclass
class ReplayResult:
    """Scored decisions (`decisions`: one per run x rule set, run by run), the per-rule-set summary
    and the runs that could not be replayed."""

    decisions: Sequence[Decision]
    summary: list[dict]
    errors: list[dict]
    # The histories replayed (when `replay_paths` loaded them), for plots; not part of to_dict.
    histories: list[History] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        return json_safe({
            "decisions": [d.to_dict() for d in self.decisions],
            "summary": self.summary,
            "errors": self.errors,
        })

    def to_pandas(self, table: str = "decisions") -> Any:
        """A pandas DataFrame of the decisions (one row per run x rule setting) or of the summary.

        Each row has the Decision's (or summary row's) fields, `params` as a dict and `spec`,
        the `--rule` string that reproduces it. pandas is imported here only.
        """
        from logsage.decide.frames import replay_frame

        return replay_frame(self, table)

    def column(self, name: str) -> np.ndarray:
        """A Decision field as a (runs x rule sets) array, without building Decision objects.

        Numbers come as float64 with NaN for None (`stop_step`, `stop_eval_index`,
        `selected_step`, `selected_value`, `regret`, ...), `decidable` and
        `stopped_before_best` as bool (None -> False), text fields as object arrays.
        """
        if name not in FIELDS:
            raise KeyError(f"no decision field {name!r}; one of: {', '.join(FIELDS)}")
        d = self.decisions
        numeric = name not in ("decidable", "stopped_before_best", "run", "rule", "params", "metric", "mode",
                               "reason", "note")
        if numeric and isinstance(d, Decisions):
            return d.column(name, numeric=True)
        rows = d.column(name) if isinstance(d, Decisions) else [[getattr(x, name) for x in d]]
        if name in ("decidable", "stopped_before_best"):
            return np.array([[bool(v) for v in row] for row in rows], dtype=bool).reshape(len(rows), -1)
        if name in ("run", "rule", "params", "metric", "mode", "reason", "note"):
            out = np.empty((len(rows), len(rows[0]) if rows else 0), dtype=object)
            for r, row in enumerate(rows):
                out[r, :] = row
            return out
        return np.array([[np.nan if v is None else float(v) for v in row] for row in rows],
                        dtype=np.float64).reshape(len(rows), -1)

    def stops(self) -> np.ndarray:
        """stop_eval_index per run x rule set (-1: never stopped, or undecidable)."""
        return np.nan_to_num(self.column("stop_eval_index"), nan=-1).astype(np.int64)

    def selections(self) -> np.ndarray:
        """selected_step per run x rule set (-1: nothing selected)."""
        return np.nan_to_num(self.column("selected_step"), nan=-1).astype(np.int64)

    def regrets(self) -> np.ndarray:
        """regret per run x rule set (NaN where undefined)."""
        return self.column("regret")


__all__ = ["BuiltSegment", "Decision", "Decisions", "ReplayResult", "RunSegment"]
