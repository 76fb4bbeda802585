"""Benchmark: how long `logsage report` takes to render its HTML (no --png).

Two cases from the issue, each timed three ways:

* **long**: one run with `--long-evals` (500) evaluations and 100 train-loss points per
  evaluation (50,000), the way a run that evaluates often and logs every step looks;
* **many**: `--runs` (50) runs of `--evals` (40) evaluations each, with a checkpoint
  inventory, rendered into one report (summary table and Pareto front included).

Timings (best of `--repeat`):

* `render`: `logsage.report.html.build_report` alone, decisions already replayed;
* `build`: `build_report` = replay through the default rules + render, histories in memory;
* `cli`: `python -m logsage report RUN... --out report.html` in a fresh process on the runs
  written as trainer_state.json files: interpreter start, imports, reading, replay, render
  and writing - what a user waits for (wall clock, and the CPU time it used: on a shared
  machine the wall clock measures the neighbours too).

`--screenshot PATH` also writes a README screenshot of the report on the bundled real
runs (headless Chromium, 1280x2000).

    python benchmarks/bench_report.py [--runs 50] [--evals 40] [--long-evals 500] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from logsage.core.history import Checkpoint, History, Series  # noqa: E402


def make_run(path: str, n_evals: int, train_per_eval: int, seed: int, checkpoints: bool) -> History:
    """A decaying eval loss with noise and a late upturn; a train loss logged `train_per_eval` times per eval."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_evals, dtype=float)
    ev = 0.6 + 1.5 * np.exp(-t / (n_evals / 6)) + 0.002 * np.maximum(t - 0.6 * n_evals, 0) \
        + rng.normal(0, 0.01, n_evals)
    eval_steps = (np.arange(n_evals) + 1) * 100
    train_steps = np.arange(1, n_evals * 100 + 1, max(100 // train_per_eval, 1))
    tr = 0.3 + 1.8 * np.exp(-train_steps / (n_evals * 15)) + rng.normal(0, 0.05, train_steps.size)
    h = History(path=path, format="synthetic")
    h.series["eval_loss"] = Series("eval_loss", eval_steps, ev)
    h.series["loss"] = Series("loss", train_steps, tr)
    h.meta["max_steps"] = int(eval_steps[-1])
    if checkpoints:
        h.checkpoints = [Checkpoint(int(s), f"{path}/checkpoint-{s}", "adapter", True) for s in eval_steps]
    return h


def write_trainer_state(h: History, folder: Path) -> None:
    """The run as an HF trainer_state.json (log_history of train and eval records)."""
    log = [{"step": int(s), "loss": float(v)} for s, v in zip(h.series["loss"].steps, h.series["loss"].values)]
    log += [{"step": int(s), "eval_loss": float(v)}
            for s, v in zip(h.series["eval_loss"].steps, h.series["eval_loss"].values)]
    log.sort(key=lambda r: (r["step"], "eval_loss" in r))
    folder.mkdir(parents=True, exist_ok=True)
    state = {"global_step": h.meta["max_steps"], "max_steps": h.meta["max_steps"], "log_history": log}
    (folder / "trainer_state.json").write_text(json.dumps(state, indent=2, sort_keys=True))


def best_of(fn, repeat: int) -> tuple[float, float]:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), times[0]


def bench_case(name: str, histories: list[History], tmp: Path, repeat: int) -> dict:
    from logsage.decide.engine import replay
    from logsage.report.html import DEFAULT_REPORT_RULES, build_report, report_runs

    rules = DEFAULT_REPORT_RULES
    result = replay(histories, rules)
    render, render_first = best_of(lambda: build_report(histories, result), repeat)
    build, _ = best_of(lambda: report_runs(histories, rules=rules), repeat)
    html_size = len(build_report(histories, result).html)
    folders = []
    for i, h in enumerate(histories):
        folder = tmp / name / f"run-{i:02d}"
        write_trainer_state(h, folder)
        folders.append(str(folder))
    out = tmp / f"{name}.html"

    cpu: list[float] = []

    def cli():
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run([sys.executable, "-m", "logsage", "report", *folders, "--out", str(out), "--no-cache"],
                       check=True, cwd=ROOT, capture_output=True)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)

    cli_best, cli_first = best_of(cli, repeat)
    return {"case": name, "runs": len(histories), "evals": sum(len(h.series["eval_loss"]) for h in histories),
            "train_points": sum(len(h.series["loss"]) for h in histories), "render_s": render,
            "render_first_s": render_first, "build_s": build, "cli_s": cli_best, "cli_first_s": cli_first,
            "cli_cpu_s": min(cpu),
            "html_kb": html_size / 1024}


def screenshot(path: Path) -> None:
    """A README screenshot: the report of the bundled real runs with --tune, in headless Chromium."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("--screenshot needs chromium (apt-get install chromium)")
    real = ROOT.parent / "shared" / "real-runs"  # the team's shared corpus beside the repository
    if not real.is_dir():
        raise SystemExit(f"--screenshot needs the shared real-run corpus at {real}")
    runs = [os.path.relpath(p, ROOT) for p in sorted((real / "hf_trainer_state").iterdir()) if p.is_dir()][4:12]
    with tempfile.TemporaryDirectory() as d:
        html = Path(d) / "report.html"
        subprocess.run([sys.executable, "-m", "logsage", "report", *runs, "--out", str(html), "--tune",
                        "--metric", "eval_loss", "--title", "logsage report: 8 bundled runs"],
                       check=True, cwd=ROOT, capture_output=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={d}/profile", f"--screenshot={path.resolve()}", "--window-size=1280,2000",
                        html.resolve().as_uri()], check=True, capture_output=True, timeout=180)
    print(f"wrote {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--evals", type=int, default=40)
    ap.add_argument("--long-evals", type=int, default=500)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--screenshot", type=Path, default=None)
    args = ap.parse_args()
    if args.screenshot:
        screenshot(args.screenshot)
        return
    long = [make_run("runs/long", args.long_evals, 100, 0, checkpoints=False)]
    many = [make_run(f"runs/r{i:02d}", args.evals, 10, i + 1, checkpoints=True) for i in range(args.runs)]
    with tempfile.TemporaryDirectory() as d:
        rows = [bench_case("long", long, Path(d), args.repeat), bench_case("many", many, Path(d), args.repeat)]
    print(f"{'case':6} {'runs':>4} {'evals':>6} {'train pts':>9} {'render s':>9} {'build s':>8} {'cli s':>7} "
          f"{'cli cpu s':>9} {'cli 1st s':>9} {'html KB':>8}")
    for r in rows:
        print(f"{r['case']:6} {r['runs']:>4} {r['evals']:>6} {r['train_points']:>9} {r['render_s']:>9.3f} "
              f"{r['build_s']:>8.3f} {r['cli_s']:>7.2f} {r['cli_cpu_s']:>9.2f} {r['cli_first_s']:>9.2f} "
              f"{r['html_kb']:>8.0f}")
    print("(cli s: wall clock of the whole command, best of the repeats; cli cpu s: its user+system CPU time,")
    print(" which is what it costs when other processes do not share the cores)")


if __name__ == "__main__":
    main()
