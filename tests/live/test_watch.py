"""Watch: follow a growing log (real writers and real logs appended piece by piece) and advise at each
evaluation; the "would stop now" advice must come at the evaluation where `replay` stops."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from logsage.core.errors import RuleConfigError
from logsage.ingest import load_history
from logsage.decide.engine import replay
from logsage.live.watch import Watcher, watch
from corpus import REAL_RUNS, needs_corpus

REAL = REAL_RUNS
LLAMAFACTORY = REAL / "llamafactory_trainer_log" / "qwen2.5-7b-medical-lora" / "trainer_log.jsonl"
SWIFT = REAL / "msswift_logging_jsonl" / "internvl2-2b-full-8ep" / "logging.jsonl"
LIGHTNING = REAL / "lightning_csv" / "slm-sweep-v26" / "metrics.csv"


def _replay_stop(path, rule: str, metric: str | None = None) -> int | None:
    d = replay([load_history(path)], [rule], metric=metric).decisions[0]
    assert d.decidable, d.reason
    return d.stop_eval_index


def _check(advice: list, expected_stop: int | None, n_evals: int) -> None:
    """One advice per evaluation, in order; "stop" exactly at replay's stop, "stopped" after it."""
    assert [a.eval_index for a in advice] == list(range(n_evals))
    for a in advice:
        if expected_stop is None or a.eval_index < expected_stop:
            assert a.action == "continue", a
            assert a.message.startswith("continue: ")
        elif a.eval_index == expected_stop:
            assert a.action == "stop", a
            assert a.message.startswith("would stop now")
        else:
            assert a.action == "stopped" and a.stop_step == advice[expected_stop].step


def _follow_lines(src: Path, dst: Path, rule: str, *, chunk: int = 1, header: bool = False) -> list:
    """Append `src` to `dst` `chunk` lines at a time (the header first for CSV), polling after each append."""
    lines = src.read_bytes().splitlines(keepends=True)
    w = Watcher(dst.parent, rule)
    advice = []
    with open(dst, "wb") as f:
        start = 0
        if header:
            f.write(lines[0])
            start = 1
        for i in range(start, len(lines), chunk):
            f.write(b"".join(lines[i:i + chunk]))
            f.flush()
            advice += w.poll()
    w.close()
    return advice


@needs_corpus
def test_llamafactory_log_line_by_line(tmp_path):
    dst = tmp_path / "run" / "trainer_log.jsonl"
    dst.parent.mkdir()
    advice = _follow_lines(LLAMAFACTORY, dst, "hf:patience=2", chunk=3)
    stop = _replay_stop(LLAMAFACTORY, "hf:patience=2")
    assert stop == 10  # the real run would have stopped at its 11th evaluation (step 5500)
    _check(advice, stop, 13)
    assert advice[stop].step == 5500
    assert "best step 4500" in advice[stop].message  # a bare log: steps, not checkpoint folders
    assert advice[9].message.startswith("continue: 1 of 2 evaluations without improvement")


@needs_corpus
def test_swift_log_with_duplicated_records(tmp_path):
    dst = tmp_path / "run" / "logging.jsonl"
    dst.parent.mkdir()
    advice = _follow_lines(SWIFT, dst, "hf:patience=1", chunk=25)
    stop = _replay_stop(SWIFT, "hf:patience=1")
    assert stop == 1
    _check(advice, stop, 3)


@needs_corpus
def test_lightning_csv_appended_rows(tmp_path):
    dst = tmp_path / "version_0" / "metrics.csv"
    dst.parent.mkdir()
    advice = _follow_lines(LIGHTNING, dst, "lightning:patience=1", header=True)
    stop = _replay_stop(LIGHTNING, "lightning:patience=1")
    assert stop == 2
    _check(advice, stop, 8)


def test_lightning_csvlogger_rewrites_its_file_when_a_metric_appears(tmp_path):
    """The real CSVLogger rewrites metrics.csv with a new header when a new key is logged.

    (Lightning's writer lives in lightning_fabric; pytorch_lightning's CSVLogger subclasses it
    and adds only hparams, so the lighter import writes the same file.)"""
    from lightning_fabric.loggers import CSVLogger

    losses = [1.0, 0.8, 0.7, 0.72, 0.75, 0.69, 0.71, 0.74, 0.78]
    logger = CSVLogger(str(tmp_path), name="run", version=0)
    run_dir = Path(logger.log_dir)
    w = None
    advice = []
    for epoch, v in enumerate(losses):
        metrics = {"val_loss": v, "epoch": epoch}
        if epoch >= 3:  # a new column from epoch 3 on: the file is rewritten with a wider header
            metrics["val_acc"] = 0.5 + 0.01 * epoch
        logger.log_metrics(metrics, step=(epoch + 1) * 10)
        logger.save()
        w = w or Watcher(run_dir, "lightning:patience=2")
        advice += w.poll()
    w.close()
    stop = _replay_stop(run_dir, "lightning:patience=2")
    assert stop == 4
    _check(advice, stop, len(losses))


