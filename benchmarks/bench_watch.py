"""Benchmark: the cost of one `logsage watch` poll that finds one new evaluation, at 100 and at
10,000 evaluations already in the log, for a plain HF run's trainer_state.json (rewritten whole
at every save, as transformers' TrainerState.save_to_json writes it: sorted keys, indent 2) and
for a TensorBoard event file (written by tensorboard's EventFileWriter).

Each log holds N evaluations and one training-loss point per evaluation. A `Watcher` with the
rule `hf:patience=1000000` (it never stops, so every poll does the whole work) reads it once;
then, --polls times, one evaluation (and its train point) is added the way the writer adds it
(not timed) and one `poll()` is timed. Printed: the median and the 90th percentile per poll, next
to the reference path in the same run (no incremental rule state: the history rebuilt and the
prefix replayed at every evaluation, which is what watch did before) and, for trainer_state, to
`json.load` of the same file (what any reader of the rewritten file must at least pay once).

    python benchmarks/bench_watch.py [--sizes 100 10000] [--polls 30] [--format both|trainer_state|tensorboard]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from logsage.live import state as live_state  # noqa: E402
from logsage.live.watch import Watcher  # noqa: E402

RULE = "hf:patience=1000000"


def _entries(i: int) -> list[dict]:
    step = (i + 1) * 10
    loss = 2.0 / (1 + 0.001 * i)
    return [{"epoch": step / 5000, "grad_norm": 0.8123456, "learning_rate": 1.9876e-05, "loss": loss + 0.05,
             "step": step},
            {"epoch": step / 5000, "eval_loss": loss, "eval_runtime": 12.3456, "eval_samples_per_second": 81.002,
             "eval_steps_per_second": 10.125, "step": step}]


def _state_text(history: list[dict], step: int) -> str:
    state = {"best_global_step": None, "best_metric": None, "best_model_checkpoint": None, "epoch": step / 5000,
             "eval_steps": 10, "global_step": step, "is_hyper_param_search": False, "is_local_process_zero": True,
             "is_world_process_zero": True, "log_history": history, "logging_steps": 10, "max_steps": 10 ** 9,
             "num_input_tokens_seen": 0, "num_train_epochs": 3, "save_steps": 10,
             "stateful_callbacks": {"TrainerControl": {"args": {"should_epoch_stop": False, "should_evaluate": False,
                                                                "should_log": False, "should_save": True,
                                                                "should_training_stop": False}, "attributes": {}}},
             "total_flos": 0.0, "train_batch_size": 8, "trial_name": None, "trial_params": None}
    return json.dumps(state, indent=2, sort_keys=True) + "\n"


def bench_trainer_state(n: int, polls: int, incremental: bool) -> tuple[list[float], int, float]:
    with tempfile.TemporaryDirectory() as d:
        run = Path(d) / "run"
        run.mkdir()
        history = [e for i in range(n) for e in _entries(i)]
        path = run / "trainer_state.json"
        path.write_text(_state_text(history, n * 10))
        w = Watcher(run, RULE)
        assert len(w.poll()) == 1
        times = []
        for k in range(polls):
            history += _entries(n + k)
            path.write_text(_state_text(history, (n + k + 1) * 10))
            t0 = time.perf_counter()
            got = w.poll()
            times.append(time.perf_counter() - t0)
            assert len(got) == 1 and got[0].eval_index == n + k, got
        size = path.stat().st_size
        t0 = time.perf_counter()
        for _ in range(5):
            with open(path) as f:
                json.load(f)
        load = (time.perf_counter() - t0) / 5
        w.close()
    return times, size, load


def bench_tensorboard(n: int, polls: int, incremental: bool) -> tuple[list[float], int, float]:
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    def add(writer, i: int) -> None:
        for e in _entries(i):
            tag, v = ("train/loss", e["loss"]) if "loss" in e else ("eval/loss", e["eval_loss"])
            writer.add_event(event_pb2.Event(wall_time=1.7e9 + e["step"], step=e["step"], summary=summary_pb2.Summary(
                value=[summary_pb2.Summary.Value(tag=tag, simple_value=v)])))

    with tempfile.TemporaryDirectory() as d:
        run = Path(d) / "run"
        writer = EventFileWriter(str(run), max_queue_size=10 ** 6, flush_secs=10 ** 6)
        for i in range(n):
            add(writer, i)
        writer.flush()
        w = Watcher(run, RULE)
        assert len(w.poll()) == 1
        times = []
        for k in range(polls):
            add(writer, n + k)
            writer.flush()
            t0 = time.perf_counter()
            got = w.poll()
            times.append(time.perf_counter() - t0)
            assert len(got) == 1 and got[0].eval_index == n + k, got
        size = next(run.iterdir()).stat().st_size
        writer.close()
        w.close()
    return times, size, float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 10_000])
    ap.add_argument("--polls", type=int, default=30)
    ap.add_argument("--format", choices=("both", "trainer_state", "tensorboard"), default="both")
    args = ap.parse_args()
    benches = {"trainer_state": bench_trainer_state, "tensorboard": bench_tensorboard}
    if args.format != "both":
        benches = {args.format: benches[args.format]}
    real_state_for = live_state.state_for
    print(f"one poll that finds one new evaluation; rule {RULE}; median (p90) of {args.polls} polls")
    ok = True
    for name, fn in benches.items():
        medians = {}
        for n in args.sizes:
            row = []
            for incremental in (True, False):
                live_state.state_for = real_state_for if incremental else (lambda rule, params: None)
                times, size, load = fn(n, args.polls, incremental)
                med = statistics.median(times)
                p90 = sorted(times)[int(0.9 * (len(times) - 1))]
                row.append(med)
                if incremental:
                    medians[n] = med
                label = "incremental" if incremental else "reference (rebuild + replay prefix)"
                extra = f"; json.load of the file {load * 1e3:.2f} ms" if load == load else ""
                print(f"{name:13s} {n:>7,} evals ({size / 1e6:6.2f} MB)  {label:36s} "
                      f"{med * 1e3:8.3f} ms ({p90 * 1e3:.3f}){extra}")
            print(f"{'':13s} {n:>7,} evals  reference / incremental {row[1] / row[0]:6.1f}x")
        live_state.state_for = real_state_for
        if len(args.sizes) >= 2:
            lo, hi = min(args.sizes), max(args.sizes)
            ratio = medians[hi] / medians[lo]
            ok &= ratio <= 2.0
            print(f"{name:13s} per-poll cost at {hi:,} / at {lo:,} evaluations: {ratio:.2f}x (goal <= 2x)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
