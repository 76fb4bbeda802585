"""Fuzz/property suite over every reader (issue 9): byte-level damage of a real file of each format.

For each format, one real log (from ../shared/real-runs*, read in place; tb-csv: the first
lines of a real export; W&B and MLflow: small files written by their real writers, pandas
and mlflow) is damaged by hypothesis - truncation, bit flips, inserted and deleted bytes -
and read with format detection. The properties:

* no exception other than a `LogsageError` (a one-line message), ever;
* bounded time: a per-example deadline;
* a truncation loses nothing silently: the damaged file keeps at least the points of the
  file cut at the last whole line (record, for TensorBoard) before the cut, or it says
  what happened (a cleanup or a warning more than that clean cut has);
* TensorBoard: a flipped bit costs at most the records it touched, and is reported.
"""

from __future__ import annotations

import os
import struct
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import logsage
from logsage.core.errors import LogsageError

ROOT = Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
R1, R2 = SHARED / "real-runs", SHARED / "real-runs-2"

# format -> a real file of it (read in place).
REAL_FILES = {
    "trainer-state": R2 / "hf_trainer_state/roberta-base-lora-agnews-12evals/trainer_state.json",
    "tensorboard": R1 / "tfevents/lightning-seq2seq-translit-v10/events.out.tfevents.1747472308.DESKTOP-07FV8E1.13516.1",
    "swift": R1 / "msswift_logging_jsonl/deepseek-r1-qwen3-8b-lora-climate/logging.jsonl",
    "llamafactory": R2 / "llamafactory_trainer_log/glm4-9b-orpo-recsys-accuracy/trainer_log.jsonl",
    "lightning": R1 / "lightning_csv/slm-sweep-v30/metrics.csv",
    "keras": R2 / "keras_csvlogger/tomato-leaf-cnn-29ep/training_log.csv",
    "model-card": R1 / "axolotl_model_card/finlora-ner-llama3.1-8b-fp16-r8/README.md",
    "wide": R2 / "lightning_csv/mnist-lightning-v1-testacc/metrics.csv",
    "yolo": R2 / "yolo_results_csv/fire-smoke-yolov8-padded-25ep/results.csv",
    "sentence-transformers": R2 / "sentence_transformers_eval_csv/stsb-multi-mt-en-25ep/"
                                  "similarity_evaluation_sts-dev_results.csv",
    "keras-appended": R2 / "keras_csvlogger/brain-tumor-cnn-appended-4runs/training_log.csv",
    "hf-console": R2 / "wandb_run_dir/distilbert-sft-tlab-latest-run/files/output.log",
    "wandb-run": R2 / "wandb_run_dir/distilbert-sft-tlab-latest-run/run-xmayk974.wandb",
}
BINARY_FORMATS = {"tensorboard", "wandb-run"}  # framed records, not lines: their truncation has its own tests
TB_CSV = R1 / "tb_scalars_long_csv/gner-zse-flan-t5-large/events.out.tfevents.1741991916.dgx-a100.2890084.0.csv"
pytestmark = pytest.mark.skipif(not all(p.exists() for p in REAL_FILES.values()), reason="needs ../shared/real-runs*")