def test_tensorboard_events_from_summarywriter(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    losses = [2.0, 1.5, 1.2, 1.1, 1.15, 1.05, 1.08, 1.09, 1.12, 1.2]
    run = tmp_path / "tb"
    writer = SummaryWriter(log_dir=str(run))
    w = Watcher(run, "hf:patience=3")
    advice = []
    try:
        for i, v in enumerate(losses):
            step = (i + 1) * 50
            for s in range(step - 50 + 10, step + 1, 10):
                writer.add_scalar("train/loss", 3.0 / (s ** 0.3), s)
            writer.add_scalar("eval/loss", v, step)
            writer.flush()
            advice += w.poll()
    finally:
        writer.close()
        w.close()
    stop = _replay_stop(run, "hf:patience=3")
    assert stop == 8
    _check(advice, stop, len(losses))
    assert advice[0].metric == "eval/loss"


def test_trainer_state_rewritten_with_checkpoints(tmp_path):
    """A plain HF script: trainer_state.json rewritten by the real TrainerState writer, checkpoints on disk."""
    from transformers import TrainerState

    run = tmp_path / "out"
    run.mkdir()
    losses = [1.0, 0.9, 0.85, 0.87, 0.86, 0.88, 0.9]
    state = TrainerState()
    state.max_steps = 1000
    w = Watcher(run, "hf:patience=2")
    advice = []
    for i, v in enumerate(losses):
        step = (i + 1) * 100
        state.global_step = step
        state.log_history.append({"loss": 1.5 - 0.05 * i, "step": step, "epoch": i / 10})
        state.log_history.append({"eval_loss": v, "step": step, "epoch": i / 10})
        ck = run / f"checkpoint-{step}"
        ck.mkdir()
        (ck / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 4}))
        _tiny_adapter(ck / "adapter_model.safetensors")
        state.save_to_json(str(run / "trainer_state.json"))
        advice += w.poll()
    w.close()
    stop = _replay_stop(run, "hf:patience=2")
    assert stop == 4
    _check(advice, stop, len(losses))
    assert "best checkpoint-300" in advice[stop].message


def _tiny_adapter(path: Path) -> None:
    from safetensors.numpy import save_file

    save_file({"base_model.model.layer.lora_A.weight": np.ones((2, 4), dtype=np.float32),
               "base_model.model.layer.lora_B.weight": np.ones((4, 2), dtype=np.float32)}, str(path))


@needs_corpus
def test_partial_lines_wait_and_a_missing_log_is_awaited(tmp_path):
    run = tmp_path / "not-yet"
    w = Watcher(run, "hf:patience=1")
    assert w.poll() == []  # nothing there yet: no error, keep waiting
    run.mkdir()
    log = run / "trainer_log.jsonl"
    first = next(ln for ln in LLAMAFACTORY.read_bytes().splitlines(keepends=True) if b"eval_loss" in ln)
    with open(log, "wb") as f:
        f.write(first[:30])
        f.flush()
        assert w.poll() == []
        f.write(first[30:])
        f.flush()
        got = w.poll()
    assert len(got) == 1 and got[0].step == 500
    w.close()


def test_bad_rule_fails_before_waiting(tmp_path):
    with pytest.raises(RuleConfigError):
        next(watch(tmp_path, "hf:patiense=3", timeout=0.1, interval=0.01))


@needs_corpus
def test_watch_generator_limits(tmp_path):
    dst = tmp_path / "trainer_log.jsonl"
    dst.write_bytes(LLAMAFACTORY.read_bytes())
    # A finished log: the latest evaluation only, then the run's step budget ends the watch.
    got = list(watch(dst, "hf:patience=2", interval=0.01, timeout=5))
    assert len(got) == 1 and got[0].action == "stopped" and got[0].stop_step == 5500


