"""The W&B run-folder reader (`wandb-run`): the real folder of the shared corpus, run files the real
`wandb` client writes in offline mode (no network, no account), and damaged copies of both."""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import logsage
from logsage.cli.main import cli
from logsage.core.errors import IngestError
from corpus import REAL_RUNS_2, needs_corpus_2

REAL_WANDB = REAL_RUNS_2 / "wandb_run_dir" / "distilbert-sft-tlab-latest-run"


# ------------------------------------------------------------------ the real folder (corpus)
def _console_losses(folder: Path) -> list[float]:
    """The train losses HF printed to the console (files/output.log): an independent copy of the history."""
    text = (folder / "files" / "output.log").read_text(errors="replace")
    return [float(x) for x in re.findall(r"\{'loss': '?([-\d.e]+)", text)]


@needs_corpus_2
def test_real_wandb_folder_reads_the_history_the_console_printed():
    h = logsage.load_history(REAL_WANDB)
    assert h.format == "wandb-run"
    loss = h.metric("train/loss")
    printed = _console_losses(REAL_WANDB)
    assert len(printed) == 25 and len(loss) == len(printed)
    assert loss.values.tolist() == pytest.approx(printed, abs=1e-12)
    # HF's integration plots every key against train/global_step (logging every 30 steps).
    assert loss.steps.tolist() == list(range(30, 751, 30))
    assert h.metric("train/epoch").last_step == 760
    assert loss.wall_times is not None and np.all(np.diff(loss.wall_times) > 0)
    assert h.meta["wandb_run_id"] == "xmayk974"
    summary = json.loads((REAL_WANDB / "files" / "wandb-summary.json").read_text())
    assert h.summary["train/loss"] == pytest.approx(summary["train/loss"])  # a summary, never a point


@needs_corpus_2
def test_real_wandb_run_file_given_alone_and_with_format():
    f = next(REAL_WANDB.glob("run-*.wandb"))
    assert len(logsage.load_history(f).metric("train/loss")) == 25
    assert len(logsage.load_history(REAL_WANDB, format="wandb-run").metric("train/loss")) == 25


# ------------------------------------------------------------------ files the real wandb writes
_WRITER = textwrap.dedent("""
    import math, sys, wandb
    mode = sys.argv[1]
    run = wandb.init(project="logsage-test", mode="offline", config={"lr": 1e-3})
    if mode == "hf":  # what transformers' WandbCallback defines
        run.define_metric("train/global_step")
        run.define_metric("*", step_metric="train/global_step", step_sync=True)
    for i in range(1, 401):
        d = {"train/loss": 1.0 / i}
        if mode == "hf":
            d["train/global_step"] = i * 10
        if i % 50 == 0:
            d["eval/loss"] = float("nan") if i == 150 else 0.5 + (i - 200) ** 2 / 40000
            d["eval/acc"] = math.inf if i == 350 else -math.inf if i == 400 else i / 400
        run.log(d)
    run.log({"nested": {"a": 1.5}, "caption": "not a number"})
    if mode == "hf":
        run.log({"eval/loss": 0.25})  # step_sync: plotted at the last train/global_step (4000)
    run.finish()
""")


