"""Watch: follow a run's growing log and give a stopping rule's advice at each new evaluation.

For runs logsage did not launch (ms-swift `logging.jsonl`, LLaMA-Factory
`trainer_log.jsonl`, Lightning `metrics.csv`, a plain HF script's `trainer_state.json`
or TensorBoard events), so that a person can stop by hand, with evidence:

    >>> from logsage.live.watch import watch
    >>> for advice in watch("output/qwen-lora", "hf:patience=3", interval=5):
    ...     print(advice.message)      # "would stop now; best checkpoint-1200 (eval_loss 0.81)"

Files are followed by `logsage.live.follow` (only what was appended or changed is read).
In a run folder new files (a new event file after a restart, checkpoint folders) are
picked up at each poll (a checkpoint folder whose trainer_state.json was found is not
listed again), and the checkpoint inventory is refreshed when an evaluation arrives
(`follow.Inventory`: only new or changed folders are judged), so "best checkpoint-N"
names a folder that is on disk and whole at that moment.

Incremental advice. The parsed history and the rule's state are kept between polls:
when the monitored series comes from one follower and grows by new steps only, each new
evaluation costs O(1) for a rule with an incremental state (`logsage.live.state`: the
rule's own update, one evaluation at a time; rules are causal, so this is exact), and
the selection is `logsage.decide.select.select_evaluation`, the one replay uses. Anything
else (a rewrite, a second source of the metric, a rule without an incremental state)
rebuilds the history and replays the prefix through `logsage.decide.engine.replay` - the
same path as an offline replay. Either way the evaluation at which watch says "would stop
now" is the one at which `logsage replay` says the rule stops (tests/test_watch*.py).

A path that does not exist yet is awaited, never silently: `watch()` reports once that
it waits for the path to appear, and when its timeout passes before the path appeared it
raises `IngestError` (exit 1) naming the path.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from logsage.core.errors import IngestError, LogsageError, UsageError
from logsage.core.history import History, json_safe
from logsage.core.runfolder import checkpoint_name
from logsage.live.follow import Appended, Inventory, NewestState, Rewritten
from logsage.rules.base import counting_rules, rule_spec

# How each reader's files grow.
_LINE_FORMATS = {"swift", "llamafactory", "mlflow"}
_CSV_FORMATS = {"lightning", "keras", "tb-csv", "wandb", "wide"}
_RECORD_FORMATS = {"tensorboard"}


@dataclass(frozen=True, eq=False)
class Advice:
    """The rule's advice at one evaluation.

    action: "continue", "stop" (the rule stops at this evaluation), "stopped" (it stopped
    at an earlier one; stop_step says where) or "undecidable" (it cannot judge yet).
    """

    eval_index: int  # 0-based index of the evaluation
    step: int
    value: float
    metric: str
    action: str
    message: str
    selected_step: int | None
    selected_value: float | None
    stop_step: int | None
    reason: str
    note: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return json_safe({k: getattr(self, k) for k in self.__dataclass_fields__})

    def _fields(self) -> tuple:
        return tuple(getattr(self, k) for k in self.__dataclass_fields__)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Advice) and self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())


# ====================================================================== the watcher
class Watcher:
    """Follows one run; each `poll()` reads what was appended and returns advice for new evaluations.

    Args:
        path: a log file or a run folder (as the user gave it).
        rule: a rule spec, "hf:patience=3" (validated at once).
        metric / mode: the monitored metric (default: the run's eval loss once it appears).
        format: force a reader for a single file.

    Raises:
        RuleConfigError: a bad rule spec; UsageError: an unknown format;
    A path that does not exist yet is awaited (`watch()` says so once, and gives up at its
    timeout).
    """

    def __init__(self, path: str | os.PathLike, rule: str, *, metric: str | None = None, mode: str | None = None,
                 format: str | None = None):
        from logsage.core.objective import check_mode
        from logsage.ingest.follow import readers
        from logsage.decide.engine import expand_rules
        from logsage.rules.base import parse_rule_spec

        self.path = str(path)
        self.root = Path(path)
        self.rule = rule
        (info, self.params), = expand_rules([parse_rule_spec(rule)])  # RuleConfigError before any waiting
        self.info = info
        self.rule_name = info.name
        self.metric = metric
        self.mode = check_mode(mode) if mode else None
        self.format = format
        self._readers = readers(format)  # UsageError for an unknown format, before any waiting
        self.followers: list[Any] = []
        self.groups: dict[str, Any] = {}  # format -> the follower that reads all its files together
        self.known: set[str] = set()
        self._listed_checkpoints: set[str] = set()  # checkpoint-N folders whose trainer_state.json is followed
        self.inventory = Inventory(self.root)
        self.n_seen = 0  # evaluations already advised on
        self._history: History | None = None
        self._stale = True  # the kept history lags the followers (rebuilt only when asked for)
        self.finished = False  # the run reached its step budget (or wrote its training summary)
        self.finished_why: str | None = None
        self._evals: tuple = ()  # eval points per follower and series at the last build
        self._fast: _FastPath | None = None
        self.n_rebuilds = 0  # full history rebuilds (the incremental path avoids them)
        self._warned = 0
        self._skipped: list[str] = []  # files not followed, in words
        # Which series' new points can be a new evaluation: eval series, or every series
        # when the user watches a train or test metric.
        from logsage.core.names import canonical_name, kind_of

        self._kinds = ("eval",) if metric is None or kind_of(canonical_name(metric)) == "eval" else \
            ("eval", "train", "test", "other")

    # ------------------------------------------------------------------ files
    def _discover(self) -> None:
        from logsage.ingest import claiming_reader
        from logsage.ingest.follow import is_run_summary, never_a_log, run_files

        if self.root.is_file():
            files = [self.root]
        elif self.root.is_dir():
            files = [f for f in run_files(self.root, skip_checkpoints=self._listed_checkpoints,
                                          found_checkpoint=self._listed_checkpoints) if not is_run_summary(f)]
        else:
            return  # removed meanwhile: nothing to read this poll
        for f in files:
            if str(f) in self.known:
                continue
            if f != self.root and never_a_log(f):
                self.known.add(str(f))  # weights, configs, images: never a log, never sniffed again
                continue
            if not _is_regular(f):  # a FIFO or a device named like a log: opening it could block forever
                self.known.add(str(f))
                self._skipped.append(f"{f}: not a regular file (a FIFO, socket or device); watch does not read it")
                continue
            forced = self.format is not None and self.root.is_file()
            r = self._readers[0] if forced else claiming_reader(f, self._readers)
            if r is None:
                continue  # not a log (weights, configs...); looked at again only if it is new
            self.known.add(str(f))
            if r.FORMAT in _LINE_FORMATS | _CSV_FORMATS | _RECORD_FORMATS:
                kind = "lines" if r.FORMAT in _LINE_FORMATS else "csv" if r.FORMAT in _CSV_FORMATS else "records"
                self.followers.append(Appended(r, f, kind))
            elif r.FORMAT in self.groups:  # e.g. a new checkpoint-N/trainer_state.json: the group follows it too
                self.groups[r.FORMAT].paths.append(f)
            else:
                self.groups[r.FORMAT] = (NewestState if r.FORMAT == "trainer-state" else Rewritten)(r, [f])
                self.followers.append(self.groups[r.FORMAT])

    def close(self) -> None:
        for f in self.followers:
            f.close()

    def warnings(self) -> list[str]:
        """The followers' warnings not returned before (damaged lines, skipped records...)."""
        new = self._skipped[self._warned:]
        self._warned = len(self._skipped)
        for f in self.followers:
            shown = getattr(f, "_shown", 0)
            new += f.warnings[shown:]
            f._shown = len(f.warnings)
        return new

    @property
    def history(self) -> History | None:
        """The run's history as read so far (rebuilt on demand when the incremental path kept it stale)."""
        if self._stale:
            h = self._build()
            if h is not None:
                self._history = h
            self._stale = False
        return self._history

    def _build(self) -> History | None:
        from logsage.ingest import merge_sources

        results = [f.result() for f in self.followers]
        results = [r for r in results if r is not None and r.series]
        if not results:
            return None
        self.n_rebuilds += 1
        h = History(path=self.path, format="")
        merge_sources(h, results)
        if self.root.is_dir():
            h.checkpoints = self.inventory.refresh()
        return h

    # ------------------------------------------------------------------ advice
    def poll(self) -> list[Advice]:
        """Read what was appended; advice for each evaluation not advised on yet.

        On the first poll that finds evaluations, only the latest is advised on (with what
        the rule did on the ones before, e.g. "would have stopped at step 400").
        """
        self._discover()
        changed = False
        for f in self.followers:
            changed |= f.refresh()
        if not changed and self._history is not None:
            return []
        # Rebuilding the history costs as much as the log is long: do it only when an
        # evaluation arrived or the run reached its step budget, not for every train line.
        progress = [f.progress(self._kinds) for f in self.followers]
        evals = tuple(p[0] for p in progress)
        last = max((p[1] for p in progress), default=-1)
        budgets = [p[2] for p in progress if isinstance(p[2], (int, float)) and not isinstance(p[2], bool) and p[2]]
        if budgets and last >= max(budgets):
            self.finished, self.finished_why = True, f"it reached its step budget (max_steps {int(max(budgets))})"
        elif any("train_runtime" in f.acc.summary for f in self.followers if isinstance(f, NewestState)):
            self.finished, self.finished_why = True, "its trainer_state.json holds the training summary"
        if self._history is not None and evals == self._evals and not self.finished:
            return []
        self._evals = evals
        if self._fast is not None:
            out = self._fast.poll(self)
            if out is not None:
                self._stale = True
                return out
            self._fast = None
        h = self._build()
        if h is None:
            return []
        self._history, self._stale = h, False
        try:
            from logsage.core.objective import resolve_objective

            obj = resolve_objective(h, self.metric, self.mode)
        except LogsageError:
            return []  # the metric has not been logged yet (an early train-only log)
        s = h.series[obj.metric]
        n = len(s)
        self._fast = _FastPath.start(self, h, obj.metric, obj.mode)
        if n <= self.n_seen:
            return []
        start = self.n_seen if self.n_seen else n - 1
        out = [self._advise(h, obj.metric, obj.mode, t) for t in range(start, n)]
        self.n_seen = n
        return out

    def _advise(self, h: History, metric: str, mode: str, t: int) -> Advice:
        """Advice at evaluation t by replaying the history cut at its step (the reference path)."""
        from logsage.decide.engine import replay

        s = h.series[metric]
        step = int(s.steps[t])
        prefix = _cut(h, step)
        d = replay([prefix], [(self.rule_name, self.params)], metric=metric, mode=mode).decisions[0]
        return self._words(s.steps, s.values, mode, metric, t, d, h.checkpoint_at)

    def _words(self, steps: Any, raw: Any, mode: str, metric: str, t: int, d: Any, checkpoint_at: Callable,
               since: int | None = None) -> Advice:
        value = float(raw[t])
        label = rule_spec(self.rule_name, self.params)
        kept = _kept(checkpoint_at, d, metric)
        if not d.decidable:
            action, msg = "undecidable", f"cannot judge yet: {d.reason}"
        elif d.stop_eval_index == t:
            action, msg = "stop", f"would stop now ({label}); best {kept}"
        elif d.stop_eval_index is not None:
            action, msg = "stopped", (f"past the stop: {label} would have stopped at step {d.stop_step}; "
                                      f"best {kept}")
        else:
            action, msg = "continue", f"continue: {self._progress(raw, mode, t, since)}; best {kept}"
        fields = dict(eval_index=t, step=int(steps[t]), value=value, metric=metric, action=action, message=msg,
                      selected_step=d.selected_step, selected_value=d.selected_value, stop_step=d.stop_step,
                      note=d.note)
        if isinstance(d, _Decision):  # the incremental path: the rule's sentence is worded when first read
            return _FastAdvice.of(fields, d)
        return Advice(reason=d.reason, **fields)

    def _progress(self, raw: Any, mode: str, t: int, since: int | None = None) -> str:
        """'2 of 3 evaluations without improvement' where that is exact, else evaluations since the best."""
        if since is None:
            from logsage.core.objective import orient
            from logsage.decide.scoring import hindsight_best

            best = hindsight_best(orient(np.asarray(raw, dtype=np.float64), mode), upto=t)
            since = t - best if best is not None else t + 1
        # Rules whose no-improvement counter equals "evaluations since the best" when their margin is 0.
        delta_name = counting_rules().get(self.rule_name)
        patience = self.params.get("patience")
        if delta_name is not None and patience is not None and not self.params.get(delta_name):
            return f"{since} of {patience} evaluation{'' if patience == 1 else 's'} without improvement"
        return (f"{since} evaluation{'' if since == 1 else 's'} since the best"
                + (f" (patience {patience})" if patience is not None else ""))


class _Decision:
    """What the advice reads of a decision (the fast path builds it without a replay)."""

    __slots__ = ("decidable", "stop_eval_index", "stop_step", "selected_step", "selected_value", "note", "_reason")
    decidable: bool
    stop_eval_index: int | None
    stop_step: int | None
    selected_step: int | None
    selected_value: float | None
    note: str | None
    _reason: str | Callable[[], str]  # the rule's sentence, or what words it when first read

    def __init__(self, **kw: Any):
        for k, v in kw.items():
            setattr(self, k, v)

    @property
    def reason(self) -> str:
        r = self._reason
        return r() if callable(r) else r


class _FastPath:
    """The monitored series and the rule's state kept between polls (see the module docstring)."""

    def __init__(self, owner: Any, name: str, metric: str, mode: str, state: Any, info: Any):
        self.owner, self.name, self.metric, self.mode = owner, name, metric, mode
        self.generation = owner.generation
        self.count = 0  # points of the owner's series consumed (write order)
        self.steps: list[int] = []
        self.raw: list[float] = []
        self.oriented: list[float] = []
        self.state = state
        self.info = info
        self.best: int | None = None  # hindsight best so far (index), for "N since the best"
        self.best_v = math.inf
        # The same as arrays (grown by doubling), so that each advice reads views, not copies.
        self._steps_arr = np.empty(64, dtype=np.int64)
        self._oriented_arr = np.empty(64, dtype=np.float64)

    @classmethod
    def start(cls, w: Watcher, h: History, metric: str, mode: str) -> "_FastPath | None":
        from logsage.live.state import state_for

        state = state_for(w.rule_name, w.params)
        if state is None:
            return None
        s = h.series[metric]
        owners = [f for f in w.followers if any(c == s.canonical for _, c in f.names())]
        if len(owners) != 1 or not any(n == metric for n, _ in owners[0].names()):
            return None
        owner = owners[0]
        got = owner.tail(metric, 0)
        if got is None:
            return None
        fp = cls(owner, metric, metric, mode, state, w.info)
        steps, values = got
        if not fp._extend(steps, values) or fp.steps != s.steps.tolist():
            return None  # not a plain append-only series (rewritten steps): the reference path
        return fp

    def _extend(self, steps: list[int], values: list[float]) -> bool:
        last = self.steps[-1] if self.steps else None
        sign = -1.0 if self.mode == "max" else 1.0
        for st, v in zip(steps, values):
            if last is not None and st <= last:
                return False
            last = st
            o = sign * v if v == v else v  # NaN stays NaN (orient negates; -nan is nan)
            t = len(self.steps)
            if t == self._steps_arr.size:
                self._steps_arr = np.resize(self._steps_arr, 2 * t)
                self._oriented_arr = np.resize(self._oriented_arr, 2 * t)
            self._steps_arr[t], self._oriented_arr[t] = st, o
            self.steps.append(st)
            self.raw.append(v)
            self.oriented.append(o)
            self.state.push(o, st)
            if math.isfinite(o) and o < self.best_v:
                self.best, self.best_v = t, o
        self.count += len(steps)
        return True

    def poll(self, w: Watcher) -> list[Advice] | None:
        """Advice for the new evaluations, or None when the reference path must take over."""
        if self.owner.generation != self.generation:
            return None
        for f in w.followers:
            if f is not self.owner and any(c == _canonical(self.metric) for _, c in f.names()):
                return None  # a second source of the metric: merged by precision on the reference path
        got = self.owner.tail(self.name, self.count)
        if got is None:
            return None
        steps, values = got
        if not steps:
            return []
        first_new = len(self.steps)
        if not self._extend(steps, values):
            return None
        checkpoints = w.inventory.refresh() if w.root.is_dir() else []
        n = len(self.steps)
        start = w.n_seen if w.n_seen else n - 1
        out = []
        for t in range(max(start, first_new), n):
            out.append(self._advice(w, t, checkpoints))
        w.n_seen = n
        return out

    def _advice(self, w: Watcher, t: int, checkpoints: list) -> Advice:
        from logsage.decide.select import select_evaluation

        stop, best, decidable = self._outcome_at(t)
        by_step = {c.step: c for c in checkpoints}
        steps, oriented = self._steps_arr[:t + 1], self._oriented_arr[:t + 1]

        def eligible(i: int | None) -> Any:
            if not checkpoints:
                return True if i is not None else np.ones(t + 1, dtype=bool)
            if i is not None:
                c = by_step.get(self.steps[i])
                return c is not None and c.whole
            whole = {c.step for c in checkpoints if c.whole}
            return np.fromiter((s in whole for s in self.steps[:t + 1]), dtype=bool, count=t + 1)

        def problem(step: int) -> str:
            c = by_step.get(step)
            if c is None:
                return f"{checkpoint_name(step)} is missing"
            return f"{os.path.basename(os.path.normpath(c.path)) or checkpoint_name(step)}: {c.problem or 'not whole'}"

        sel, note = select_evaluation(steps, oriented, eligible, bool(checkpoints), stop, best, problem) \
            if decidable else (None, None)
        d = _Decision(decidable=decidable, stop_eval_index=stop, stop_step=None if stop is None else self.steps[stop],
                      selected_step=None if sel is None else self.steps[sel],
                      selected_value=None if sel is None else float(self.raw[sel]), note=note,
                      _reason=lambda: self._reason(t))
        since = self._since(t)
        return w._words(self.steps, self.raw, self.mode, self.metric, t, d, by_step.get, since=since)

    def _outcome_at(self, t: int) -> tuple[int | None, int | None, bool]:
        stop, best, decidable = self.state.outcome()
        if stop is not None and stop <= t:
            return stop, best, decidable
        if t == len(self.steps) - 1:
            return stop, best, decidable
        # An earlier evaluation of this batch: replay the state to t (only on a multi-eval poll).
        from logsage.live.state import state_for

        st = state_for(self.info.name, self.state_params())
        assert st is not None  # this rule has a state: `start` made the fast path only because it has one
        for i in range(t + 1):
            st.push(self.oriented[i], self.steps[i])
        return st.outcome()

    def state_params(self) -> dict:
        s = self.state
        return {"patience": s.patience, "threshold": s.threshold, "min_evals": s.min_evals, "min_steps": s.min_steps}

    def _since(self, t: int) -> int:
        if t == len(self.steps) - 1:
            return t - self.best if self.best is not None else t + 1
        from logsage.decide.scoring import hindsight_best

        best = hindsight_best(self._oriented_arr[:t + 1].copy(), upto=t)
        return t - best if best is not None else t + 1

    def _reason(self, t: int) -> str:
        """The rule's own words on the prefix (the rule run once on it: only when a reason is read)."""
        from logsage.decide.engine import not_before, run_rule
        from logsage.rules.base import RuleInput

        steps = np.asarray(self.steps[:t + 1], dtype=np.int64)
        x = RuleInput(values=np.asarray(self.oriented[:t + 1], dtype=np.float64), steps=steps, mode=self.mode,
                      metric=self.metric, raw_values=np.asarray(self.raw[:t + 1], dtype=np.float64),
                      not_before=not_before(steps, self.state.min_evals, self.state.min_steps))
        return run_rule(self.info, x, dict(self.state_params())).reason


class _FastAdvice(Advice):
    """An Advice whose `reason` (the rule's sentence on the prefix) is worded when first read."""

    @classmethod
    def of(cls, fields: dict[str, Any], d: _Decision) -> "_FastAdvice":
        obj = object.__new__(cls)
        for k, v in fields.items():
            object.__setattr__(obj, k, v)
        object.__setattr__(obj, "_decision", d)
        return obj

    def __getattr__(self, name: str) -> Any:
        if name == "reason":
            r = self._decision.reason
            object.__setattr__(self, "reason", r)
            return r
        raise AttributeError(name)


def _is_regular(path: Path) -> bool:
    import stat

    try:
        return stat.S_ISREG(path.stat().st_mode)
    except OSError:
        return False


def _canonical(name: str) -> str:
    from logsage.core.names import canonical_name

    return canonical_name(name)


def _cut(h: History, step: int) -> History:
    """The history as it was when the evaluation at `step` was logged (every series up to that step)."""
    series = {}
    for name, s in h.series.items():
        keep = s.steps <= step
        series[name] = replace(s, steps=s.steps[keep], values=s.values[keep],
                               wall_times=None if s.wall_times is None else s.wall_times[keep])
    return replace(h, series=series)


def _kept(checkpoint_at: Callable, d: Any, metric: str) -> str:
    """'checkpoint-1200 (eval_loss 0.81)' for the checkpoint the rule keeps, or 'step 1200 (...)' in a bare log."""
    if d.selected_step is None:
        return "none kept" + (f" ({d.note})" if d.note else "")
    c = checkpoint_at(d.selected_step)
    where = os.path.basename(os.path.normpath(c.path)) if c is not None else f"step {d.selected_step}"
    value = "nan" if d.selected_value is None or not math.isfinite(d.selected_value) else f"{d.selected_value:.6g}"
    return f"{where} ({metric} {value})"


def _positive(name: str, value: float | int | None, *, integer: bool = False) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0 \
            or (integer and int(value) != value):
        kind = "a whole number > 0" if integer else "a finite number of seconds > 0"
        raise UsageError(f"--{name.replace('_', '-')} must be {kind}, got {value}")


def watch(path: str | os.PathLike, rule: str, *, metric: str | None = None, mode: str | None = None,
          format: str | None = None, interval: float = 2.0, timeout: float | None = None,
          max_evals: int | None = None, until_stop: bool = False,
          sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
          on_warning: Callable[[str], None] | None = None, on_finish: Callable[[str], None] | None = None,
          ) -> Iterator[Advice]:
    """Yield advice for each new evaluation of the run at `path` until a limit is reached.

    Args:
        interval: seconds between polls (finite, > 0).
        timeout: stop watching after this many seconds (finite, > 0; None: until the run
            reaches its step budget, or forever when the log does not state one).
        max_evals: stop after advising on this many evaluations (> 0).
        until_stop: stop right after the rule says "would stop now" (or "stopped").
        on_warning: called with each follower warning (a dropped line, a skipped record).
        on_finish: called once with a sentence when watching ends because the run finished.

    Raises:
        RuleConfigError: a bad rule spec; UsageError: a bad limit (before any waiting).
        IngestError: the path did not appear before the timeout.
    """
    _positive("interval", interval)
    _positive("timeout", timeout)
    _positive("max_evals", max_evals, integer=True)
    w = Watcher(path, rule, metric=metric, mode=mode, format=format)
    start = clock()
    n = 0
    waiting = not Path(path).exists()
    if waiting and on_warning is not None:
        limit = "" if timeout is None else f" (giving up after {timeout:g} s)"
        on_warning(f"{path}: does not exist yet; waiting for it to appear{limit} - Ctrl-C to stop")
    try:
        while True:
            if waiting and Path(path).exists():
                waiting = False
            advice = w.poll()
            if on_warning is not None:
                for msg in w.warnings():
                    on_warning(msg)
            for a in advice:
                yield a
                n += 1
                if (max_evals is not None and n >= max_evals) or (until_stop and a.action in ("stop", "stopped")):
                    return
            if w.finished:
                if on_finish is not None:
                    on_finish(f"{w.path}: the run is finished ({w.finished_why}); stopped watching")
                return
            if timeout is not None and clock() - start >= timeout:
                if waiting:
                    raise IngestError(f"{path}: did not appear within {timeout:g} s; check the path, or start "
                                      "watch once training has created it")
                return
            sleep(interval)
    finally:
        w.close()


__all__ = ["Advice", "Watcher", "watch"]