@needs_corpus
def test_cli_follows_a_log_written_by_another_thread(tmp_path):
    """End to end: `logsage watch` in a subprocess while this test appends the real log in chunks."""
    run = tmp_path / "live"
    run.mkdir()
    dst = run / "trainer_log.jsonl"
    lines = LLAMAFACTORY.read_bytes().splitlines(keepends=True)

    def writer():
        with open(dst, "wb") as f:
            for i in range(0, len(lines), 40):
                f.write(b"".join(lines[i:i + 40]))
                f.flush()
                time.sleep(0.05)

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.Popen([sys.executable, "-m", "logsage", "watch", str(run), "--rule", "hf:patience=2",
                             "--interval", "0.05", "--timeout", "120", "--until-stop"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    time.sleep(0.5)
    t = threading.Thread(target=writer)
    t.start()
    try:
        out, err = proc.communicate(timeout=150)
    finally:
        t.join(timeout=30)
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    stop_lines = [ln for ln in out.splitlines() if "would stop now" in ln]
    assert len(stop_lines) == 1, out
    # replay says evaluation index 10 (the 11th), step 5500; watch numbers evaluations from 1.
    assert stop_lines[0].startswith("[eval 11, step 5500] eval_loss"), out
    assert out.strip().splitlines()[-1] == stop_lines[0]  # --until-stop: nothing after the stop


# ---------------------------------------------------------------------- reading only what is new
def _spy(monkeypatch, module, name: str) -> list:
    """Wrap module.name; every call's first positional argument is recorded."""
    calls: list = []
    real = getattr(module, name)

    def wrapper(first, *args, **kwargs):
        calls.append(first)
        return real(first, *args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)
    return calls


def test_plain_hf_run_reads_only_the_newest_trainer_state(tmp_path, monkeypatch):
    """A plain HF script writes checkpoint-N/trainer_state.json at every save, each with the whole
    history: a new one is the only file read (older ones are never read again), only its new
    log_history entries are parsed, and each checkpoint folder is judged once, not at every evaluation."""
    from logsage.ingest import checkpoints
    from logsage.ingest.readers import trainer_state

    reads = _spy(monkeypatch, trainer_state, "read")
    judged = _spy(monkeypatch, checkpoints, "inspect_checkpoint")
    run = tmp_path / "out"
    run.mkdir()
    rng = np.random.default_rng(0)
    losses = np.r_[1.0 / np.sqrt(np.arange(1, 26)), 0.2 + 0.01 * np.arange(1, 16)] + rng.uniform(0, 1e-3, 40)
    w = Watcher(run, "hf:patience=4")
    advice, history, newest_bytes, parsed_bytes = [], [], 0, 0
    for i, v in enumerate(losses):
        step = (i + 1) * 100
        history += [{"loss": 1.5 - 0.01 * i, "step": step - 50}, {"eval_loss": float(v), "step": step}]
        ck = run / f"checkpoint-{step}"
        ck.mkdir()
        (ck / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2}))
        _tiny_adapter(ck / "adapter_model.safetensors")
        text = json.dumps({"global_step": step, "max_steps": 10_000, "log_history": history}, indent=2)
        if i == 20:  # caught mid-write: nothing is advised, the file is read again once it is whole
            (ck / "trainer_state.json").write_text(text[: len(text) // 2])
            reads.clear()
            assert w.poll() == []
        (ck / "trainer_state.json").write_text(text)
        newest_bytes += len(text)
        reads.clear()
        n_before = w.groups["trainer-state"].n_reads if "trainer-state" in w.groups else 0
        advice += w.poll()
        group = w.groups["trainer-state"]
        assert group.n_reads == n_before + 1 and group.result().files == [str(ck / "trainer_state.json")], i
        parsed_bytes += sum(Path(p).stat().st_size for paths in reads for p in paths)
    # Each new file was parsed by its new entries only (with its header): far less than every file whole.
    assert w.groups["trainer-state"].n_full_parses == 1
    assert parsed_bytes < 0.2 * newest_bytes, (parsed_bytes, newest_bytes)
    # The root's trainer_state.json (trainer.save_state() at the end) is read once too.
    (run / "trainer_state.json").write_text(json.dumps({"global_step": 4000, "max_steps": 10_000,
                                                       "log_history": history}, indent=2))
    assert w.poll() == []
    assert w.groups["trainer-state"].n_reads == len(losses) + 2  # every file once, the half-written one twice
    assert sorted(int(Path(c).name.split("-")[1]) for c in judged) == [(i + 1) * 100 for i in range(40)]
    assert w.n_rebuilds == 1  # the history was built once; every later evaluation went the incremental way
    w.close()
    stop = _replay_stop(run, "hf:patience=4")
    _check(advice, stop, len(losses))
    assert f"best checkpoint-{advice[stop].selected_step}" in advice[stop].message


def test_inventory_follows_checkpoints_that_change_or_go(tmp_path):
    """Only what changed is judged again: a checkpoint that was not whole (weights still being written)
    is judged at every look until it is whole; a removed one (save_total_limit) leaves the inventory."""
    from logsage.live.follow import Inventory as _Inventory

    run = tmp_path / "out"
    inv = _Inventory(run)
    assert inv.refresh() == []  # not there yet
    for step in (100, 200):
        ck = run / f"checkpoint-{step}"
        ck.mkdir(parents=True)
        (ck / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2}))
        _tiny_adapter(ck / "adapter_model.safetensors")
    weights = run / "checkpoint-200" / "adapter_model.safetensors"
    full = weights.read_bytes()
    weights.write_bytes(full[:-8])  # cut short
    assert [(c.step, c.whole) for c in inv.refresh()] == [(100, True), (200, False)]
    assert inv.n_inspected == 2
    assert [(c.step, c.whole) for c in inv.refresh()] == [(100, True), (200, False)]
    assert inv.n_inspected == 3  # the whole one is not judged again
    weights.write_bytes(full)
    assert [(c.step, c.whole) for c in inv.refresh()] == [(100, True), (200, True)]
    import shutil

    shutil.rmtree(run / "checkpoint-100")
    assert [c.step for c in inv.refresh()] == [200]
    assert inv.n_inspected == 4
    from logsage.ingest.checkpoints import inventory

    assert inv.refresh() == inventory(run)  # the same as the offline inventory


