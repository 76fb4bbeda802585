"""The sweep engine: one rule over many runs x many parameter sets at once, vectorized with numpy.

The reference scans in `logsage.rules` walk one sequence one evaluation at a time,
which is the clearest statement of a rule but costs a Python loop per (run,
parameter set). A parameter sweep over hundreds of runs asks for hundreds of
thousands of them. Here the same decisions come from whole-array operations;
`tests/decide/test_sweep.py` and `tests/decide/test_properties.py` hold every outcome (stop, best,
reason, decidable) equal to the reference scan on random sequences with NaN, inf and
ties, and `benchmarks/bench_sweep.py` measures the speed-up.

All three rules here share one state, "evaluations since the last improvement" (the
counter), and stop at the first allowed evaluation (not_before <= t < length) where
the counter reaches the patience. What differs is what counts as an improvement:

* `hf`: the Trainer's best ratchets on any strict gain, whatever the callback's
  threshold, so the gain of each evaluation over the previous best is computed once
  per run. The counter at t is >= p exactly when no gain in the last p evaluations
  exceeds the threshold, i.e. when the sliding maximum of the gain over p
  evaluations is <= threshold. Per distinct patience: one sliding-maximum update,
  its running minimum over allowed t (non-increasing), and one `searchsorted` (rows
  offset into one sorted array) answers every threshold for every run.
* `patience`, no-improvement: the best moves only on a gain larger than δ, so the
  improvements form a chain that depends on δ. Every improvement is a record low of
  the run, so the chain is followed over the records only (~60 of 200 evaluations on
  typical curves), for all (run, δ) pairs at once, runs grouped by record count; the
  first segment between improvements that is longer than p is read off a staircase
  of segment lengths built on the fly, for every patience at once (`_no_improvement`).
* `patience`, degradation: the best is the running minimum (independent of δ); the
  counter is the length of the current run of degraded evaluations, one
  `maximum.accumulate` per δ, and the stop for every patience is one `searchsorted`
  (`_first_reach`).

Entry points: `sweep_indices(rule, runs, param_sets)` for bare (stop, best) index
arrays (the benchmark), `batch_outcomes(rule, xs, param_sets)` for many runs at once
(what `replay` uses: index arrays plus each run's reasons, worded exactly as the
reference scan words them, from the rule's count at the stop computed in one pass per
distinct threshold / δ), and `outcomes(rule, x, param_sets)` for full `Outcome`s on one
run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from logsage.rules.base import Outcome, RuleInput

NONE = -1  # "no stop" / "no best" in index arrays


@dataclass(frozen=True)
class Batch:
    """Runs padded to one (runs x evals) array; padding is NaN and never decides anything."""

    values: np.ndarray  # float64 (R, N), oriented lower-is-better, NaN-padded
    lengths: np.ndarray  # int64 (R,)
    steps: list[np.ndarray]  # each run's eval steps (for min_steps)

    @classmethod
    def of(cls, values: Sequence[np.ndarray], steps: Sequence[np.ndarray] | None = None) -> "Batch":
        lengths = np.array([len(v) for v in values], dtype=np.int64)
        n = int(lengths.max()) if len(values) else 0
        arr = np.full((len(values), max(n, 1)), np.nan)
        for r, v in enumerate(values):
            arr[r, : len(v)] = v
        if steps is None:
            steps = [np.arange(k, dtype=np.int64) for k in lengths]
        return cls(arr, lengths, [np.asarray(s, dtype=np.int64) for s in steps])


@dataclass(frozen=True)
class SweepResult:
    """(runs x parameter sets) arrays; NONE (-1) where the rule never stops / has no best."""

    stop: np.ndarray
    best: np.ndarray
    decidable: np.ndarray  # bool


# ---------------------------------------------------------------------- shared pieces
def _not_before(batch: Batch, min_evals: int, min_steps: int) -> np.ndarray:
    """Per run, the first evaluation index at which a stop is allowed (as in logsage.decide.engine.not_before)."""
    nb = np.full(len(batch.lengths), max(int(min_evals) - 1, 0), dtype=np.int64)
    if min_steps and min_steps > 0:
        for r, st in enumerate(batch.steps):
            hit = np.flatnonzero(st >= min_steps)
            nb[r] = max(nb[r], int(hit[0]) if hit.size else len(st))
    return nb


def _counters(improved: np.ndarray) -> np.ndarray:
    """d[r, t] = t - (last t' <= t with improved[r, t']); t + 1 when none yet."""
    n = improved.shape[-1]
    idx = np.arange(n, dtype=np.int64)
    last = np.maximum.accumulate(np.where(improved, idx, -1), axis=-1)
    return idx - last


def _first_reach(d: np.ndarray, lengths: np.ndarray, nb: np.ndarray, patiences: np.ndarray) -> np.ndarray:
    """For each run r and patience p: the first t with nb[r] <= t < lengths[r] and d[r, t] >= p.

    d: (R, N) non-negative ints; patiences: (P,) ints >= 0. Returns (R, P), NONE where none.
    """
    r_count, n = d.shape
    idx = np.arange(n, dtype=np.int64)
    allowed = (idx[None, :] >= nb[:, None]) & (idx[None, :] < lengths[:, None])
    # Running max of the counter over allowed t: non-decreasing in t, values in -1..n.
    run_max = np.maximum.accumulate(np.where(allowed, np.minimum(d, n), -1), axis=1)
    # Offset each row so the whole array is one sorted sequence, then one searchsorted
    # answers every (run, patience): first position where run_max >= p.
    width = n + 2
    flat = (run_max + 1 + (np.arange(r_count, dtype=np.int64) * width)[:, None]).ravel()
    p = np.minimum(patiences.astype(np.int64), n)  # a patience > n can never be reached
    queries = (np.arange(r_count, dtype=np.int64) * width)[:, None] + (p + 1)[None, :]
    pos = np.searchsorted(flat, queries.ravel(), side="left").reshape(r_count, len(p))
    t = pos - (np.arange(r_count, dtype=np.int64) * n)[:, None]
    ok = (t >= 0) & (t < lengths[:, None])
    return np.where(ok, t, NONE)


def _gather(a: np.ndarray, t: np.ndarray) -> np.ndarray:
    """a[r, t[r, k]] for t != NONE, else NONE (a: (R, N), t: (R, K))."""
    r_count, n = a.shape
    flat_index = np.where(t >= 0, t, 0) + (np.arange(r_count, dtype=np.int64) * n)[:, None]
    return np.where(t >= 0, a.ravel()[flat_index], NONE)


def _groups(param_sets: Sequence[Mapping[str, Any]], key: Callable[[Mapping[str, Any]], Any]) -> dict:
    out: dict[Any, list[int]] = {}
    for k, ps in enumerate(param_sets):
        out.setdefault(key(ps), []).append(k)
    return out


# ---------------------------------------------------------------------- hf
def _running_best_index(v: np.ndarray, *, finite_only: bool = False) -> np.ndarray:
    """Index of the running strict minimum starting from +inf (NaN never best; earliest on ties).

    With `finite_only`, -inf cannot be the best either (the `patience` rules' convention);
    otherwise it can, as in the HF Trainer's `value < best` test.
    """
    r_count, n = v.shape
    valid = np.isfinite(v) if finite_only else v < np.inf  # NaN and +inf never beat the +inf start
    masked = np.where(valid, v, np.inf)
    run_min = np.minimum.accumulate(masked, axis=1)
    prev = np.concatenate([np.full((r_count, 1), np.inf), run_min[:, :-1]], axis=1)
    idx = np.arange(n, dtype=np.int64)
    return np.maximum.accumulate(np.where(masked < prev, idx, -1), axis=1)


def _hf_gain(v: np.ndarray) -> np.ndarray:
    """Gain of each evaluation over the Trainer's best of the previous ones (-inf: not strictly better).

    The Trainer's best starts at +inf and moves on any strict gain, whatever the
    callback's threshold, so this is computed once and each threshold is one comparison.
    The first evaluation always resets the callback's counter (gain +inf).
    """
    r_count = v.shape[0]
    masked = np.where(v < np.inf, v, np.inf)
    prev_best = np.concatenate([np.full((r_count, 1), np.inf), np.minimum.accumulate(masked, axis=1)[:, :-1]],
                               axis=1)
    with np.errstate(invalid="ignore"):
        gain = np.where(v < prev_best, prev_best - v, -np.inf)
    gain[:, 0] = np.inf
    return gain


def _sweep_hf(batch: Batch, param_sets: Sequence[Mapping[str, Any]]) -> SweepResult:
    """HF: stop at the first allowed t whose last `patience` evaluations all gained <= threshold.

    The counter at t is at least p exactly when no evaluation in (t-p, t] gained more
    than the threshold, i.e. when the sliding maximum W_p[t] of the gain over the last p
    evaluations is <= threshold (the window reaching back to the first evaluation,
    whose gain is +inf, never qualifies). So per distinct patience: one sliding maximum
    (built up from the previous patience's), its running minimum over allowed t (non-
    increasing), and one searchsorted answers every threshold for every run.
    """
    v = batch.values
    r_count, n = v.shape
    P = len(param_sets)
    gain = _hf_gain(v)
    idx = np.arange(n, dtype=np.int64)
    rows = np.arange(r_count, dtype=np.int64)
    stop = np.full((r_count, P), NONE, dtype=np.int64)
    for (me, ms), ks in _groups(param_sets, lambda ps: (ps.get("min_evals", 0), ps.get("min_steps", 0))).items():
        nb = _not_before(batch, me, ms)
        allowed = (idx[None, :] >= nb[:, None]) & (idx[None, :] < batch.lengths[:, None])
        every_t_allowed = bool(allowed.all())
        by_p = _groups([param_sets[k] for k in ks], lambda ps: min(int(ps["patience"]), n))
        window = gain.copy()  # W_1
        width = 1
        for p in sorted(by_p):
            cols = np.array([ks[j] for j in by_p[p]])
            if p == 0:  # the counter is always >= 0: stop at the first allowed evaluation
                stop[:, cols] = np.where(nb < batch.lengths, nb, NONE)[:, None]
                continue
            if p >= n:
                continue  # never: the counter cannot reach n within n evaluations
            while width < p:
                np.maximum(window[:, width:], gain[:, : n - width], out=window[:, width:])
                width += 1
            run_min = np.minimum.accumulate(window if every_t_allowed else np.where(allowed, window, np.inf),
                                            axis=1)
            thr = np.array([float(param_sets[k]["threshold"]) for k in cols])
            thr_u, which = np.unique(thr, return_inverse=True)
            t_count = len(thr_u)
            # rank[t] = number of thresholds < run_min[t]; run_min[t] <= thr_u[j] iff rank[t] <= j.
            rank = np.searchsorted(thr_u, run_min.ravel(), side="left").reshape(r_count, n)
            key = t_count - rank  # non-decreasing along t, in 0..t_count
            span = t_count + 2
            flat = (key + (rows * span)[:, None]).ravel()
            queries = (rows * span)[:, None] + (t_count - which)[None, :]
            pos = np.searchsorted(flat, queries.ravel(), side="left").reshape(r_count, len(cols))
            t = pos - (rows * n)[:, None]
            stop[:, cols] = np.where(t < batch.lengths[:, None], t, NONE)
    end = np.where(stop >= 0, stop, (batch.lengths - 1)[:, None])  # -1 for an empty run: no best
    best = _gather(_running_best_index(v), end)
    return SweepResult(stop, best, np.ones((r_count, P), dtype=bool))


def _end_index(batch: Batch, stop: np.ndarray) -> np.ndarray:
    """The evaluation a rule's count is read at: the stop, else the run's last (-1 for an empty run)."""
    return np.where(stop >= 0, stop, (batch.lengths - 1)[:, None])


def _hf_counters(batch: Batch, param_sets: Sequence[Mapping[str, Any]], stop: np.ndarray,
                 best: np.ndarray) -> np.ndarray:
    """HF's counter at the stop (or at the end) for every run x parameter set: evaluations since
    the last gain above the threshold (the first evaluation always counts as one), 0 for an empty run.
    One running maximum per distinct threshold."""
    v = batch.values
    n = v.shape[1]
    end = _end_index(batch, stop)
    gain = _hf_gain(v)
    idx = np.arange(n, dtype=np.int64)
    out = np.zeros(stop.shape, dtype=np.int64)
    for thr, ks in _groups(param_sets, lambda ps: float(ps["threshold"])).items():
        cols = np.array(ks)
        last = np.maximum.accumulate(np.where(gain > thr, idx, -1), axis=1)
        e = end[:, cols]
        out[:, cols] = np.where(e >= 0, e - np.take_along_axis(last, np.maximum(e, 0), axis=1), 0)
    return out


def _hf_words(param_sets: Sequence[Mapping[str, Any]]) -> dict[str, list]:
    """Per parameter set, the parts of the reason that do not depend on the run (see `_assemble`),
    as the rule words them (`logsage.rules.library.hf_reason_words`)."""
    from logsage.rules.library import hf_reason_words

    words = [hf_reason_words(int(ps["patience"]), float(ps["threshold"])) for ps in param_sets]
    return {"first": [w.first for w in words], "second": [w.second for w in words],
            "never": [w.never for w in words]}


def _with_metric(words: dict[str, list], metric: str, cache: dict) -> dict[str, list]:
    """The words with the metric's name in front of "first" and "never" (cached per metric)."""
    got = cache.get(metric)
    if got is None:
        got = cache[metric] = {**words, "first": [metric + w for w in words["first"]],
                               "never": [metric + w for w in words["never"]]}
    return got


def _best_texts(best_of: Callable[[int], str]) -> Callable[[int], str]:
    memo: dict[int, str] = {}

    def best_txt(b: int) -> str:
        t = memo.get(b)
        if t is None:
            t = memo[b] = best_of(b)
        return t

    return best_txt


def _assemble(x: RuleInput, words: dict[str, list], stop: np.ndarray, best: np.ndarray, counter: np.ndarray,
              best_txt: Callable[[int], str]) -> list[str]:
    """The stopped form of every reason: first + "<count> evaluation(s)" + second + "<stop step><best
    text>", the count and the tail worded once per distinct value and each reason one join
    (the caller rewrites the ones that did not stop)."""
    from logsage.rules.common import evals

    n1 = len(x.values) + 1
    counts = {c: evals(c) for c in np.unique(counter).tolist()}
    code = np.maximum(stop, 0) * n1 + best + 1
    steps = x.steps
    tails = {k: f"{int(steps[k // n1])}{best_txt(k % n1 - 1)}" for k in np.unique(code).tolist()}
    return list(map("".join, zip(words["first"], map(counts.__getitem__, counter.tolist()), words["second"],
                                 map(tails.__getitem__, code.tolist()))))


def _hf_reasons(x: RuleInput, words: dict[str, list], stop: np.ndarray, best: np.ndarray,
                counter: np.ndarray, cache: dict) -> list[str]:
    """One run's reasons, assembled from the words hf declares (`hf_reason_words`, `HF_STOPS_AT_ONCE`)."""
    from logsage.rules.common import evals, shown
    from logsage.rules.library import HF_STOPS_AT_ONCE

    words = _with_metric(words, x.metric, cache)
    best_txt = _best_texts(lambda b: "; best " + (shown(x, b) if b >= 0 else "none (no finite evaluation)"))
    out = _assemble(x, words, stop, best, counter, best_txt) if len(x.values) else [""] * len(stop)
    total, never = evals(len(x.values)), words["never"]
    for k in np.flatnonzero((stop < 0) | ((stop == 0) & (counter == 0))).tolist():
        b, c = int(best[k]), int(counter[k])
        if stop[k] == 0:
            out[k] = HF_STOPS_AT_ONCE + best_txt(b)
        else:
            out[k] = f"{never[k]}{total} (counter {c} at the end){best_txt(b)}"
    return out


# ---------------------------------------------------------------------- patience
def _record_lows(v: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each run's strict running minima of its finite values, compacted to the left.

    Returns (values (R, K), positions (R, K)), padded with NaN / the run's length.
    Every improvement of the `patience` rule is one of these: an improvement beats the
    best (itself a record) by more than δ, and every value since the best was at least
    best - δ, so the improving value is below everything before it. The chain over δ
    therefore only has to visit the records, usually far fewer than the evaluations.
    """
    r_count, n = v.shape
    finite = np.isfinite(v)
    masked = np.where(finite, v, np.inf)
    prev = np.concatenate([np.full((r_count, 1), np.inf), np.minimum.accumulate(masked, axis=1)[:, :-1]], axis=1)
    is_rec = finite & (masked < prev)
    counts = is_rec.sum(axis=1)
    k = max(int(counts.max()) if r_count else 0, 1)
    rec_v = np.full((r_count, k), np.nan)
    rec_t = np.broadcast_to(lengths[:, None], (r_count, k)).copy()
    rr, tt = np.nonzero(is_rec)  # row-major: records of each run in order
    slot = np.arange(rr.size) - np.concatenate([[0], np.cumsum(counts)[:-1]])[rr]
    rec_v[rr, slot] = v[rr, tt]
    rec_t[rr, slot] = tt
    return rec_v, rec_t


def _groups_by_record_count(v: np.ndarray) -> list[np.ndarray]:
    """Row indices grouped by the run's number of records (buckets of powers of two)."""
    finite = np.isfinite(v)
    masked = np.where(finite, v, np.inf)
    prev = np.concatenate([np.full((v.shape[0], 1), np.inf), np.minimum.accumulate(masked, axis=1)[:, :-1]], axis=1)
    counts = (finite & (masked < prev)).sum(axis=1)
    buckets = np.ceil(np.log2(counts + 1)).astype(np.int64)
    return [np.flatnonzero(buckets == b) for b in np.unique(buckets)]


def _no_improvement(batch: Batch, deltas: np.ndarray, relative: bool, nb: np.ndarray,
                    max_patience: int) -> tuple[np.ndarray, np.ndarray]:
    """The `no-improvement` definition for every run x δ x patience 1..max_patience at once.

    1. The improvement chain of every (run, δ) is followed over the runs' records (see
       `_record_lows`): K steps over (runs x δ) arrays. Improvements cut a run into
       segments: from each improvement to the next one (or to the run's end). Inside a
       segment starting at s the count is t - s. (Before the first finite value nothing
       is counted, so the part before the first improvement never stops.)
    2. The rule stops in the first segment that ends after not_before and is longer than
       the patience p, at t = max(not_before, s + p). The lengths of those segments, in
       order, have a staircase of running maxima; a segment that raises it from m to L
       answers every p in [m, L). Raises are few (patiences beyond max_patience do not
       matter), so they are collected as events and written out once at the end.

    Returns (first_start (R, D, max_patience + 1): start of that segment, -1 when none;
    last (R, D): the last improvement, -1 when none).
    """
    v = batch.values
    r_count, _ = v.shape
    d_count = len(deltas)
    rec_v, rec_t = _record_lows(v, batch.lengths)
    cap = max_patience + 1
    never = np.iinfo(np.int64).max // 4  # "no improvement yet": a segment from here has negative length
    staircase = np.zeros((r_count, d_count), dtype=np.int64)  # patiences below it are answered
    last = np.full((r_count, d_count), never, dtype=np.int64)  # position of the last improvement
    best_v = np.full((r_count, d_count), np.inf)
    has_best = np.zeros((r_count, d_count), dtype=bool)
    check_nb = bool(nb.any())
    nb_col = nb[:, None]
    events: list[tuple[np.ndarray, ...]] = []  # (flat (run, δ) index, from p, to p, segment start)

    def close(end: np.ndarray, closing: np.ndarray) -> None:
        """Segments [last, end) that close where `closing`: raise the staircase where they are longer."""
        height = np.minimum(end - last, cap)
        raised = closing & (height > staircase)
        if check_nb:
            raised &= end > nb_col
        flat = np.flatnonzero(raised)
        if flat.size:
            events.append((flat, staircase.ravel()[flat], height.ravel()[flat], last.ravel()[flat]))
            staircase.ravel()[flat] = height.ravel()[flat]

    with np.errstate(invalid="ignore", over="ignore"):
        for j in range(rec_v.shape[1]):
            vj = rec_v[:, j][:, None]
            if relative:
                imp = (~has_best | (best_v - vj > deltas[None, :] * np.abs(best_v))) & ~np.isnan(vj)
                has_best |= imp
            else:  # the best starts at +inf, which any finite record beats; NaN (padding) never does
                imp = best_v - vj > deltas[None, :]
            tj = rec_t[:, j][:, None]
            close(tj, imp)
            np.copyto(last, tj, where=imp)  # (R, 1) broadcasts over δ
            np.copyto(best_v, vj, where=imp)
    close(batch.lengths[:, None], np.ones(last.shape, dtype=bool))  # the final segment runs to the end
    first_start = np.full(r_count * d_count * cap, -1, dtype=np.int64)
    if events:
        flat, lo, hi, start = (np.concatenate(parts) for parts in zip(*events))
        span = hi - lo
        offsets = np.repeat(flat * cap + lo - np.cumsum(span) + span, span) + np.arange(int(span.sum()))
        first_start[offsets] = np.repeat(start, span)
    return first_start.reshape(r_count, d_count, cap), np.where(last == never, -1, last)


def _degradation(batch: Batch, param_sets: Sequence[Mapping[str, Any]], ks: list[int], relative: bool,
                 stop: np.ndarray, best: np.ndarray) -> None:
    """The `degradation` definition: the count is the length of the current run of evaluations that
    are non-finite or worse than the previous best by more than δ; the best is the running minimum of
    the finite values (any strict gain), independent of δ."""
    v = batch.values
    r_count, n = v.shape
    finite = np.isfinite(v)
    masked = np.where(finite, v, np.inf)
    prev_best = np.concatenate([np.full((r_count, 1), np.inf), np.minimum.accumulate(masked, axis=1)[:, :-1]],
                               axis=1)
    best_idx = _running_best_index(v, finite_only=True)
    last_eval = np.maximum(batch.lengths - 1, 0)[:, None]
    has_prev = np.isfinite(prev_best)
    with np.errstate(invalid="ignore"):
        gap = np.where(has_prev & finite, v - prev_best, -np.inf)
        base = np.abs(prev_best) if relative else np.ones_like(prev_best)
    for delta, sub in _groups([param_sets[k] for k in ks], lambda ps: float(ps["min_delta"])).items():
        with np.errstate(invalid="ignore"):
            # Nothing counts before the first finite value; after it a non-finite value is a degradation.
            degraded = has_prev & (~finite | (gap > delta * base))
        d = _counters(~degraded)
        for (me, ms), sub2 in _groups([param_sets[ks[i]] for i in sub],
                                      lambda ps: (ps.get("min_evals", 0), ps.get("min_steps", 0))).items():
            cols = np.array([ks[sub[i]] for i in sub2])
            nb = _not_before(batch, me, ms)
            pats = np.array([max(int(param_sets[k]["patience"]), 1) for k in cols], dtype=np.int64)
            s = _first_reach(d, batch.lengths, nb, pats)
            stop[:, cols] = s
            best[:, cols] = _gather(best_idx, np.where(s >= 0, s, last_eval))


def _sweep_patience(batch: Batch, param_sets: Sequence[Mapping[str, Any]]) -> SweepResult:
    r_count, n = batch.values.shape
    P = len(param_sets)
    stop = np.full((r_count, P), NONE, dtype=np.int64)
    best = np.full((r_count, P), NONE, dtype=np.int64)
    chunks = None
    for (definition, relative), ks in _groups(param_sets, lambda ps: (ps["definition"], bool(ps["relative"]))).items():
        if definition == "degradation":
            _degradation(batch, param_sets, ks, relative, stop, best)
            continue
        by_delta = _groups([param_sets[k] for k in ks], lambda ps: float(ps["min_delta"]))
        deltas = np.array(list(by_delta), dtype=np.float64)
        delta_col = {d: j for j, d in enumerate(by_delta)}
        # Runs with similar numbers of records go together, so that padding to the longest
        # record list of a group wastes at most half of the chain's work.
        chunks = chunks if chunks is not None else _groups_by_record_count(batch.values)
        for (me, ms), sub in _groups([param_sets[k] for k in ks],
                                     lambda ps: (ps.get("min_evals", 0), ps.get("min_steps", 0))).items():
            cols = np.array([ks[i] for i in sub])
            nb = _not_before(batch, me, ms)
            # The stop check runs on counted evaluations only, so patience 0 acts as 1; a
            # patience beyond the run's length can never be reached.
            pats = np.array([min(max(int(param_sets[k]["patience"]), 1), n + 1) for k in cols], dtype=np.int64)
            dcol = np.array([delta_col[float(param_sets[k]["min_delta"])] for k in cols], dtype=np.int64)
            whole_rows = len(cols) == P
            for rows in chunks:
                part = Batch(batch.values[rows], batch.lengths[rows], [batch.steps[r] for r in rows])
                first_start, last = _no_improvement(part, deltas, relative, nb[rows], int(pats.max()))
                start = first_start[np.arange(len(rows))[:, None], dcol[None, :], pats[None, :]]
                found = start >= 0
                s = np.where(found, np.maximum(nb[rows][:, None], start + pats[None, :]), NONE)
                b = np.where(found, start, last[:, dcol])
                if whole_rows:
                    stop[rows], best[rows] = s, b
                else:
                    stop[np.ix_(rows, cols)], best[np.ix_(rows, cols)] = s, b
    # The rule cannot judge an empty series, one with no finite value, or a single evaluation.
    decidable = (batch.lengths >= 2) & np.isfinite(batch.values).any(axis=1)
    stop[~decidable] = NONE
    best[~decidable] = NONE
    return SweepResult(stop, best, np.broadcast_to(decidable[:, None], (r_count, P)).copy())


def _patience_counters(batch: Batch, param_sets: Sequence[Mapping[str, Any]], stop: np.ndarray,
                       best: np.ndarray) -> np.ndarray:
    """The `patience` rule's count at the stop (or at the last evaluation) for every run x parameter set."""
    v = batch.values
    r_count = v.shape[0]
    end = _end_index(batch, stop)
    out = np.zeros(stop.shape, dtype=np.int64)
    finite = np.isfinite(v)
    prev = np.concatenate([np.full((r_count, 1), np.inf),
                           np.minimum.accumulate(np.where(finite, v, np.inf), axis=1)[:, :-1]], axis=1)
    key = lambda ps: (ps["definition"], bool(ps["relative"]), float(ps["min_delta"]))  # noqa: E731
    for (definition, relative, delta), ks in _groups(param_sets, key).items():
        cols = np.array(ks)
        e = end[:, cols]
        if definition == "no-improvement":  # the best moves only on improvements: count since the best
            b = best[:, cols]
            out[:, cols] = np.where((b >= 0) & (e >= 0), e - b, 0)  # nothing counted before a finite value
            continue
        with np.errstate(invalid="ignore"):
            margin = delta * (np.abs(prev) if relative else 1.0)
            degraded = np.isfinite(prev) & (~finite | (v - prev > margin))
        d = _counters(~degraded)
        out[:, cols] = np.where(e >= 0, np.take_along_axis(d, np.maximum(e, 0), axis=1), 0)
    return out


def _patience_words(param_sets: Sequence[Mapping[str, Any]]) -> dict[str, list]:
    """Per parameter set, the parts of the reason that do not depend on the run (see `_assemble`),
    as the rule words them (`logsage.rules.patience.patience_reason_words`)."""
    from logsage.rules.patience import patience_reason_words

    words = [patience_reason_words(int(ps["patience"]), float(ps["min_delta"]), bool(ps["relative"]),
                                   ps["definition"]) for ps in param_sets]
    return {"first": [w.first for w in words], "second": [w.second for w in words],
            "never": [w.never for w in words], "degradation": [ps["definition"] == "degradation" for ps in param_sets]}


def _patience_reasons(x: RuleInput, words: dict[str, list], stop: np.ndarray, best: np.ndarray,
                      counter: np.ndarray, cache: dict) -> list[str]:
    """One run's reasons, assembled from the words the patience rule declares (`patience_reason_words`)."""
    from logsage.rules.common import best_phrase, check_series, evals

    bad = check_series(x, "patience")
    if bad is not None:
        return [bad.reason] * len(stop)
    words = _with_metric(words, x.metric, cache)
    best_txt = _best_texts(lambda b: "; " + best_phrase(x, b if b >= 0 else None))
    out = _assemble(x, words, stop, best, counter, best_txt)
    total, never, degradation = evals(len(x.values)), words["never"], words["degradation"]
    for k in np.flatnonzero(stop < 0).tolist():
        b, c = int(best[k]), int(counter[k])
        if degradation[k]:
            out[k] = f"{never[k]}{total}{best_txt(b)}"
        else:
            out[k] = f"{never[k]}{total} (count {c} at the end){best_txt(b)}"
    return out


# ---------------------------------------------------------------------- registry
@dataclass(frozen=True)
class _Form:
    sweep: Callable[[Batch, Sequence[Mapping[str, Any]]], SweepResult]
    counters: Callable[..., np.ndarray]  # the rule's count at the stop, for the reasons
    words: Callable[[Sequence[Mapping[str, Any]]], dict]  # per parameter set, run-independent wording
    reasons: Callable[..., list[str]]  # one run's reasons


HF_FORM = _Form(_sweep_hf, _hf_counters, _hf_words, _hf_reasons)
PATIENCE_FORM = _Form(_sweep_patience, _patience_counters, _patience_words, _patience_reasons)

# rule -> its vectorized form, filled from the rules' own declarations (`@rule(..., sweep=...)`).
_SWEEPS: dict[str, _Form] = {}


def _forms() -> dict[str, _Form]:
    if not _SWEEPS:
        from importlib import import_module

        from logsage.rules.base import sweep_forms

        for name, where in sweep_forms().items():
            module, _, attr = where.partition(":")
            _SWEEPS[name] = getattr(import_module(module), attr)
    return _SWEEPS

# Runs are swept in chunks of similar length of at most this many (runs x evaluations) cells,
# so that a few long runs do not pad every short one (or memory) to their length.
CHUNK_CELLS = 1 << 21


def supports(rule: str) -> bool:
    """Whether `rule` has a vectorized form here."""
    return rule in _forms()


def sweep_indices(rule: str, runs: Sequence[np.ndarray], param_sets: Sequence[Mapping[str, Any]], *,
                  steps: Sequence[np.ndarray] | None = None) -> SweepResult:
    """(stop, best) for every run x parameter set.

    Args:
        rule: a rule with a vectorized form (`supports`).
        runs: each run's monitored values, oriented lower-is-better.
        param_sets: complete, validated parameter dicts (`logsage.rules.resolve_params`).
        steps: each run's eval steps (needed only for min_steps).
    """
    if rule not in _forms():
        raise KeyError(f"no sweep form for rule {rule!r}")
    return _forms()[rule].sweep(Batch.of(runs, steps), param_sets)


@dataclass(frozen=True)
class BatchOutcomes:
    """One rule's outcomes for many runs x parameter sets: index arrays (runs x parameter sets,
    NONE where None) plus what the reasons need; `outcomes(r)` / `reasons(r)` give one run's."""

    rule: str
    xs: Sequence[RuleInput]
    param_sets: Sequence[Mapping[str, Any]]
    stop: np.ndarray
    best: np.ndarray
    decidable: np.ndarray
    counter: np.ndarray  # the rule's count at the stop (or at the end), for the wording
    words: dict  # per parameter set, the run-independent parts of the reasons
    cache: dict = field(default_factory=dict, repr=False)  # the words with a metric's name, per name

    def reasons(self, r: int) -> list[str]:
        """Run r's reasons, one per parameter set, exactly as the rule's own scan words them."""
        return _forms()[self.rule].reasons(self.xs[r], self.words, self.stop[r], self.best[r], self.counter[r],
                                          self.cache)

    def outcomes(self, r: int) -> list[Outcome]:
        stop, best, dec = self.stop[r].tolist(), self.best[r].tolist(), self.decidable[r].tolist()
        return [Outcome(s if s != NONE else None, b if b != NONE else None, why, bool(d))
                for s, b, d, why in zip(stop, best, dec, self.reasons(r))]


def batch_outcomes(rule: str, xs: Sequence[RuleInput], param_sets: Sequence[Mapping[str, Any]]) -> BatchOutcomes:
    """The rule's outcome for every run (its prepared `RuleInput`, not_before ignored: min_evals /
    min_steps come from each parameter set) x parameter set, in a few whole-array passes.

    Runs are sorted by length and swept in chunks (`CHUNK_CELLS`); the counts the
    reasons quote are computed the same way (one pass per distinct threshold / δ).
    """
    form = _forms()[rule]
    r_count, p_count = len(xs), len(param_sets)
    stop = np.full((r_count, p_count), NONE, dtype=np.int64)
    best = np.full((r_count, p_count), NONE, dtype=np.int64)
    decidable = np.ones((r_count, p_count), dtype=bool)
    counter = np.zeros((r_count, p_count), dtype=np.int64)
    order = sorted(range(r_count), key=lambda r: len(xs[r].values))
    start = 0
    while start < r_count:
        end = start + 1
        while end < r_count and (end + 1 - start) * max(len(xs[order[end]].values), 1) <= CHUNK_CELLS:
            end += 1
        rows = np.array(order[start:end], dtype=np.int64)
        batch = Batch.of([xs[r].values for r in rows], [xs[r].steps for r in rows])
        res = form.sweep(batch, param_sets)
        stop[rows], best[rows], decidable[rows] = res.stop, res.best, res.decidable
        counter[rows] = form.counters(batch, param_sets, res.stop, res.best)
        start = end
    return BatchOutcomes(rule, list(xs), list(param_sets), stop, best, decidable, counter,
                         form.words(param_sets))


def outcomes(rule: str, x: RuleInput, param_sets: Sequence[Mapping[str, Any]]) -> list[Outcome]:
    """The rule's full `Outcome` for each parameter set on one run; equal to the reference scan's."""
    return batch_outcomes(rule, [x], param_sets).outcomes(0)
