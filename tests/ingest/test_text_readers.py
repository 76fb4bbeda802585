"""Regressions from a review of the text-log readers: format detection that took another format's
files (or missed its own), values skipped without a cleanup, crashes instead of one-line errors,
and the bulk fast paths, which must read exactly what the one-value-at-a-time paths read."""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import logsage
from logsage.core.errors import IngestError
from logsage.ingest.readers import keras_csv, lightning_csv, llamafactory, mlflow, model_card, swift, tb_csv, wandb_csv, wide
from logsage.ingest.text import PointCollector

TEXT_READERS = [swift, llamafactory, lightning_csv, keras_csv, tb_csv, wandb_csv, mlflow, model_card, wide]


def _write(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", newline="")
    return path


def _dropped(h) -> list[int]:
    return [c.count for c in h.cleanups if c.kind == "dropped_record"]


# ----------------------------------------------------------------------------- detection
def test_log_history_dump_named_metrics_csv_is_wide_not_lightning(tmp_path):
    # A pandas dump of HF's log_history saved as metrics.csv: step first, HF's summary columns.
    f = _write(tmp_path / "run" / "metrics.csv", [
        "step,epoch,loss,eval_loss,train_runtime", "10,0.1,1.0,,", "20,0.2,0.9,0.8,",
        "20,0.2,,,100.5", "20,0.2,,0.7,"])  # the last row: the final trainer.evaluate()
    assert not lightning_csv.claims(f, f.read_bytes()[:4096])
    h = logsage.load_history(f.parent)
    assert h.format == "wide"
    assert "train_runtime" not in h.series and h.summary["train_runtime"] == 100.5
    assert h.metric("eval_loss").values.tolist() == [0.8]  # the periodic evaluation stays the curve point


def test_lightning_metrics_csv_still_claimed(tmp_path):
    f = _write(tmp_path / "metrics.csv", ["epoch,step,train_loss_step,val_loss", "0,9,1.0,", "0,9,,0.8"])
    assert lightning_csv.claims(f, f.read_bytes())
    assert logsage.load_history(f).format == "lightning"


def test_lightning_header_longer_than_the_sniffed_head(tmp_path):
    # 150 logged keys: "step" sits beyond the first 4 KiB; Keras (no step column seen) must not take it.
    cols = ["epoch"] + [f"metric_number_{i:03d}_with_a_long_name" for i in range(150)] + ["step", "val_loss"]
    f = _write(tmp_path / "version_0" / "metrics.csv",
               [",".join(cols)] + [",".join(["0"] + ["0.5"] * 150 + [str(s), "1.0"]) for s in (1, 2)])
    head = f.read_bytes()[:4096]
    assert b"step" not in head.split(b"\n")[0][-20:]
    assert not keras_csv.claims(f, head)
    h = logsage.load_history(f.parent)
    assert h.format == "lightning"
    assert h.metric("val_loss").steps.tolist() == [1, 2]


def test_wandb_history_with_step_column_beyond_the_head(tmp_path):
    cols = [""] + [f"train/metric_{i:03d}_with_a_long_name" for i in range(150)] + ["_step", "_runtime", "_timestamp"]
    f = _write(tmp_path / "history.csv",
               [",".join(cols)] + [",".join([str(s)] + ["0.5"] * 150 + [str(s), "1", "1700000000"]) for s in (0, 1)])
    h = logsage.load_history(f)
    assert h.format == "wandb"
    assert len(h.series) == 150
    assert _dropped(h) == [2]  # the pandas index column is counted, not silently dropped


def test_llamafactory_log_with_bom_is_recognised(tmp_path):
    f = tmp_path / "trainer_log.jsonl"
    f.write_bytes(b"\xef\xbb\xbf" + json.dumps({"current_steps": 10, "total_steps": 20, "loss": 1.0}).encode() + b"\n")
    h = logsage.load_history(f)
    assert h.format == "llamafactory" and h.meta["max_steps"] == 20


def test_swift_logging_jsonl_whose_first_4k_hold_no_train_record(tmp_path):
    # An evaluation at step 0 with many eval metrics fills the sniffed head: the file name decides.
    ev = {f"eval_dataset_{i:03d}_accuracy": 0.5 for i in range(200)}
    lines = [json.dumps({**ev, "eval_loss": 1.0, "epoch": 0.0, "global_step": 0}),
             json.dumps({"loss": 2.0, "train_speed(iter/s)": 0.1, "epoch": 0.1, "global_step": 10})]
    f = _write(tmp_path / "logging.jsonl", lines)
    assert b"train_speed" not in f.read_bytes()[:4096]
    assert swift.claims(f, f.read_bytes()[:4096])
    assert logsage.load_history(f).format == "swift"


def test_swift_does_not_claim_a_trainer_log(tmp_path):
    f = _write(tmp_path / "trainer_log.jsonl",
               [json.dumps({"current_steps": 1, "total_steps": 2, "global_step": 1, "loss": 1.0})])
    assert not swift.claims(f, f.read_bytes())
    assert llamafactory.claims(f, f.read_bytes())


def test_claims_never_raise(tmp_path):
    rnd = random.Random(0)
    chunks = [b"{", b"[", b"\xef\xbb\xbf", b"epoch,step", b"step", b",", b"\n", b"\r\n", b'"global_step"',
              b'"current_steps"', b"|", b"Step", b"Validation Loss", b"\x00", b"\xff", b"[" * 3000, b"_step"]
    names = ["metrics.csv", "a.csv", "logging.jsonl", "trainer_log.jsonl", "README.md", "x.json", "x.jsonl",
             "training.log", "meta.yaml", "wandb_export_1.csv", "metrics/loss"]
    for i in range(300):
        head = b"".join(rnd.choice(chunks) for _ in range(rnd.randrange(0, 20)))[:4096]
        p = tmp_path / rnd.choice(["", "x/metrics/", "missing/"]) / rnd.choice(names)
        if "missing" not in str(p) and rnd.random() < 0.5:
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(head)
        for r in TEXT_READERS:
            r.claims(p, head)  # must not raise


# ----------------------------------------------------------------------------- nothing dropped silently
def test_tb_long_csv_row_without_value_is_counted(tmp_path):
    f = _write(tmp_path / "scalars.csv", ["wall_time,step,tag,value", "1.0,10,train/loss,0.5",
                                         "2.0,20,train/loss,", "3.0,30,,0.4", "4.0,40,train/loss,0.3"])
    h = logsage.load_history(f)
    assert h.metric("train/loss").steps.tolist() == [10, 40]
    assert _dropped(h) == [2]


def test_wandb_panel_row_without_step_is_counted(tmp_path):
    f = _write(tmp_path / "wandb_export_x.csv", ['"Step","run - eval/loss"', '"100","1.5"', '"","1.4"', '"300","1.3"'])
    h = logsage.load_history(f)
    assert h.metric("eval/loss").steps.tolist() == [100, 300]
    assert _dropped(h) == [1]


def test_unnamed_csv_column_is_counted(tmp_path):
    # df.to_csv(f) without index=False: a blank-named index column first.
    f = _write(tmp_path / "log.csv", [",step,loss", "0,10,1.0", "1,20,0.9"])
    h = logsage.load_history(f)
    assert h.format == "wide" and list(h.series) == ["loss"]
    assert _dropped(h) == [2]


def test_wide_csv_duplicate_column_is_an_error_not_a_silent_overwrite(tmp_path):
    f = _write(tmp_path / "log.csv", ["step,loss,loss", "10,1.0,5.0"])
    with pytest.raises(IngestError, match=r"log\.csv: column 'loss' appears twice.*columns 2 and 3.*rename"):
        logsage.load_history(f)


# ----------------------------------------------------------------------------- one-line errors
def test_deeply_nested_jsonl_line_is_an_ingest_error(tmp_path):
    f = _write(tmp_path / "log.jsonl", [json.dumps({"step": 1, "loss": 1.0}), "[" * 5000,
                                        json.dumps({"step": 2, "loss": 0.9})])
    with pytest.raises(IngestError, match=r"log\.jsonl:2: not valid JSON"):
        logsage.load_history(f, format="wide")


def test_mlflow_bad_step_is_an_ingest_error(tmp_path):
    run = tmp_path / "mlruns" / "0" / "abc"
    _write(run / "meta.yaml", ["run_id: abc", "experiment_id: '0'"])
    _write(run / "metrics" / "loss", ["1700000000000 0.5 0", "1700000000001 0.4 --5", "1700000000002 0.3 2"])
    with pytest.raises(IngestError, match=r"loss:2: expected '<timestamp> <value> <step>'"):
        logsage.load_history(run)


# ----------------------------------------------------------------------------- fast paths == slow paths
def _cells(rnd: random.Random, n: int) -> list[str]:
    pool = ["", "", "nan", "NA", "abc", "inf", " 0.5 ", "12%", "-0.0", "1e-3", "None", "3", "0.25"]
    return [rnd.choice(pool) if rnd.random() < 0.6 else repr(rnd.random()) for _ in range(n)]


def _built(pc: PointCollector):
    series, cleanups = pc.build()
    return ({s.name: (s.steps.tolist(), [repr(v) for v in s.values.tolist()],
                      None if s.wall_times is None else [repr(w) for w in s.wall_times.tolist()]) for s in series},
            sorted((c.kind, c.metric or "", c.count or 0) for c in cleanups))


@pytest.mark.parametrize("seed", range(5))
def test_bulk_column_path_reads_what_the_cell_path_reads(seed):
    rnd = random.Random(seed)
    n = 80
    steps = sorted(rnd.randrange(30) for _ in range(n))
    cols = {name: _cells(rnd, n) for name in ("a", "b")}
    walls = [None if rnd.random() < 0.3 else 1e9 + i for i in range(n)]
    slow, fast = PointCollector(format="x", precision="float64"), PointCollector(format="x", precision="float64")
    for name, cells in cols.items():
        for s, c, w in zip(steps, cells, walls):
            slow.add_cell(name, s, c, file="f", wall_time=w)
        fast.add_column(name, steps, cells, file="f", walls=walls)
    assert _built(fast) == _built(slow)


@pytest.mark.parametrize("seed", range(5))
def test_bulk_field_path_reads_what_the_field_path_reads(seed):
    rnd = random.Random(seed)
    values = [None, True, "abc", "0.5", "nan", 3, 2.5, [1], {"a": 1}, float("inf"), ""]
    slow, fast = PointCollector(format="x", precision="float64"), PointCollector(format="x", precision="float64")
    for _ in range(60):
        step, wall = rnd.randrange(20), rnd.choice([None, 5.0])
        fields = [(k, rnd.choice(values) if rnd.random() < 0.5 else rnd.random()) for k in ("a", "b", "c")]
        for k, v in fields:
            slow.add_field(k, step, v, file="f", wall_time=wall)
        fast.add_fields(step, fields, file="f", wall_time=wall)
    assert _built(fast) == _built(slow)


def test_rewrites_count_each_change_of_value():
    pc = PointCollector(format="x", precision="float64")
    for v in (1.0, 2.0, 1.0, 1.0, float("nan"), float("nan")):
        pc.add("m", 5, v, file="f")
    pc.add("m", 6, 0.0, file="f")
    series, cleanups = pc.build()
    assert series[0].steps.tolist() == [5, 6] and np.isnan(series[0].values[0])
    assert [c.count for c in cleanups if c.kind == "duplicates"] == [3]  # 1->2, 2->1, 1->nan


# ----------------------------------------------------------------------------- import weight
def test_readers_import_nothing_heavy():
    mods = ", ".join(m.__name__ for m in TEXT_READERS)
    code = (f"import sys, {mods}\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('pandas', 'torch', 'yaml', 'scipy', 'matplotlib', 'tensorboard', 'tensorflow', 'transformers'))\n"
            "print(heavy)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
