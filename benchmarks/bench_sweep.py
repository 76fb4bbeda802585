"""Benchmark: the vectorized sweep engine vs the per-evaluation reference scans, on a big grid,
both engine-only and end to end through `logsage.decide.engine.replay`.

The sweep of the issue: the `patience` (no-improvement, absolute min_delta) and `hf`
(threshold = min_delta) rules over 1,000 (patience, min_delta) pairs - patience
1..20 x 50 min_delta values (0, then 49 log-spaced from 1e-5 to 0.1) - and 500
synthetic eval-loss histories of 200 evaluations each (seeded: a decaying curve with
noise, a late upturn in most runs, and a NaN or inf in a few), i.e. 500,000 decisions
per rule.

Engine only (stop and best indices):

* the sweep engine in this process (`logsage.decide.sweep.sweep_indices`; best of --repeat,
  the first call reported too);
* the reference: each rule's own scan from `logsage.rules` called for every
  (run, parameter set) in Python;

checks that every (stop, best) pair is equal, and prints the times and the ratio.
`--sample K` runs the reference on every K-th run only and scales its time up
(labelled "extrapolated"); the default runs it in full.

End to end (what `logsage replay --grid` / `logsage tune` run): the same curves as
`History` objects (eval loss every 50 steps, a train loss every 10 steps, max_steps and
train_runtime in the metadata, so every score is computed), and one call

    replay(histories, ["patience", "hf"], grid={"patience": ..., "min_delta": ..., "threshold": ...})

which returns 1,000,000 scored decisions as columns (stops, selections, regrets, the
summary's fields) and the per-parameter-set summary; the `Decision` objects (with steps
and wall-clock saved, trend and p-value, overfit gap, reason) are built when first read,
and building all of them, and reading the columns, are timed apart. It is timed with
the default engine (best of --e2e-repeat; the first call, which also imports
scipy.special, reported apart) and with `engine="scan"` - every rule's own scan and the
per-decision scorer, one (run, parameter set) at a time - on every K-th run
(`--e2e-sample K`, default 25), scaled up to all runs and labelled extrapolated. Those
runs' decisions from both calls are compared field by field.

    python benchmarks/bench_sweep.py [--runs 500] [--evals 200] [--sample 1] [--repeat 5]
                                     [--part both|engine|e2e] [--e2e-sample 25] [--e2e-repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from logsage.decide import sweep  # noqa: E402
from logsage.core.history import History, Series  # noqa: E402
from logsage.decide.engine import replay  # noqa: E402
from logsage.rules import RuleInput, get_rule, resolve_params  # noqa: E402

PATIENCES = np.arange(1, 21)
MIN_DELTAS = np.concatenate([[0.0], np.logspace(-5, -1, 49)])
RULES = (("patience", "min_delta"), ("hf", "threshold"))


def make_runs(n_runs: int, n_evals: int, seed: int = 0) -> list[np.ndarray]:
    """Eval-loss curves: floor + amplitude * exp(-t / tau) + a late linear upturn + noise; a few NaN/inf."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_evals, dtype=float)
    runs = []
    for _ in range(n_runs):
        floor, amp, tau = rng.uniform(0.4, 2.0), rng.uniform(0.3, 2.0), rng.uniform(5, n_evals / 2)
        upturn = rng.uniform(0, 0.004) * np.maximum(t - rng.uniform(0.3, 0.9) * n_evals, 0)
        v = floor + amp * np.exp(-t / tau) + upturn + rng.normal(0, rng.uniform(0.001, 0.03), n_evals)
        if rng.random() < 0.05:
            v[rng.integers(n_evals)] = rng.choice([np.nan, np.inf])
        runs.append(v)
    return runs


def param_sets(rule: str, key: str) -> list[dict]:
    info = get_rule(rule)
    return [resolve_params(info, {"patience": int(p), key: float(d)}) for p in PATIENCES for d in MIN_DELTAS]


def time_sweep(rule: str, runs, psets, repeat: int):
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        res = sweep.sweep_indices(rule, runs, psets)
        times.append(time.perf_counter() - t0)
    return res, times


