"""Benchmark: reading a 1,000,000-scalar TensorBoard log with logsage vs TensorBoard's own loaders.

The log (20 tags x 50,000 steps, one scalar per event, ~54 MB) is written once by
a real writer - TensorBoard's `EventFileWriter` (default) or torch's
`SummaryWriter` (`--writer torch`, ~3 minutes) - and kept under
/tmp/logsage-bench-tb/ between runs. Then it times:

* TensorBoard's `EventAccumulator(path, size_guidance={"scalars": 0})` + `Reload()`;
* tbparse's `SummaryReader` (`--tbparse`; slow);
* logsage in this process, no parse cache: the first call (numba import and the
  cached-JIT load included) and the steady state (best of 3);
* logsage with the parse cache warm (best of 5);
* the whole CLI in a fresh process: `logsage ingest DIR --json --no-cache`
  (`python -m logsage` when the console script is not installed);

prints the ratios, and asserts that every reader saw the same number of points.

    python benchmarks/bench_tensorboard.py [--tbparse] [--writer torch] [--regenerate]
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

N_TAGS = 20
N_STEPS = 50_000
TAGS = [f"train/loss_{i:02d}" if i < 10 else f"eval/metric_{i:02d}" for i in range(N_TAGS)]


def _fast_record_crc() -> None:
    """Let TensorBoard's record writer use the C crc32c package (its own is pure Python).

    Byte-identical output: checked against TensorBoard's implementation first.
    """
    try:
        import crc32c
    except ImportError:
        return
    from tensorboard.compat.tensorflow_stub import pywrap_tensorflow
    from tensorboard.summary.writer import record_writer

    def masked(data: bytes) -> int:
        x = crc32c.crc32c(data)
        return (((x >> 15) | (x << 17)) + 0xA282EAD8) & 0xFFFFFFFF

    rng = np.random.default_rng(1)
    for n in (0, 1, 7, 8, 9, 63, 1000):
        sample = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        assert masked(sample) == pywrap_tensorflow.masked_crc32c(sample)
    record_writer.masked_crc32c = masked


def generate(logdir: Path, writer: str) -> None:
    """Write N_TAGS x N_STEPS scalars with a real writer into `logdir` (one event file)."""
    logdir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    values = rng.standard_normal((N_STEPS, N_TAGS)).astype(np.float32)
    t0 = time.perf_counter()
    _fast_record_crc()
    if writer == "torch":
        from torch.utils.tensorboard import SummaryWriter

        w = SummaryWriter(str(logdir), max_queue=1000, flush_secs=600)
        for step in range(N_STEPS):
            row = values[step].tolist()
            for tag, v in zip(TAGS, row):
                w.add_scalar(tag, v, step)
        w.close()
    else:
        from tensorboard.compat.proto import event_pb2, summary_pb2
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        w = EventFileWriter(str(logdir), max_queue_size=1000, flush_secs=600)
        for step in range(N_STEPS):
            row = values[step].tolist()
            now = time.time()
            for tag, v in zip(TAGS, row):
                summary = summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=tag, simple_value=v)])
                w.add_event(event_pb2.Event(wall_time=now, step=step, summary=summary))
        w.close()
    print(f"generated {N_TAGS * N_STEPS:,} scalars with the {writer} writer in {time.perf_counter() - t0:.1f} s",
          file=sys.stderr)


class Timer:
    """Wall time and this process's CPU time (the fairer figure on a shared, loaded machine)."""

    def __enter__(self):
        self.w0, self.c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.w0, time.process_time() - self.c0