FUZZ = settings(max_examples=40, deadline=5000, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


# ----------------------------------------------------------------------------- sources
def _tb_csv_head() -> tuple[str, bytes]:
    lines = TB_CSV.read_bytes().splitlines(keepends=True)[:80]  # a prefix of the real export
    return TB_CSV.name, b"".join(lines)


def _wandb_csv() -> tuple[str, bytes]:
    pd = pytest.importorskip("pandas")
    rows = [{"_step": i, "_runtime": 10.0 * i, "_timestamp": 1.7e9 + 10 * i, "train/loss": 2.0 / (i + 1),
             "train/global_step": 50 * i, **({"eval/loss": 1.5 / (i + 1)} if i % 3 == 0 else {})} for i in range(30)]
    return "wandb_history.csv", pd.DataFrame(rows).to_csv().encode()


@pytest.fixture(scope="module")
def mlflow_run(tmp_path_factory):
    """(run folder, metric file) of a run written by mlflow's file store."""
    mlflow = pytest.importorskip("mlflow")
    root = tmp_path_factory.mktemp("mlflow-fuzz") / "mlruns"
    old_env, old_uri = os.environ.get("MLFLOW_ALLOW_FILE_STORE"), mlflow.get_tracking_uri()
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    try:
        mlflow.set_tracking_uri("file:" + str(root))
        with mlflow.start_run(run_name="fuzz") as run:
            for step in range(0, 300, 10):
                mlflow.log_metric("eval_loss", 2.0 / (step + 1), step=step)
            exp, rid = run.info.experiment_id, run.info.run_id
    finally:
        mlflow.set_tracking_uri(old_uri)
        if old_env is None:
            os.environ.pop("MLFLOW_ALLOW_FILE_STORE", None)
        else:
            os.environ["MLFLOW_ALLOW_FILE_STORE"] = old_env
    folder = root / exp / rid
    return folder, folder / "metrics" / "eval_loss"


# ----------------------------------------------------------------------------- damage
damage_op = st.one_of(
    st.tuples(st.just("flip"), st.integers(0, 1 << 20), st.integers(0, 7)),
    st.tuples(st.just("insert"), st.integers(0, 1 << 20), st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("delete"), st.integers(0, 1 << 20), st.integers(1, 16)),
    st.tuples(st.just("truncate"), st.integers(0, 1 << 20)),
)


def _damage(data: bytes, ops) -> bytes:
    out = bytearray(data)
    for op in ops:
        if not out:
            break
        at = op[1] % len(out)
        if op[0] == "flip":
            out[at] ^= 1 << op[2]
        elif op[0] == "insert":
            out[at:at] = op[2]
        elif op[0] == "delete":
            del out[at:at + op[2]]
        else:
            del out[at:]
    return bytes(out)


def _load(folder: Path, name: str, data: bytes, *, run_folder: Path | None = None):
    """load_history of `data` written as folder/name (or of `run_folder` after writing): History or None."""
    path = folder / name
    path.write_bytes(data)
    try:
        return logsage.load_history(run_folder or path, use_cache=False)
    except LogsageError as e:
        assert "\n" not in str(e), f"a LogsageError is one line: {e!r}"
        return None


def _points(h) -> int:
    return sum(len(s) for s in h.series.values())


def _reported(h) -> int:
    return len(h.cleanups) + len(h.warnings)


def _check_damage(name: str, data: bytes, ops) -> None:
    with tempfile.TemporaryDirectory() as d:
        _load(Path(d), name, _damage(data, ops))


def _check_truncation(name: str, data: bytes, cut: int, boundary: int) -> None:
    """Cut at `cut`: at least the points of the clean cut at `boundary` <= cut, or a word about it."""
    with tempfile.TemporaryDirectory() as d:
        ref = _load(Path(d), name, data[:boundary])
        got = _load(Path(d), name, data[:cut])
    if ref is None or got is None:
        return
    assert _points(got) >= _points(ref) or _reported(got) > _reported(ref), (
        f"cut at {cut}: {_points(got)} points, the clean cut at {boundary} has {_points(ref)}, and nothing said")


def _line_boundary(data: bytes, cut: int) -> int:
    return data.rfind(b"\n", 0, cut) + 1


# ----------------------------------------------------------------------------- the suite
TEXT_FORMATS = [f for f in REAL_FILES if f not in BINARY_FORMATS]


@pytest.mark.parametrize("fmt", list(REAL_FILES))
@FUZZ
@given(ops=st.lists(damage_op, min_size=1, max_size=3))
def test_damaged_real_file_never_tracebacks(fmt, ops):
    src = REAL_FILES[fmt]
    _check_damage(src.name, src.read_bytes(), ops)


@pytest.mark.parametrize("source", ["tb-csv", "wandb"])
@FUZZ
@given(ops=st.lists(damage_op, min_size=1, max_size=3))
def test_damaged_written_file_never_tracebacks(source, ops):
    name, data = _tb_csv_head() if source == "tb-csv" else _wandb_csv()
    _check_damage(name, data, ops)


@FUZZ
@given(ops=st.lists(damage_op, min_size=1, max_size=3))
def test_damaged_mlflow_metric_file_never_tracebacks(mlflow_run, ops):
    folder, metric = mlflow_run
    data = metric.read_bytes()
    try:
        _load(metric.parent, metric.name, _damage(data, ops), run_folder=folder)
    finally:
        metric.write_bytes(data)


@pytest.mark.parametrize("fmt", TEXT_FORMATS)
@FUZZ
@given(frac=st.floats(0.0, 1.0))
def test_truncated_text_log_loses_nothing_silently(fmt, frac):
    data = REAL_FILES[fmt].read_bytes()
    cut = int(frac * len(data))
    _check_truncation(REAL_FILES[fmt].name, data, cut, _line_boundary(data, cut))


def _tb_records(data: bytes) -> list[tuple[int, int]]:
    """(start, end) of each record, walking the framing with struct (not the reader)."""
    out, pos = [], 0
    while pos + 12 <= len(data):
        (length,) = struct.unpack_from("<Q", data, pos)
        out.append((pos, pos + 16 + length))
        pos += 16 + length
    return out


@FUZZ
@given(frac=st.floats(0.0, 1.0))
def test_truncated_event_file_keeps_every_whole_record(frac):
    src = REAL_FILES["tensorboard"]
    data = src.read_bytes()
    cut = int(frac * len(data))
    boundary = max([e for _, e in _tb_records(data) if e <= cut], default=0)
    _check_truncation(src.name, data, cut, boundary)


@FUZZ
@given(pos=st.integers(0, 1 << 20), bit=st.integers(0, 7))
def test_bit_flip_in_an_event_file_costs_only_its_record_and_is_reported(pos, bit):
    src = REAL_FILES["tensorboard"]
    data = bytearray(src.read_bytes())
    whole = logsage.load_history(src, use_cache=False)
    at = pos % len(data)
    data[at] ^= 1 << bit
    with tempfile.TemporaryDirectory() as d:
        got = _load(Path(d), src.name, bytes(data))
    if got is None:  # the first record's header: not recognisable as an event file any more
        assert at < 12
        return
    lost = _points(whole) - _points(got)
    # One scalar per record in this file (written by Lightning): at most one point lost,
    # unless the flip hit the header of the file_version record (then nothing is lost).
    assert lost <= 1
    if lost:
        assert any(c.kind in ("dropped_record", "truncated") for c in got.cleanups), got.cleanups