def time_reference(rule: str, runs, psets, sample: int):
    """The rule's own scan for every (run, parameter set): (stop, best) arrays for the sampled runs, seconds."""
    info = get_rule(rule)
    names = [p.name for p in info.params]
    kwargs = [{k: ps[k] for k in names} for ps in psets]
    picked = list(range(0, len(runs), sample))
    stop = np.full((len(picked), len(psets)), -1, dtype=np.int64)
    best = np.full((len(picked), len(psets)), -1, dtype=np.int64)
    t0 = time.perf_counter()
    for i, r in enumerate(picked):
        x = RuleInput(values=runs[r], steps=np.arange(len(runs[r])), metric="eval_loss")
        for k, kw in enumerate(kwargs):
            out = info.func(x, **kw)
            if out.stop_index is not None:
                stop[i, k] = out.stop_index
            if out.best_index is not None:
                best[i, k] = out.best_index
    return picked, stop, best, time.perf_counter() - t0


def make_histories(runs: list[np.ndarray], eval_every: int = 50, train_every: int = 10) -> list[History]:
    """Each curve as a run: eval loss every `eval_every` steps, a train loss (the eval curve minus a
    growing gap, with noise) every `train_every` steps, max_steps and train_runtime."""
    rng = np.random.default_rng(1)
    out = []
    for i, v in enumerate(runs):
        steps = np.arange(1, len(v) + 1) * eval_every
        tsteps = np.arange(train_every, steps[-1] + 1, train_every)
        finite = np.where(np.isfinite(v), v, np.nan)
        base = np.interp(tsteps, steps, np.nan_to_num(finite, nan=float(np.nanmean(finite))))
        train = base - 0.05 - 0.2 * tsteps / tsteps[-1] + rng.normal(0, 0.02, tsteps.size)
        out.append(History(path=f"synthetic/run-{i:03d}", format="synthetic",
                           series={"eval_loss": Series("eval_loss", steps, v), "loss": Series("loss", tsteps, train)},
                           meta={"max_steps": int(steps[-1]), "train_runtime": float(steps[-1]) * 0.9}))
    return out


def e2e_grid() -> dict:
    return {"patience": [int(p) for p in PATIENCES], "min_delta": [float(d) for d in MIN_DELTAS],
            "threshold": [float(d) for d in MIN_DELTAS]}


def timed(fn, repeat: int):
    """(last result, wall times, CPU times) of `repeat` calls."""
    walls, cpus, res = [], [], None
    for _ in range(repeat):
        res = None  # free the previous result first
        w, c = time.perf_counter(), time.process_time()
        res = fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return res, walls, cpus


def engine_part(runs, args) -> tuple[float, float, bool]:
    total_sweep = total_ref = 0.0
    ok = True
    for rule, key in RULES:
        psets = param_sets(rule, key)
        res, times = time_sweep(rule, runs, psets, args.repeat)
        picked, stop, best, ref_s = time_reference(rule, runs, psets, args.sample)
        equal = np.array_equal(res.stop[picked], stop) and np.array_equal(res.best[picked], best)
        ok &= equal
        scale = len(runs) / len(picked)
        ref_full = ref_s * scale
        label = "" if args.sample == 1 else f" (extrapolated from {len(picked)} runs)"
        stopped = float((res.stop >= 0).mean())
        print(f"{rule:9s} sweep {min(times):7.3f} s (first call {times[0]:.3f} s)   reference scan "
              f"{ref_full:7.2f} s{label}   ratio {ref_full / min(times):6.0f}x   decisions equal: {equal}   "
              f"stopped: {stopped:.1%}")
        total_sweep += min(times)
        total_ref += ref_full
    print(f"{'both':9s} sweep {total_sweep:7.3f} s   reference scan {total_ref:7.2f} s   "
          f"ratio {total_ref / total_sweep:6.0f}x   [engine only: stop/best indices]")
    return total_sweep, total_ref, ok


