"""Reader for MLflow's file store: ``mlruns/<experiment_id>/<run_id>/{metrics,params,tags}/`` + ``meta.yaml``.

Written by ``mlflow.log_metric(name, value, step=...)`` with a ``file:`` tracking URI (MLflow
1.x-3.x; MLflow 3.x keeps this store in maintenance mode and refuses it unless
``MLFLOW_ALLOW_FILE_STORE=true`` is set, which is how the tests write it). Each metric is a
file ``metrics/<name>`` whose lines are ``<timestamp ms> <value> <step>`` (very old files
have no step: step 0); a name with ``/`` is a nested path (``metrics/eval/loss``). Values
are Python float reprs (float64, ``nan``/``inf`` kept); wall times come from the timestamps.
A step logged twice keeps the later line, recorded.

``params/`` and ``tags/`` (one value per file) go to ``meta["params"]``/``meta["tags"]``, and
the run's ``meta.yaml`` to ``meta["run_id"]``, ``meta["run_name"]``, ``meta["status"]``.

A path is one run: given ``mlruns/`` or an experiment folder holding several runs, `read`
raises an `IngestError` listing the run ids; pass one run's folder.
"""

from __future__ import annotations

from pathlib import Path

from logsage.core.errors import IngestError
from logsage.core.history import Cleanup
from logsage.ingest.text import PointCollector, natural_key, plain
from logsage.ingest.readers.base import ReadContext, ReadResult, read_text, to_float

FORMAT = "mlflow"
DESCRIPTION = "MLflow file store (mlruns/<experiment>/<run>/metrics/...)"
PRECISION = "float64"

_KINDS = ("metrics", "params", "tags")


def _run_dir(path: Path) -> tuple[Path, str, str] | None:
    """(run folder, 'metrics'|'params'|'tags', name) for a file of a run, else None."""
    parts = path.parts
    # The nearest ancestor named metrics/params/tags whose parent holds the run's meta.yaml;
    # walk outwards because a metric may itself be called "metrics/x".
    for i in range(len(parts) - 2, 0, -1):
        if parts[i] in _KINDS:
            run = Path(*parts[:i])
            if (run / "meta.yaml").is_file():
                return run, parts[i], "/".join(parts[i + 1:])
    return None


def _meta_kind(path: Path, head: bytes) -> str | None:
    if path.name != "meta.yaml":
        return None
    if b"run_id:" in head and b"experiment_id:" in head:
        return "run"
    if b"experiment_id:" in head and b"artifact_location:" in head:
        return "experiment"
    return None


def claims(path: Path, head: bytes) -> bool:
    # The layout is the evidence (a file under <run>/metrics|params|tags with <run>/meta.yaml beside):
    # a damaged metric file must still reach `read`, which names the bad line.
    try:
        return _meta_kind(path, head) is not None or _run_dir(path) is not None
    except (OSError, ValueError):  # Path.is_file raises on a folder it may not stat (EACCES)
        return False


def read(paths: list[Path], *, ctx: ReadContext) -> ReadResult:
    runs: dict[Path, list[tuple[str, str, Path]]] = {}
    for p in paths:
        found = _run_dir(p)
        if found is not None:
            run, kind, name = found
            runs.setdefault(run, []).append((kind, name, p))
        elif _meta_kind(p, _head(p)) == "run":
            runs.setdefault(p.parent, [])
    if not runs:
        raise IngestError(f"{paths[0]}: no MLflow run found (expected <run_id>/meta.yaml and metrics/); "
                          "give one run's folder, e.g. mlruns/0/<run_id>")
    if len(runs) > 1:
        ids = sorted(f"{r.parent.name}/{r.name}" for r in runs)
        raise IngestError(f"{len(runs)} MLflow runs under this path ({', '.join(ids)}); a path is one run - "
                          f"pass one run's folder, e.g. {sorted(runs, key=natural_key)[0]}")
    run, files = next(iter(runs.items()))
    res = ReadResult(format=FORMAT, precision=PRECISION)
    _read_run_meta(run, res)
    points = PointCollector(format=FORMAT, precision=PRECISION)
    for kind, name, p in sorted(files, key=lambda f: natural_key(f[2])):
        if kind == "metrics":
            _read_metric(p, name, points, res)
        else:
            res.meta.setdefault(kind, {})[name] = read_text(p).strip()
    experiment = _yaml(run.parent / "meta.yaml")
    if isinstance(experiment, dict) and experiment.get("name"):
        res.meta["experiment_name"] = experiment["name"]
    if "tags" in res.meta and "mlflow.runName" in res.meta["tags"]:
        res.meta.setdefault("run_name", res.meta["tags"]["mlflow.runName"])
    res.series, cleanups = points.build()
    res.cleanups.extend(cleanups)
    return res


def _head(p: Path) -> bytes:
    try:
        with open(p, "rb") as f:
            return f.read(4096)
    except OSError:
        return b""


def _yaml(path: Path):
    import yaml

    if not path.is_file():
        return None
    try:
        return yaml.safe_load(read_text(path))
    except yaml.YAMLError:
        return None


def _read_run_meta(run: Path, res: ReadResult) -> None:
    data = _yaml(run / "meta.yaml")
    if not isinstance(data, dict):
        res.warnings.append(f"{run / 'meta.yaml'}: not a readable MLflow run meta.yaml; run id and status unknown")
        return
    res.files.append(str(run / "meta.yaml"))
    for k in ("run_id", "run_name", "experiment_id", "status", "start_time", "end_time", "lifecycle_stage"):
        if data.get(k) not in (None, ""):
            res.meta[k] = plain(data[k])


def _read_metric(p: Path, name: str, points: PointCollector, res: ReadResult) -> None:
    file = str(p)
    res.files.append(file)
    text = read_text(p)
    lines = [(i, ln.split()) for i, ln in enumerate(text.split("\n"), start=1) if ln.strip()]
    # Lines are "<timestamp> <value> <step>"; files written before MLflow had steps lack the step.
    width = 3 if any(len(parts) == 3 for _, parts in lines) else 2
    for n, (lineno, parts) in enumerate(lines):
        ts = to_float(parts[0]) if len(parts) == width else None
        value = to_float(parts[1]) if ts is not None else None
        step = _int(parts[2]) if width == 3 and value is not None else 0
        if ts is not None and value is not None and step is not None:  # (a value is read only after a timestamp)
            points.add(name, step, value, file=file, wall_time=ts / 1000.0)
            continue
        if n == len(lines) - 1 and not text.endswith("\n"):
            msg = f"{file}:{lineno}: last line is incomplete; kept the {n} point(s) before it"
            res.warnings.append(msg)
            res.cleanups.append(Cleanup("truncated", msg, file=file, metric=name, count=1))
            break
        raise IngestError(f"{file}:{lineno}: expected '<timestamp> <value> <step>', got {' '.join(parts)[:80]!r}; "
                          "the metric file is damaged - repair that line")


def _int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None
