"""Benchmark: the vectorized sweep engine vs the per-evaluation reference scans, on a big grid.

The sweep of the issue: the `patience` (no-improvement, absolute min_delta) and `hf`
(threshold = min_delta) rules over 1,000 (patience, min_delta) pairs - patience
1..20 x 50 min_delta values (0, then 49 log-spaced from 1e-5 to 0.1) - and 500
synthetic eval-loss histories of 200 evaluations each (seeded: a decaying curve with
noise, a late upturn in most runs, and a NaN or inf in a few), i.e. 500,000 decisions
per rule. It times

* the sweep engine in this process (`logsage.sweep.sweep_indices`; best of --repeat,
  the first call reported too);
* the reference: each rule's own scan from `logsage.rules` called for every
  (run, parameter set) in Python - the way `replay --engine scan` does it;

checks that every (stop, best) pair is equal, and prints the times and the ratio.
`--sample K` runs the reference on every K-th run only and scales its time up
(labelled "extrapolated"); the default runs it in full.

    python benchmarks/bench_sweep.py [--runs 500] [--evals 200] [--sample 1] [--repeat 5]
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

from logsage import sweep  # noqa: E402
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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=500)
    ap.add_argument("--evals", type=int, default=200)
    ap.add_argument("--sample", type=int, default=1, help="run the reference on every K-th run only")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()

    runs = make_runs(args.runs, args.evals)
    print(f"{args.runs} runs x {args.evals} evaluations; {len(PATIENCES) * len(MIN_DELTAS)} "
          f"(patience, min_delta) pairs per rule")
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
          f"ratio {total_ref / total_sweep:6.0f}x")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