def _write_offline_run(tmp: Path, mode: str) -> Path:
    pytest.importorskip("wandb", reason="the real W&B client writes these fixtures (pip install wandb)")
    project = tmp / "project"  # WANDB_DIR; W&B's own config and cache go beside it
    project.mkdir()
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_DIR": str(project), "WANDB_SILENT": "true",
           "WANDB_CONFIG_DIR": str(tmp / "config"), "WANDB_CACHE_DIR": str(tmp / "cache"),
           "WANDB_DATA_DIR": str(tmp / "data"), "WANDB_DISABLE_GIT": "true", "WANDB_DISABLE_CODE": "true"}
    out = subprocess.run([sys.executable, "-c", _WRITER, mode], cwd=project, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    (run,) = (project / "wandb").glob("offline-run-*")
    return run


@pytest.fixture(scope="module")
def offline_runs(tmp_path_factory):
    return {mode: _write_offline_run(tmp_path_factory.mktemp(f"wandb-{mode}"), mode) for mode in ("hf", "plain")}


def _expected_eval():
    steps, loss, acc = [], [], []
    for i in range(50, 401, 50):
        steps.append(i)
        loss.append(math.nan if i == 150 else 0.5 + (i - 200) ** 2 / 40000)
        acc.append(math.inf if i == 350 else -math.inf if i == 400 else i / 400)
    return steps, loss, acc


def test_offline_run_with_a_step_metric_reads_every_value_logged(offline_runs):
    run = offline_runs["hf"]
    h = logsage.load_history(run)
    assert h.format == "wandb-run"
    steps, loss, acc = _expected_eval()
    ev = h.metric("eval/loss")
    assert ev.kind == "eval" and ev.canonical == "eval_loss"
    assert ev.steps.tolist() == [s * 10 for s in steps]
    np.testing.assert_array_equal(ev.values[:7], np.array(loss[:7]))  # NaN where NaN was logged
    assert ev.values[7] == 0.25  # logged without a step: step_sync puts it at step 4000, the later write wins
    np.testing.assert_array_equal(h.metric("eval/acc").values, np.array(acc))  # +inf and -inf kept
    tl = h.metric("train/loss")
    assert tl.steps.tolist() == list(range(10, 4001, 10))
    assert tl.values.tolist() == [1.0 / i for i in range(1, 401)]  # float64, exactly
    assert h.series["nested/a"].values.tolist() == [1.5]  # a nested dict is logged as nested/a
    kinds = {(c.kind, c.metric): c.count for c in h.cleanups}
    assert kinds[("non_finite", "eval/loss")] == 1 and kinds[("non_finite", "eval/acc")] == 2
    assert kinds[("dropped_record", "caption")] == 1  # the text value is counted, not read
    assert kinds[("duplicates", "eval/loss")] == 1  # step 4000 written twice with different values


def test_offline_run_without_a_step_metric_uses_step(offline_runs):
    h = logsage.load_history(offline_runs["plain"])
    steps, loss, _ = _expected_eval()
    ev = h.metric("eval/loss")
    assert ev.steps.tolist() == [s - 1 for s in steps]  # _step counts log calls from 0
    np.testing.assert_array_equal(ev.values, np.array(loss))
    assert h.metric("train/loss").steps.tolist() == list(range(400))


def test_latest_run_link_and_wandb_dir_read_the_same_run(offline_runs):
    run = offline_runs["plain"]
    direct = logsage.load_history(run).metric("train/loss")
    for path in (run.parent / "latest-run", run.parent.parent):  # wandb/latest-run, and WANDB_DIR itself
        h = logsage.load_history(path)
        np.testing.assert_array_equal(h.metric("train/loss").values, direct.values)
        assert not any(c.kind == "skipped_file" and "debug" in c.message for c in h.cleanups)


def test_reading_never_imports_wandb(offline_runs):
    code = ("import sys, logsage; h = logsage.load_history(sys.argv[1]); "
            "assert 'wandb' not in sys.modules, 'wandb imported'; print(len(h.metric('train/loss')))")
    out = subprocess.run([sys.executable, "-c", code, str(offline_runs["hf"])], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "400"


# ------------------------------------------------------------------ damaged files
def _run_file(run: Path) -> Path:
    return next(run.glob("run-*.wandb"))


def _copy(run: Path, tmp: Path, data: bytes) -> Path:
    dst = tmp / "run"
    dst.mkdir()
    (dst / _run_file(run).name).write_bytes(data)
    return dst


@pytest.mark.parametrize("keep", [0.9, 0.5, 0.2])
def test_truncated_run_file_keeps_the_records_before_the_cut(offline_runs, tmp_path, keep):
    data = _run_file(offline_runs["hf"]).read_bytes()
    whole = logsage.load_history(offline_runs["hf"]).metric("train/loss")
    cut = int(len(data) * keep)
    h = logsage.load_history(_copy(offline_runs["hf"], tmp_path, data[:cut]))
    got = h.series.get("train/loss")
    n = 0 if got is None else len(got)
    assert n <= len(whole)
    if n:  # the points before the cut are the same points
        np.testing.assert_array_equal(got.values, whole.values[:n])
    damaged = [c for c in h.cleanups if c.kind in ("truncated", "dropped_record") and c.file.endswith(".wandb")
               and c.metric is None]
    if n < len(whole):  # something was lost: it is said, in a warning and a counted cleanup
        assert damaged and all(c.count >= 1 for c in damaged)
        assert any("run-" in w and "byte" in w for w in h.warnings)


def test_corrupt_block_is_skipped_counted_and_the_rest_read(offline_runs, tmp_path):
    data = bytearray(_run_file(offline_runs["hf"]).read_bytes())
    assert len(data) > 40000, "the fixture needs two blocks"
    whole = logsage.load_history(offline_runs["hf"]).metric("train/loss")
    data[40000] ^= 0xFF  # inside the second block: its checksum fails, the reader resumes at the third
    h = logsage.load_history(_copy(offline_runs["hf"], tmp_path, bytes(data)))
    (c,) = [c for c in h.cleanups if c.kind == "dropped_record" and c.metric is None]
    assert c.count >= 1 and "byte" in c.message
    assert any("damaged record" in w and "checksum mismatch" in w for w in h.warnings)
    got = h.metric("train/loss")
    assert 0 < len(whole) - len(got) < len(whole) // 2  # one block's records lost, the ones after it read
    assert got.steps[-1] == whole.steps[-1] and set(got.values.tolist()) <= set(whole.values.tolist())


@needs_corpus_2
def test_corrupt_real_file_loses_only_the_damaged_block(tmp_path):
    data = bytearray(next(REAL_WANDB.glob("run-*.wandb")).read_bytes())
    whole = logsage.load_history(REAL_WANDB).metric("train/loss")
    data[len(data) // 2] ^= 0x55
    h = logsage.load_history(_copy(REAL_WANDB, tmp_path, bytes(data)))
    got = h.metric("train/loss")
    assert len(whole) - 2 <= len(got) <= len(whole)  # one 32 KiB block holds at most a record or two of history
    assert set(got.values.tolist()) <= set(whole.values.tolist())
    assert any(c.kind == "dropped_record" and c.count >= 1 for c in h.cleanups)


@pytest.mark.parametrize("data,why", [(b"", "shorter than the 7-byte"), (b"not a wandb file at all", "header"),
                                      (b":W&B\xe1\xbe\x07" + b"\0" * 10, "version 7")])
def test_not_a_run_file_is_one_line_error(tmp_path, data, why):
    f = tmp_path / "run-x.wandb"
    f.write_bytes(data)
    with pytest.raises(IngestError) as e:
        logsage.load_history(f, format="wandb-run")
    msg = str(e.value)
    assert "\n" not in msg and str(f) in msg and why in msg and "wandb/run-" in msg
    r = CliRunner().invoke(cli, ["ingest", str(f), "--format", "wandb-run"])
    assert r.exit_code == 1 and str(f) in r.output and "Traceback" not in r.output


def test_a_file_named_wandb_without_the_header_is_not_claimed(tmp_path):
    (tmp_path / "notes.wandb").write_text("just text")
    (tmp_path / "trainer_state.json").write_text(json.dumps(
        {"global_step": 2, "log_history": [{"loss": 1.0, "step": 1}, {"eval_loss": 0.5, "step": 2}]}))
    h = logsage.load_history(tmp_path)
    assert h.format == "trainer-state"
    assert any(c.kind == "skipped_file" and "notes.wandb" in c.message for c in h.cleanups)


def test_folder_of_two_different_runs_is_refused_and_a_resume_is_merged(offline_runs, tmp_path):
    import shutil

    both = tmp_path / "wandb"
    for run in offline_runs.values():
        shutil.copytree(run, both / run.name)
    with pytest.raises(IngestError) as e:
        logsage.load_history(both)
    assert "2 different W&B runs" in str(e.value) and "\n" not in str(e.value)
    # A resume: the same run id in a second folder, logging on from where the first stopped.
    resumed = tmp_path / "resumed"
    hf = offline_runs["hf"]
    shutil.copytree(hf, resumed / "run-1" / hf.name)
    shutil.copytree(hf, resumed / "run-2" / hf.name)
    h = logsage.load_history(resumed)
    assert len(h.metric("train/loss")) == 400  # the same points twice: one series, no conflict


@needs_corpus_2
def test_a_wandb_run_folders_console_echo_is_not_a_second_source():
    """files/output.log repeats the .wandb history with ordinal steps: the folder reads as W&B alone, and says why."""
    folder = REAL_WANDB
    h = logsage.load_history(folder)
    assert h.format == "wandb-run"
    choice = [c for c in h.cleanups if c.kind == "source_choice" and "output.log" in c.message]
    assert len(choice) == 1 and ".wandb history" in choice[0].message
