"""Benchmark: peak memory of reading a TensorBoard event file of N scalars, against its anchor.

The anchor (issue 14): at most the file's size plus the parsed arrays (steps int64, wall
times float64, values float64: 24 bytes a point). The file (20 tags, one `simple_value`
per Event, as torch's SummaryWriter writes them) is built once under
/tmp/logsage-bench-tb-mem/: the Event protos are serialised by TensorBoard's protobuf
classes and framed as TFRecord (length, masked CRC32C of it, data, masked CRC32C of it)
by a compiled loop, because TensorBoard's pure-Python CRC would take minutes.

Each measurement runs in a fresh process: `load_history(file, use_cache=False)`, then the
process's peak RSS (ru_maxrss) minus its RSS after the imports and the compiled kernel
are loaded (a warm-up read of a tiny file), so the figure is what the read itself used.
With ``--compare PATH`` (a checkout of another version), that version is measured too.

    python benchmarks/bench_tensorboard_memory.py [--points 5000000] [--compare /work/main]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FOLDER = Path("/tmp/logsage-bench-tb-mem")
N_TAGS = 20

_CHILD = r"""
import json, os, resource, sys
from pathlib import Path
from logsage.ingest import load_history
tiny, big = Path(sys.argv[1]), Path(sys.argv[2])
load_history(tiny, use_cache=False)  # imports, numba kernel loaded
def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
base = rss()
h = load_history(big, use_cache=False)
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"base": base, "peak": peak, "points": sum(len(s) for s in h.series.values())}))
"""


def _frame(payloads: list[bytes]) -> bytes:
    """TFRecord framing of `payloads`, CRCs by logsage's compiled CRC32C (the one the reader checks)."""
    from numba import njit

    from logsage.ingest.tfrecord import _crc32c, crc32c_tables

    @njit
    def frame(data, starts, lengths, tables, out):
        pos = 0
        for i in range(starts.size):
            n = lengths[i]
            for k in range(8):
                out[pos + k] = (n >> (8 * k)) & 0xFF
            c = _crc32c(out, pos, pos + 8, tables)
            for k in range(4):
                out[pos + 8 + k] = (c >> (8 * k)) & 0xFF
            out[pos + 12:pos + 12 + n] = data[starts[i]:starts[i] + n]
            c = _crc32c(data, starts[i], starts[i] + n, tables)
            for k in range(4):
                out[pos + 12 + n + k] = (c >> (8 * k)) & 0xFF
            pos += 16 + n
        return pos

    lengths = np.fromiter(map(len, payloads), np.int64, len(payloads))
    starts = np.zeros_like(lengths)
    np.cumsum(lengths[:-1], out=starts[1:])
    data = np.frombuffer(b"".join(payloads), dtype=np.uint8)
    out = np.empty(int(lengths.sum() + 16 * lengths.size), dtype=np.uint8)
    frame(data, starts, lengths, crc32c_tables(), out)
    return out.tobytes()


def build(path: Path, n_points: int) -> None:
    from tensorboard.compat.proto import event_pb2, summary_pb2

    path.parent.mkdir(parents=True, exist_ok=True)
    tags = [f"train/metric_{i:02d}" for i in range(N_TAGS)]
    with open(path, "wb") as f:
        f.write(_frame([event_pb2.Event(wall_time=1.7e9, file_version="brain.Event:2").SerializeToString()]))
        steps = n_points // N_TAGS
        chunk = 10_000
        for s0 in range(0, steps, chunk):
            payloads = []
            for step in range(s0, min(steps, s0 + chunk)):
                for j, tag in enumerate(tags):
                    v = summary_pb2.Summary.Value(tag=tag, simple_value=1.0 / (step + j + 1))
                    payloads.append(event_pb2.Event(wall_time=1.7e9 + step, step=step,
                                                    summary=summary_pb2.Summary(value=[v])).SerializeToString())
            f.write(_frame(payloads))


def measure(checkout: Path, tiny: Path, big: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(checkout), NUMBA_CACHE_DIR=str(FOLDER / "numba-cache"))
    r = subprocess.run([sys.executable, "-c", _CHILD, str(tiny), str(big)], capture_output=True, text=True,
                       env=env, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--points", type=int, default=5_000_000)
    ap.add_argument("--compare", type=Path, default=None, help="another checkout to measure the same way")
    args = ap.parse_args()
    sys.path.insert(0, str(ROOT))
    big = FOLDER / f"p{args.points}" / "events.out.tfevents.1700000000.bench.1.0"
    tiny = FOLDER / "tiny" / "events.out.tfevents.1700000000.bench.1.0"
    if not tiny.exists():
        build(tiny, 40)
    if not big.exists():
        build(big, args.points)
    size = big.stat().st_size
    anchor = size + 24 * args.points
    print(f"{args.points:,} scalars, file {size / 2**20:.0f} MiB; anchor = file + parsed arrays = "
          f"{anchor / 2**20:.0f} MiB")
    for name, checkout in [("this checkout", ROOT)] + ([("compare", args.compare)] if args.compare else []):
        m = measure(checkout, tiny, big)
        used = m["peak"] - m["base"]
        print(f"{name:>14}: read used {used / 2**20:.0f} MiB = {used / size:.2f}x the file, "
              f"{used / anchor:.2f}x the anchor ({m['points']:,} points)")


if __name__ == "__main__":
    main()