@needs_corpus
def test_jsonl_bytes_parsed_add_up_to_the_file(tmp_path, monkeypatch):
    """Each appended byte goes through the reader once: what is parsed over the whole run is the file."""
    from logsage.ingest.readers import llamafactory

    sizes: list[int] = []
    real = llamafactory.read

    def sized(paths, *a, **kw):
        sizes.append(sum(Path(p).stat().st_size for p in paths))
        return real(paths, *a, **kw)

    monkeypatch.setattr(llamafactory, "read", sized)
    dst = tmp_path / "run" / "trainer_log.jsonl"
    dst.parent.mkdir()
    advice = _follow_lines(LLAMAFACTORY, dst, "hf:patience=2", chunk=7)
    assert len(advice) == 13
    assert sum(sizes) == dst.stat().st_size and len(sizes) > 10  # one reader call per appended chunk


def _tf2_value(tag: str, v: float, first: bool):
    """A TF2-style scalar: a float tensor, the scalars plugin's metadata on the tag's first value only."""
    from tensorboard.compat.proto import summary_pb2, tensor_pb2

    kw = {}
    if first:
        kw["metadata"] = summary_pb2.SummaryMetadata(
            plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"))
    return summary_pb2.Summary.Value(tag=tag, tensor=tensor_pb2.TensorProto(dtype=1, float_val=[v]), **kw)


def test_tensorboard_records_are_scanned_once_and_tf2_tags_stay_scalars(tmp_path, monkeypatch):
    """The event file is scanned chunk by chunk, never from its start again; a TF2 writer's tags
    (scalar metadata on their first value only) keep every later value."""
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    from logsage.ingest import tfrecord as _tfrecord

    scanned: list[int] = []
    real = _tfrecord.scan_bytes

    def counting(buf):
        scanned.append(int(buf.size))
        return real(buf)

    monkeypatch.setattr(_tfrecord, "scan_bytes", counting)
    losses = [2.0, 1.5, 1.2, 1.1, 1.15, 1.05, 1.08, 1.09, 1.12, 1.2, 1.25, 1.3]
    run = tmp_path / "tb"
    writer = EventFileWriter(str(run), flush_secs=3600)
    w = Watcher(run, "hf:patience=3")
    advice = []
    try:
        for i, v in enumerate(losses):
            step = (i + 1) * 50
            for s in range(step - 40, step + 1, 10):
                writer.add_event(event_pb2.Event(wall_time=1000.0 + s, step=s, summary=summary_pb2.Summary(
                    value=[_tf2_value("train/loss", 3.0 / s ** 0.3, first=s == 10)])))
            writer.add_event(event_pb2.Event(wall_time=1000.0 + step, step=step, summary=summary_pb2.Summary(
                value=[_tf2_value("eval/loss", v, first=i == 0)])))
            writer.flush()
            advice += w.poll()
    finally:
        writer.close()
        w.close()
    follower = w.followers[0]
    assert len(follower.acc.points["train/loss"].steps) == 5 * len(losses)  # later values kept: still scalars
    assert follower.acc.points["eval/loss"].values == pytest.approx(losses)
    data = next(run.iterdir()).read_bytes()
    size = len(data)
    # The records put before each chunk are the file's own (the ones that first carried each tag).
    assert sorted(follower.first_records) == ["eval/loss", "train/loss"]
    assert all(rec in data for rec in follower.first_records.values())
    # Each byte once, plus those two records (about 80 bytes each) per scan, plus one small scan per
    # new tag to find its first record: never the whole file again.
    assert len(scanned) <= len(losses) + 2 * 2 and sum(scanned) < size + 200 * len(scanned), (scanned, size)
    stop = _replay_stop(run, "hf:patience=3")
    _check(advice, stop, len(losses))
