"""Process-wide start-up choices that must be made before heavy modules are imported.

`SKIP_NUMBA_BLAS_PROBE`: when numba initialises, it probes for a BLAS by importing
`scipy.linalg.cython_blas` (about 0.4 s of a cold `logsage ingest`, more than the
parse of a 50 MB event file). logsage's compiled kernel uses no BLAS, so the CLI,
which owns its process, skips the probe: numba then records "no BLAS" for numba
code in that process only (`np.dot` inside other numba code would refuse to compile
there, loudly). Library callers keep numba's default; set it to True yourself if you
want the faster start.


`one_blas_thread(command)`: numpy's OpenBLAS starts a pool of worker threads when numpy is
imported (about 0.1-0.2 s of CPU on a small machine, more than a whole `logsage replay` of
one run). The analysis commands do no large matrix products (the trend fits are 2 x 5
windows), so the CLI asks OpenBLAS for one thread before numpy loads, for those commands
only and only when the user set no thread count; `train`, `select` and `evaluate` keep the
library defaults.
"""

import os
import sys

SKIP_NUMBA_BLAS_PROBE = False

# The commands that only analyse logs (no training or model evaluation).
ANALYSIS_COMMANDS = frozenset({"ingest", "replay", "rules", "tune", "report", "watch", "prune"})
_BLAS_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def one_blas_thread(command: str) -> bool:
    """Before numpy is imported, for an analysis command: OPENBLAS_NUM_THREADS=1 unless the
    user set a thread count. Returns whether it was set."""
    if command not in ANALYSIS_COMMANDS or "numpy" in sys.modules:
        return False
    if any(v in os.environ for v in _BLAS_THREAD_VARS):
        return False
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    return True
