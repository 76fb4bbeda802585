"""Process-wide start-up choices that must be made before heavy modules are imported.

`SKIP_NUMBA_BLAS_PROBE`: when numba initialises, it probes for a BLAS by importing
`scipy.linalg.cython_blas` (about 0.4 s of a cold `logsage ingest`, more than the
parse of a 50 MB event file). logsage's compiled kernel uses no BLAS, so the CLI,
which owns its process, skips the probe: numba then records "no BLAS" for numba
code in that process only (`np.dot` inside other numba code would refuse to compile
there, loudly). Library callers keep numba's default; set it to True yourself if you
want the faster start.
"""

SKIP_NUMBA_BLAS_PROBE = False