def time_event_accumulator(path: Path) -> tuple[Timer, int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    with Timer() as t:
        acc = EventAccumulator(str(path), size_guidance={"scalars": 0})
        acc.Reload()
        n = sum(len(acc.Scalars(tag)) for tag in acc.Tags()["scalars"])
    return t, n


def time_tbparse(logdir: Path) -> tuple[Timer, int]:
    from tbparse import SummaryReader

    with Timer() as t:
        df = SummaryReader(str(logdir), pivot=False).scalars
    return t, len(df)


def _points(history) -> int:
    return sum(len(s) for s in history.series.values())


def _best(timers: list[Timer]) -> Timer:
    return min(timers, key=lambda t: t.wall)


def time_logsage(logdir: Path, cache_dir: Path) -> dict:
    out: dict = {}
    with Timer() as t:
        import logsage

        h = logsage.load_history(logdir, use_cache=False)
    out["first"], out["points"] = t, _points(h)
    runs = []
    for _ in range(3):
        with Timer() as t:
            h = logsage.load_history(logdir, use_cache=False)
        runs.append(t)
    out["steady"] = _best(runs)
    logsage.load_history(logdir, use_cache=True, cache_dir=cache_dir)  # fills the cache
    runs = []
    for _ in range(5):
        with Timer() as t:
            h = logsage.load_history(logdir, use_cache=True, cache_dir=cache_dir)
        runs.append(t)
    out["cached"], out["cached_points"] = _best(runs), _points(h)
    return out


def time_cli(logdir: Path) -> tuple[Timer, int, str]:
    # The console script next to this interpreter (a pyenv shim would add its own start-up).
    exe = Path(sys.executable).with_name("logsage")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    if exe.exists():
        cmd = [str(exe), "ingest", str(logdir), "--json", "--no-cache"]
    else:
        cmd = [sys.executable, "-m", "logsage", "ingest", str(logdir), "--json", "--no-cache"]
    runs = []
    for _ in range(3):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t = Timer()
        with t:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(ROOT))
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        t.cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        if proc.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr}")
        runs.append(t)
    doc = json.loads(proc.stdout)
    n = sum(m["count"] for m in doc["runs"][0]["metrics"].values())
    return _best(runs), n, " ".join(Path(c).name if i == 0 else c for i, c in enumerate(cmd))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", default="/tmp/logsage-bench-tb", help="where the generated log is kept")
    ap.add_argument("--writer", choices=("tensorboard", "torch"), default="tensorboard")
    ap.add_argument("--regenerate", action="store_true", help="write the log again even if it exists")
    ap.add_argument("--tbparse", action="store_true", help="also time tbparse (about 30 s)")
    ap.add_argument("--skip-ea", action="store_true", help="skip EventAccumulator (about 30 s)")
    args = ap.parse_args()

    logdir = Path(args.dir) / f"run-{args.writer}"
    if args.regenerate and logdir.exists():
        shutil.rmtree(logdir)
    files = sorted(logdir.glob("events.out.tfevents.*")) if logdir.exists() else []
    if not files:
        generate(logdir, args.writer)
        files = sorted(logdir.glob("events.out.tfevents.*"))
    event_file = files[0]
    size_mb = event_file.stat().st_size / 1e6
    print(f"log: {event_file} ({size_mb:.1f} MB, {N_TAGS * N_STEPS:,} scalars)")

    with tempfile.TemporaryDirectory(prefix="logsage-bench-cache-") as cache_dir:
        ours = time_logsage(logdir, Path(cache_dir))
    cli, cli_points, cli_cmd = time_cli(logdir)
    expected = N_TAGS * N_STEPS
    assert ours["points"] == expected, ours
    assert ours["cached_points"] == expected, ours
    assert cli_points == expected, cli_points

    rows = []
    ea = None
    if not args.skip_ea:
        ea, ea_points = time_event_accumulator(event_file)
        assert ea_points == expected, ea_points
        rows.append(("EventAccumulator(size_guidance scalars=0) + Reload()", ea))
    if args.tbparse:
        tp, tp_points = time_tbparse(logdir)
        assert tp_points == expected, tp_points
        rows.append(("tbparse SummaryReader(...).scalars", tp))
    rows += [
        ("logsage in-process, no cache, first call (numba import + cached-JIT load)", ours["first"]),
        ("logsage in-process, no cache, steady state (best of 3)", ours["steady"]),
        ("logsage in-process, parse cache warm (best of 5)", ours["cached"]),
        (f"cold CLI process: {cli_cmd} (best of 3)", cli),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"{'':<{width}}  {'wall':>8}  {'cpu':>8}  {'EA/wall':>8}  {'EA/cpu':>8}")
    for label, t in rows:
        ratios = (f"  {ea.wall / t.wall:7.1f}x  {ea.cpu / t.cpu:7.1f}x" if ea and t is not ea else "")
        print(f"{label:<{width}}  {t.wall:7.3f}s  {t.cpu:7.3f}s{ratios}")
    print(f"cached read / uncached steady read: {ours['cached'].wall / ours['steady'].wall:.3f} (wall), "
          f"{ours['cached'].cpu / ours['steady'].cpu:.3f} (cpu)")
    print(f"load average during the run: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"points: {expected:,} in every reader")

if __name__ == "__main__":
    main()
