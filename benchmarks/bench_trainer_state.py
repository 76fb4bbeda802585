"""Benchmark: reading trainer_state.json with logsage vs `json.load` + a plain Python loop (and pandas).

The files are written the way the Hugging Face Trainer writes them
(`TrainerState.save_to_json`: `json.dumps(asdict(state), indent=2, sort_keys=True)`), with
a log_history of N entries: a train record at every logging step (loss, grad_norm,
learning_rate, epoch, step) and an evaluation record (eval_loss, eval_accuracy,
eval_runtime, eval_samples_per_second, eval_steps_per_second, epoch, step) every 10th,
plus the final training summary. They are kept under /tmp/logsage-bench-ts/.

For N in 1k, 10k, 100k, 1M (``--sizes``) it times, in this process, medians of
``--repeat`` (default 5, at least 3) runs each:

* naive: `json.load` + a loop calling `to_float` on every value, appending per-metric
  lists, then numpy arrays (what a user would write);
* pandas (when installed): `json.load` + `pd.DataFrame(log_history)` + one `to_numeric`
  per column;
* logsage: `load_history(file, use_cache=False)` - the whole reader: decoding, the
  record kinds, duplicates, cleanups, the Series;
* logsage on the same file with a bare ``NaN`` in it (orjson refuses it: the stdlib
  decoder path);

and prints each ratio (>1 = logsage faster), checking that every reader saw the same
number of points.

    python benchmarks/bench_trainer_state.py [--sizes 1000,10000,100000,1000000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from logsage.ingest import load_history  # noqa: E402
from logsage.ingest.readers.base import to_float  # noqa: E402

FOLDER = Path("/tmp/logsage-bench-ts")


def write_state(path: Path, n: int, *, with_nan: bool = False) -> None:
    """A trainer_state.json with `n` log_history entries, serialised as HF's save_to_json does."""
    rng = np.random.default_rng(n)
    history = []
    step = 0
    while len(history) < n - 1:
        step += 10
        loss = float(2.0 * np.exp(-step / (n * 5)) + rng.normal(0, 0.01))
        history.append({"epoch": step / (n * 10), "grad_norm": float(rng.uniform(0.5, 2.0)),
                        "learning_rate": 5e-5 * (1 - step / (n * 11)), "loss": round(loss, 4), "step": step})
        if len(history) % 10 == 0 and len(history) < n - 1:
            history.append({"epoch": step / (n * 10), "eval_loss": loss + 0.1, "eval_accuracy": float(rng.uniform()),
                            "eval_runtime": 12.3, "eval_samples_per_second": 81.2, "eval_steps_per_second": 10.1,
                            "step": step})
    if with_nan:
        history[len(history) // 2]["loss"] = float("nan")
    history.append({"epoch": 1.0, "step": step, "total_flos": 1.2e17, "train_loss": 1.1, "train_runtime": 3600.0,
                    "train_samples_per_second": 10.0, "train_steps_per_second": 1.0})
    state = {"best_global_step": None, "best_metric": None, "best_model_checkpoint": None, "epoch": 1.0,
             "eval_steps": 100, "global_step": step, "is_hyper_param_search": False, "is_local_process_zero": True,
             "is_world_process_zero": True, "log_history": history, "logging_steps": 10, "max_steps": step,
             "num_input_tokens_seen": 0, "num_train_epochs": 1, "save_steps": 500,
             "stateful_callbacks": {"TrainerControl": {"args": {"should_epoch_stop": False, "should_evaluate": False,
                                                                "should_log": False, "should_save": True,
                                                                "should_training_stop": True}, "attributes": {}}},
             "total_flos": 1.2e17, "train_batch_size": 8, "trial_name": None, "trial_params": None}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def naive(path: Path) -> dict:
    with open(path, encoding="utf-8") as f:
        state = json.load(f)
    cols: dict[str, tuple[list, list]] = {}
    for rec in state["log_history"]:
        step = rec.get("step")
        if not isinstance(step, int) or "train_runtime" in rec:
            continue
        for k, v in rec.items():
            if k == "step":
                continue
            fv = to_float(v)
            if fv is None:
                continue
            s, vs = cols.setdefault(k, ([], []))
            s.append(step)
            vs.append(fv)
    return {k: (np.asarray(s, dtype=np.int64), np.asarray(v, dtype=np.float64)) for k, (s, v) in cols.items()}


def n_points(result) -> int:
    """Points per (metric, distinct step): HF writes a step's epoch in its train and its eval record."""
    if isinstance(result, dict):
        return sum(np.unique(s).size for s, _ in result.values())
    return result


def with_pandas(path: Path) -> dict:
    import pandas as pd

    with open(path, encoding="utf-8") as f:
        state = json.load(f)
    df = pd.DataFrame(state["log_history"])
    df = df[df["train_runtime"].isna()] if "train_runtime" in df else df
    steps = df["step"].to_numpy()
    out = {}
    for c in df.columns:
        if c == "step":
            continue
        col = pd.to_numeric(df[c], errors="coerce")
        ok = col.notna().to_numpy()
        out[c] = (steps[ok], col.to_numpy()[ok])
    return out


def with_logsage(path: Path) -> int:
    h = load_history(path, use_cache=False)
    return sum(len(s) for s in h.series.values())


def median_times(fns: dict, path: Path, repeat: int) -> dict[str, tuple[float, float, int]]:
    """Median wall and CPU seconds and the points of each reader; the readers take turns, so load
    on a shared machine falls on all of them alike."""
    for fn in fns.values():  # warm: imports, first-call caches
        fn(path)
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    points: dict[str, int] = {}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0, c0 = time.perf_counter(), time.process_time()
            result = fn(path)
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
            points[name] = n_points(result)
            del result
    return {k: (statistics.median(wall[k]), statistics.median(cpu[k]), points[k]) for k in fns}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000,10000,100000,1000000")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    repeat = max(3, args.repeat)
    try:
        import pandas  # noqa: F401
        has_pandas = True
    except ImportError:
        has_pandas = False
    try:
        import orjson  # noqa: F401
        decoder = "orjson"
    except ImportError:
        decoder = "json (orjson not installed)"
    print(f"trainer_state.json ingest, medians of {repeat}; logsage decoder: {decoder}; ratios > 1: logsage faster")
    print(f"{'entries':>9} {'MB':>6} | {'naive wall':>10} {'logsage':>8} {'ratio':>6} | {'naive CPU':>9} {'logsage':>8} "
          f"{'ratio':>6} | {'pandas CPU':>10} {'ratio':>6} | {'NaN file: ratio CPU':>19}")
    for n in [int(x) for x in args.sizes.split(",")]:
        path = FOLDER / f"n{n}" / "trainer_state.json"
        nan_path = FOLDER / f"n{n}-nan" / "trainer_state.json"
        if not path.exists():
            write_state(path, n)
        if not nan_path.exists():
            write_state(nan_path, n, with_nan=True)
        fns = {"naive": naive, "logsage": with_logsage}
        if has_pandas:
            fns["pandas"] = with_pandas
        res = median_times(fns, path, repeat)
        res_nan = median_times({"naive": naive, "logsage": with_logsage}, nan_path, repeat)
        (w_naive, c_naive, n_naive), (w_ls, c_ls, n_ls) = res["naive"], res["logsage"]
        assert n_ls == n_naive, f"logsage read {n_ls} points, the naive loop {n_naive}"
        assert res_nan["logsage"][2] == res_nan["naive"][2]
        if has_pandas:
            c_pd, n_pd = res["pandas"][1], res["pandas"][2]
            assert n_pd == n_naive, (n_pd, n_naive)
            pd_cols = f"{c_pd:10.4f} {c_pd / c_ls:5.2f}x"
        else:
            pd_cols = f"{'-':>10} {'-':>6}"
        nan_ratio = res_nan["naive"][1] / res_nan["logsage"][1]
        print(f"{n:>9,} {path.stat().st_size / 1e6:6.1f} | {w_naive:10.4f} {w_ls:8.4f} {w_naive / w_ls:5.2f}x | "
              f"{c_naive:9.4f} {c_ls:8.4f} {c_naive / c_ls:5.2f}x | {pd_cols} | {nan_ratio:18.2f}x")


if __name__ == "__main__":
    main()
