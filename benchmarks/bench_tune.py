"""`logsage tune` at scale: N runs x 200 evaluations x the default grid, leave-one-run-out included.

    python benchmarks/bench_tune.py                 # 1k, 2k, 5k, 10k runs
    python benchmarks/bench_tune.py 1000 2000       # chosen sizes

Each size runs in a fresh process (so its peak memory is its own) on synthetic runs with
real-looking curves: a noisy decay to a minimum somewhere in the run, then a slow rise
(overfitting), with a stated max_steps. Printed per size: the whole `tune` (replay of every
candidate on every run + scores + objective + leave-one-run-out + comparison), the
leave-one-run-out alone, peak RSS, and the growth exponent between successive sizes
(log t2/t1 / log n2/n1: 1 is linear, 2 quadratic). The machine may be shared: CPU seconds of
the process are printed next to the wall time.
"""

from __future__ import annotations

import json
import math
import resource
import subprocess
import sys
import time

N_EVALS = 200


def runs(n: int, seed: int = 0) -> list:
    import numpy as np

    from logsage.core.history import History, Series

    rng = np.random.default_rng(seed)
    out = []
    t = np.arange(N_EVALS, dtype=np.float64)
    steps = (t.astype(np.int64) + 1) * 50
    for i in range(n):
        low = rng.uniform(0.2, 0.9) * N_EVALS
        values = 0.5 + 2.0 * np.exp(-t / rng.uniform(5, 40)) + 0.002 * np.maximum(t - low, 0) \
            + rng.normal(0, rng.uniform(0.002, 0.02), N_EVALS)
        h = History(path=f"synthetic/run-{i}", format="synthetic")
        h.series["eval_loss"] = Series("eval_loss", steps, values)
        h.meta["max_steps"] = int(steps[-1])
        out.append(h)
    return out


def one(n: int) -> dict:
    from logsage.analysis import validation
    from logsage.analysis.tune import tune

    hs = runs(n)
    loo_time = [0.0]
    original = validation.leave_one_out

    def timed(*a, **k):
        t0 = time.perf_counter()
        try:
            return original(*a, **k)
        finally:
            loo_time[0] += time.perf_counter() - t0

    import logsage.analysis.tune as tune_module

    tune_module.leave_one_out = timed
    t0, c0 = time.perf_counter(), time.process_time()
    res = tune(hs)
    total, cpu = time.perf_counter() - t0, time.process_time() - c0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024  # KiB -> GiB
    return {"runs": n, "candidates": len(res.candidates), "tune_s": total, "cpu_s": cpu, "loo_s": loo_time[0], "peak_gib": peak,
            "recommendation": res.recommendation["spec"]}


def main(sizes: list[int]) -> None:
    print(f"tune: N runs x {N_EVALS} evals x default grid (leave-one-run-out included); one process per size")
    print(f"{'runs':>6} {'candidates':>10} {'tune s':>8} {'CPU s':>7} {'of which LOO s':>14} {'peak GiB':>9} "
          f"{'exponent':>9}")
    prev = None
    for n in sizes:
        out = subprocess.run([sys.executable, __file__, "--one", str(n)], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        exp = "" if prev is None else f"{math.log(r['tune_s'] / prev['tune_s']) / math.log(n / prev['runs']):.2f}"
        print(f"{n:>6} {r['candidates']:>10} {r['tune_s']:>8.1f} {r['cpu_s']:>7.1f} {r['loo_s']:>14.3f} "
              f"{r['peak_gib']:>9.2f} {exp:>9}", flush=True)
        prev = r


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--one":
        print(json.dumps(one(int(sys.argv[2]))))
    else:
        main([int(a) for a in sys.argv[1:]] or [1000, 2000, 5000, 10000])