def e2e_part(runs, args) -> tuple[float, float, bool]:
    import gc

    histories = make_histories(runs)
    grid, rules = e2e_grid(), ["patience", "hf"]
    fast, walls, cpus = timed(lambda: replay(histories, rules, grid=grid), args.e2e_repeat)
    n_dec, n_pairs = len(fast.decisions), len(fast.decisions) // len(histories)
    best = int(np.argmin(walls))
    print(f"end to end: replay({len(histories)} runs, {rules}, grid) -> {n_dec:,} decisions, "
          f"{len(fast.summary):,} summary rows")
    print(f"  replay (engine auto = sweep)  {walls[best]:7.3f} s wall, {cpus[best]:7.3f} s CPU "
          f"(best of {len(walls)}; first call {walls[0]:.3f} s wall, {cpus[0]:.3f} s CPU)   "
          "[stops, selections, scores and summary; Decision objects not built yet]")
    w, c = time.perf_counter(), time.process_time()
    stops, selections, regrets = fast.stops(), fast.selections(), fast.regrets()
    print(f"  + the columns stops/selections/regrets ({stops.shape[0]} x {stops.shape[1]})   "
          f"{time.perf_counter() - w:7.3f} s wall, {time.process_time() - c:7.3f} s CPU")
    w, c = time.perf_counter(), time.process_time()
    n_built = sum(1 for _ in fast.decisions)
    print(f"  + every Decision object built ({n_built:,}; trend and gap computed then) "
          f"{time.perf_counter() - w:7.3f} s wall, {time.process_time() - c:7.3f} s CPU")
    picked = list(range(0, len(histories), args.e2e_sample))
    sample = [histories[i] for i in picked]
    gc.collect()
    ref, ref_walls, ref_cpus = timed(lambda: replay(sample, rules, grid=grid, engine="scan"), 1)
    scale = len(histories) / len(sample)
    ref_wall, ref_cpu = ref_walls[0] * scale, ref_cpus[0] * scale
    label = "" if len(sample) == len(histories) else f" (extrapolated from {len(sample)} runs)"
    equal = all(fast.decisions[i * n_pairs:(i + 1) * n_pairs] == ref.decisions[k * n_pairs:(k + 1) * n_pairs]
                for k, i in enumerate(picked))
    ref_stops = np.array([[-1 if d.stop_eval_index is None else d.stop_eval_index for d in ref.decisions[
        k * n_pairs:(k + 1) * n_pairs]] for k in range(len(picked))])
    ref_regrets = np.array([[np.nan if d.regret is None else d.regret for d in ref.decisions[
        k * n_pairs:(k + 1) * n_pairs]] for k in range(len(picked))])
    equal &= np.array_equal(stops[picked], ref_stops) and np.array_equal(regrets[picked], ref_regrets, equal_nan=True)
    equal &= fast.summary == replay(histories, rules, grid=grid, engine="sweep").summary
    print(f"  replay (engine scan)          {ref_wall:7.2f} s wall, {ref_cpu:7.2f} s CPU{label}   "
          f"decisions equal: {equal}")
    print(f"  ratio {ref_wall / walls[best]:6.1f}x wall, {ref_cpu / cpus[best]:6.1f}x CPU   [end to end]")
    return walls[best], ref_wall, equal


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=500)
    ap.add_argument("--evals", type=int, default=200)
    ap.add_argument("--sample", type=int, default=1, help="run the engine-only reference on every K-th run only")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--part", choices=("both", "engine", "e2e"), default="both")
    ap.add_argument("--e2e-sample", type=int, default=25, help="run the end-to-end scan on every K-th run only")
    ap.add_argument("--e2e-repeat", type=int, default=3)
    args = ap.parse_args()

    runs = make_runs(args.runs, args.evals)
    print(f"{args.runs} runs x {args.evals} evaluations; {len(PATIENCES) * len(MIN_DELTAS)} "
          f"(patience, min_delta) pairs per rule")
    ok = True
    lines = []
    if args.part in ("both", "engine"):
        s, r, eq = engine_part(runs, args)
        ok &= eq
        lines.append(f"engine only  {s:8.3f} s vs {r:8.2f} s   {r / s:6.0f}x")
    if args.part in ("both", "e2e"):
        s, r, eq = e2e_part(runs, args)
        ok &= eq
        lines.append(f"end to end   {s:8.3f} s vs {r:8.2f} s   {r / s:6.1f}x  (wall)")
    print("summary (sweep vs reference scan):")
    for line in lines:
        print("  " + line)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
