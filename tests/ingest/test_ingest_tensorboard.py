"""The TensorBoard event-file reader against files written by the real writers.

Fixtures are written at test time by torch's `SummaryWriter` (simple_value,
`new_style=True` tensors, `add_scalars`) and TensorBoard's own `EventFileWriter`
(hand-built TF2-style tensor summaries); TensorBoard's `EventAccumulator` with
`size_guidance` 0 is the independent oracle for what a file holds. Damage is made
by cutting or flipping bytes at record offsets found by walking the TFRecord
framing here, independently of the reader.
"""

from __future__ import annotations

import functools
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import logsage
from logsage.core.errors import IngestError
from logsage.ingest.readers import tensorboard as tb
from logsage.ingest.readers.base import ReadContext
from corpus import REAL_RUNS as CORPUS, needs_corpus, run_dirs

REAL = CORPUS / "tfevents"

pytestmark = pytest.mark.filterwarnings("ignore")


# ----------------------------------------------------------------------------- helpers
def _writer(logdir: Path, **kw):
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(str(logdir), **kw)


def _event_files(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*tfevents*"))


def _read(paths, run_root=None):
    paths = [Path(p) for p in (paths if isinstance(paths, (list, tuple)) else [paths])]
    return tb.read(paths, ctx=ReadContext(use_cache=False, run_root=run_root))


def _series(result):
    return {s.name: s for s in result.series}


def _record_offsets(path: Path) -> list[tuple[int, int]]:
    """(offset, data length) of each record, walking the framing with struct (not the reader)."""
    data = path.read_bytes()
    out, pos = [], 0
    while pos + 12 <= len(data):
        (length,) = struct.unpack_from("<Q", data, pos)
        out.append((pos, length))
        pos += 16 + length
    return out


@functools.lru_cache(maxsize=None)
def _accumulator_of_real_file(path: Path):
    return _accumulator(path)


def _accumulator(path: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(path), size_guidance={"scalars": 0, "tensors": 0})
    acc.Reload()
    return acc


def _assert_file_matches_accumulator(path: Path, acc=None) -> None:
    """Every simple_value scalar of one file equals EventAccumulator's, in write order."""
    scan = tb.scan_file(path, use_cache=False)
    acc = acc or _accumulator(path)
    assert sorted(scan.tags) == sorted(acc.Tags()["scalars"])
    for i, tag in enumerate(scan.tags):
        steps, values, walls = scan.points(i)
        events = acc.Scalars(tag)
        assert steps.tolist() == [e.step for e in events], tag
        np.testing.assert_array_equal(values, np.array([e.value for e in events], dtype=np.float64))
        np.testing.assert_array_equal(walls, np.array([e.wall_time for e in events]))


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def simple_run(tmp_path_factory):
    """3 tags x 40 steps written with add_scalar (simple_value), and the values written."""
    logdir = tmp_path_factory.mktemp("simple")
    rng = np.random.default_rng(7)
    written = {tag: rng.standard_normal(40) * 10 for tag in ("train/loss", "eval/loss", "train/learning_rate")}
    t_before = time.time()
    w = _writer(logdir)
    for step in range(40):
        for tag, vals in written.items():
            if tag == "eval/loss" and step % 4:
                continue
            w.add_scalar(tag, float(vals[step]), step * 10)
    w.close()
    return logdir, written, t_before, time.time()


# ----------------------------------------------------------------------------- encodings
def test_simple_values_equal_what_was_written_as_float32(simple_run):
    logdir, written, t0, t1 = simple_run
    series = _series(_read(_event_files(logdir)))
    assert set(series) == set(written)
    for tag, vals in written.items():
        s = series[tag]
        idx = np.arange(0, 40, 4) if tag == "eval/loss" else np.arange(40)
        assert s.steps.tolist() == (idx * 10).tolist()
        # Stored as the float64 of the float32 that was written, not re-rounded via text.
        np.testing.assert_array_equal(s.values, vals[idx].astype(np.float32).astype(np.float64))
        assert s.precision == "float32" and s.format == "tensorboard"
        assert s.wall_times is not None and s.wall_times.dtype == np.float64
        assert np.all((s.wall_times >= t0 - 1) & (s.wall_times <= t1 + 1))
        assert np.all(np.diff(s.wall_times) >= 0)


def test_reader_agrees_with_event_accumulator_on_the_same_file(simple_run):
    _assert_file_matches_accumulator(_event_files(simple_run[0])[0])


def test_wall_time_meta_spans_the_file(simple_run):
    f = _event_files(simple_run[0])[0]
    res = _read([f])
    acc = _accumulator(f)
    assert res.meta["wall_time_first"] == acc.FirstEventTimestamp()
    last_scalar = max(e.wall_time for t in acc.Tags()["scalars"] for e in acc.Scalars(t))
    assert res.meta["wall_time_last"] == last_scalar  # the last event written is a scalar


def test_new_style_tensor_scalars_float_and_double(tmp_path):
    w = _writer(tmp_path)
    vals = [0.1, 1 / 3, 2.5e-7, -1e30]
    for i, v in enumerate(vals):
        w.add_scalar("eval/loss", v, i, new_style=True)
        w.add_scalar("train/lr", v, i, new_style=True, double_precision=True)
        w.add_scalar("train/old", v, i)  # simple_value next to tensors in the same file
    w.close()
    series = _series(_read(_event_files(tmp_path)))
    np.testing.assert_array_equal(series["eval/loss"].values, np.float32(vals).astype(np.float64))
    np.testing.assert_array_equal(series["train/lr"].values, np.array(vals))  # DT_DOUBLE kept exactly
    assert series["train/lr"].precision == "float64"
    assert series["eval/loss"].precision == "float32"
    np.testing.assert_array_equal(series["train/old"].values, np.float32(vals).astype(np.float64))
    # Oracle: EventAccumulator files new-style values under Tensors.
    from tensorboard.util import tensor_util

    acc = _accumulator(_event_files(tmp_path)[0])
    for tag in ("eval/loss", "train/lr"):
        want = [float(tensor_util.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)]
        np.testing.assert_array_equal(series[tag].values, want)


def _tb_event_writer(logdir: Path):
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    return EventFileWriter(str(logdir))


def test_tensor_plugin_decides_what_is_a_scalar(tmp_path):
    """TF2 writers put the plugin metadata on a tag's first value only; non-scalar plugins never become scalars."""
    from tensorboard.compat.proto import event_pb2, summary_pb2, tensor_pb2

    def value(tag, v, plugin=None, *, content=False, double=False):
        if content:
            tensor = tensor_pb2.TensorProto(dtype=2 if double else 1,
                                            tensor_content=np.array(v, np.float64 if double else np.float32).tobytes())
        elif double:
            tensor = tensor_pb2.TensorProto(dtype=2, double_val=[v])
        else:
            tensor = tensor_pb2.TensorProto(dtype=1, float_val=[v])
        kw = {}
        if plugin:
            kw["metadata"] = summary_pb2.SummaryMetadata(
                plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name=plugin))
        return summary_pb2.Summary.Value(tag=tag, tensor=tensor, **kw)

    w = _tb_event_writer(tmp_path)
    for step in range(5):
        first = step == 0
        vals = [
            value("tf2/loss", 0.5 + step, "scalars" if first else None, content=True),
            value("tf2/acc", 0.25 * step, "scalars" if first else None, content=True, double=True),
            value("custom/thing", 7.0 + step, "my_plugin" if first else None),  # float, but not a scalar
            value("nometa/x", 1.0 + step),  # a tensor no plugin claims: not a scalar either
        ]
        w.add_event(event_pb2.Event(wall_time=1000.0 + step, step=step, summary=summary_pb2.Summary(value=vals)))
    w.close()
    series = _series(_read(_event_files(tmp_path)))
    assert set(series) == {"tf2/loss", "tf2/acc"}
    np.testing.assert_array_equal(series["tf2/loss"].values, 0.5 + np.arange(5))
    np.testing.assert_array_equal(series["tf2/acc"].values, 0.25 * np.arange(5))
    assert series["tf2/acc"].precision == "float64"


def test_text_hparams_histograms_are_skipped_not_counted(tmp_path):
    from torch.utils.tensorboard.summary import hparams

    w = _writer(tmp_path)
    w.add_text("args/text_summary", "lr=1e-4", 0)
    w.add_histogram("weights", np.random.default_rng(0).standard_normal(100), 0)
    for summary in hparams({"lr": 1e-4, "r": 8}, {"hp/metric": 0.0}):
        w._get_file_writer().add_summary(summary)
    for step in range(6):
        w.add_scalar("val_loss", 1.0 / (step + 1), step)
        w.add_text("notes", f"step {step}", step)
    w.close()
    res = _read(_event_files(tmp_path))
    assert [s.name for s in res.series] == ["val_loss"]
    assert len(res.series[0]) == 6
    assert not res.warnings
    _assert_file_matches_accumulator(_event_files(tmp_path)[0])


def test_add_scalars_subfolders_become_main_tag_slash_key(tmp_path):
    w = _writer(tmp_path)
    for step in range(5):
        w.add_scalars("loss/all", {"train": 1.0 - step * 0.1, "val": 2.0 - step * 0.1}, step)
        w.add_scalar("lr", 0.01, step)
    w.close()
    assert len(_event_files(tmp_path)) == 3  # main file + one per key
    h = logsage.load_history(tmp_path, use_cache=False)
    assert {"loss/all/train", "loss/all/val", "lr"} <= set(h.series)
    np.testing.assert_array_equal(h.series["loss/all/val"].values,
                                  np.float32(2.0 - np.arange(5) * 0.1).astype(np.float64))
    assert h.format == "tensorboard"
    # A single sub-folder file read on its own keeps the tag as written.
    sub = next(f for f in _event_files(tmp_path) if f.parent.name == "loss_all_train")
    assert [s.name for s in _read([sub]).series] == ["loss/all"]


# ----------------------------------------------------------------------------- several files
def _write_segment(logdir: Path, steps, values, tag="eval/loss", final_name=None) -> Path:
    w = _writer(logdir, filename_suffix=f".seg{time.time_ns()}")
    for s, v in zip(steps, values):
        w.add_scalar(tag, v, s)
    w.close()
    f = max(logdir.glob("*tfevents*"), key=lambda p: p.stat().st_mtime_ns)
    if final_name:
        f = f.rename(logdir / final_name)
    return f


def test_several_files_later_write_wins_by_first_wall_time_not_name(tmp_path):
    # Written first, but named so that it sorts LAST: order must come from wall times.
    first = _write_segment(tmp_path, range(0, 10), [1.0 + i for i in range(10)],
                           final_name="events.out.tfevents.zzz.host.1.0")
    time.sleep(0.05)
    second = _write_segment(tmp_path, range(5, 15), [100.0 + i for i in range(10)],
                            final_name="events.out.tfevents.aaa.host.1.1")
    h = logsage.load_history(tmp_path, use_cache=False)
    s = h.series["eval/loss"]
    assert s.steps.tolist() == list(range(15))
    assert s.values.tolist() == [1.0 + i for i in range(5)] + [100.0 + i for i in range(10)]
    overlaps = [c for c in h.cleanups if c.kind == "overlap"]
    assert len(overlaps) == 1
    c = overlaps[0]
    assert c.count == 5 and c.metric == "eval/loss" and c.file == str(second)
    assert str(first) in c.message and str(second) in c.message and "steps 5-9" in c.message
    assert h.files[:2] == [str(first), str(second)]


def test_repeated_step_inside_one_file_is_a_duplicate_not_an_overlap(tmp_path):
    w = _writer(tmp_path)
    for s, v in [(0, 1.0), (1, 2.0), (1, 3.0), (2, 4.0)]:
        w.add_scalar("train/epoch", v, s)
    w.close()
    res = _read(_event_files(tmp_path))
    assert _series(res)["train/epoch"].values.tolist() == [1.0, 3.0, 4.0]
    assert [(c.kind, c.count) for c in res.cleanups] == [("duplicates", 1)]


def test_hf_final_evaluate_file_is_a_summary_not_a_curve_point(tmp_path):
    """HF writes trainer.evaluate() after training into a second small file at the last step."""
    w = _writer(tmp_path)
    for step in range(10, 110, 10):
        w.add_scalar("train/loss", 2.0 - step / 100, step)
        w.add_scalar("train/epoch", step / 100, step)
        if step % 50 == 0:
            w.add_scalar("eval/loss", 3.0 - step / 100, step)
            w.add_scalar("eval/runtime", 1.5, step)
    w.close()
    time.sleep(0.05)
    w = _writer(tmp_path, filename_suffix=".final")
    w.add_scalar("eval/loss", 2.5, 100)
    w.add_scalar("eval/runtime", 1.4, 100)
    w.add_scalar("train/epoch", 1.0, 100)
    w.close()
    res = _read(_event_files(tmp_path), run_root=tmp_path)
    s = _series(res)["eval/loss"]
    assert s.steps.tolist() == [50, 100] and s.values.tolist() == [2.5, 2.0]  # the curve's own last point
    assert res.summary["eval/loss"] == 2.5
    assert res.meta["final_eval_step"] == 100
    assert [c.kind for c in res.cleanups if c.kind in ("final_eval", "overlap")] == ["final_eval"]


# ----------------------------------------------------------------------------- damage
@pytest.fixture()
def ten_points(tmp_path):
    w = _writer(tmp_path)
    for step in range(10):
        w.add_scalar("eval/loss", float(step), step)
    w.close()
    f = _event_files(tmp_path)[0]
    records = _record_offsets(f)
    assert len(records) == 11  # file_version + 10 scalars
    return f, records


def test_truncated_last_record_keeps_everything_before(ten_points):
    f, records = ten_points
    data = f.read_bytes()
    f.write_bytes(data[:-5])
    res = _read([f])
    s = _series(res)["eval/loss"]
    assert s.values.tolist() == [float(i) for i in range(9)]
    assert len(res.warnings) == 1
    last_offset = records[-1][0]
    assert str(f) in res.warnings[0] and f"byte {last_offset}" in res.warnings[0]
    assert "is cut off" in res.warnings[0] and "killed or is still writing" in res.warnings[0]
    assert [c.kind for c in res.cleanups] == ["truncated"]


def test_file_ending_inside_a_header(ten_points):
    f, records = ten_points
    f.write_bytes(f.read_bytes()[: records[-1][0] + 7])
    res = _read([f])
    assert len(_series(res)["eval/loss"]) == 9
    assert "header" in res.warnings[0] and f"byte {records[-1][0]}" in res.warnings[0]


@pytest.mark.parametrize("where, words", [("data", "bad data checksum"), ("length", "bad length checksum")])
def test_corrupt_record_in_the_middle(ten_points, where, words):
    f, records = ten_points
    data = bytearray(f.read_bytes())
    offset, length = records[6]  # file_version + steps 0..4 come before it
    data[offset + 12 + length // 2 if where == "data" else offset + 3] ^= 0x40
    f.write_bytes(bytes(data))
    res = _read([f])
    # Resynchronised on the next whole record: only step 5 (the damaged record) is lost.
    assert _series(res)["eval/loss"].values.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 7.0, 8.0, 9.0]
    assert len(res.warnings) == 1
    assert str(f) in res.warnings[0] and f"byte {offset}" in res.warnings[0] and words in res.warnings[0]
    assert f"skipped {length + 16} damaged byte(s) in 1 stretch" in res.warnings[0]
    assert [(c.kind, c.file, c.count) for c in res.cleanups] == [("dropped_record", str(f), 1)]


def test_valid_checksums_around_garbage_payload_skips_only_that_record(tmp_path):
    from tensorboard.compat.proto import event_pb2, summary_pb2
    from tensorboard.summary.writer.record_writer import RecordWriter

    f = tmp_path / "events.out.tfevents.1.host.1.0"
    with open(f, "wb") as fh:
        rw = RecordWriter(fh)
        for step in range(4):
            ev = event_pb2.Event(wall_time=10.0 + step, step=step, summary=summary_pb2.Summary(
                value=[summary_pb2.Summary.Value(tag="x", simple_value=step)]))
            rw.write(ev.SerializeToString())
            if step == 1:
                rw.write(b"\x0a\xff\xff\xff")  # a length-delimited field longer than the record
    res = _read([f])
    assert _series(res)["x"].values.tolist() == [0.0, 1.0, 2.0, 3.0]
    assert [c.kind for c in res.cleanups] == ["dropped_record"]


# ----------------------------------------------------------------------------- odd inputs
def test_empty_folder_is_an_ingest_error(tmp_path):
    with pytest.raises(IngestError, match="no training log found"):
        logsage.load_history(tmp_path, use_cache=False)


def test_zero_byte_and_header_only_files_give_no_points(tmp_path):
    (tmp_path / "events.out.tfevents.1.host.1.0").write_bytes(b"")
    assert tb.claims(tmp_path / "events.out.tfevents.1.host.1.0", b"")
    res = _read(_event_files(tmp_path))
    assert res.series == [] and res.warnings == []
    h = logsage.load_history(tmp_path, use_cache=False)
    assert h.series == {} and h.format == "tensorboard"
    w = _writer(tmp_path / "header-only")
    w.close()
    res = _read(_event_files(tmp_path / "header-only"))
    assert res.series == [] and res.warnings == [] and "wall_time_first" in res.meta


def test_stray_file_next_to_events_is_not_claimed(simple_run, tmp_path):
    logdir, written, *_ = simple_run
    run = tmp_path / "run"
    run.mkdir()
    for f in _event_files(logdir):
        (run / f.name).write_bytes(f.read_bytes())
    (run / "notes.txt").write_text("lr sweep, see wiki\n")
    (run / "events.out.tfevents.backup.txt").write_text("not a record\n")  # named like one, is not
    assert not tb.claims(run / "notes.txt", b"lr sweep")
    assert not tb.claims(run / "events.out.tfevents.backup.txt", b"not a record\n")
    h = logsage.load_history(run, use_cache=False)
    assert set(h.series) == set(written)
    assert not any("notes.txt" in f or "backup" in f for f in h.files)


def test_lfs_pointer_names_the_file_and_the_fix(tmp_path):
    f = tmp_path / "events.out.tfevents.1742478574.dgx-a100.1681976.0"
    f.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:ab12\nsize 1437889\n")
    assert tb.claims(f, f.read_bytes()[:4096])
    with pytest.raises(IngestError) as e:
        logsage.load_history(tmp_path, use_cache=False)
    assert str(f) in str(e.value) and "git lfs pull" in str(e.value) and "\n" not in str(e.value)


def test_forcing_the_format_on_a_non_event_file_is_an_error(tmp_path):
    f = tmp_path / "metrics.csv"
    f.write_text("step,loss\n1,0.5\n" * 3)
    with pytest.raises(IngestError, match="not a TensorBoard event file"):
        logsage.load_history(f, format="tensorboard", use_cache=False)


def test_claims_checks_the_first_record_framing(simple_run):
    f = _event_files(simple_run[0])[0]
    head = f.read_bytes()[:4096]
    assert tb.claims(f, head)
    assert not tb.claims(f, b"\x00" * 12 + head[12:])  # zero length with a wrong checksum
    assert not tb.claims(f.with_name("trainer_state.json"), head)  # not named like an event file


def test_damage_codes_agree_with_the_kernel():
    from logsage.ingest import tfrecord as _tfrecord

    assert (tb._SHORT_HEADER, tb._LENGTH_CRC, tb._SHORT_DATA, tb._DATA_CRC) == (
        _tfrecord.DAMAGE_SHORT_HEADER, _tfrecord.DAMAGE_LENGTH_CRC, _tfrecord.DAMAGE_SHORT_DATA,
        _tfrecord.DAMAGE_DATA_CRC)


def test_reading_does_not_import_numba_until_a_file_is_parsed():
    code = ("import sys, logsage.ingest.readers.tensorboard, logsage.cli.main; "
            "assert 'numba' not in sys.modules and 'torch' not in sys.modules, 'heavy import'")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[2])


# ----------------------------------------------------------------------------- oracles
@pytest.mark.parametrize("seed", [0, 1])
def test_random_file_matches_event_accumulator(tmp_path, seed):
    rng = np.random.default_rng(seed)
    tags = [f"t{i}/{'x' * int(rng.integers(0, 40))}" for i in range(int(rng.integers(2, 9)))]
    w = _writer(tmp_path)
    step = 0
    special = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, 3.4e38]
    for _ in range(400):
        step += int(rng.integers(0, 3))  # repeated steps included (EventAccumulator keeps them all)
        tag = tags[int(rng.integers(len(tags)))]
        v = special[int(rng.integers(len(special)))] if rng.random() < 0.05 else float(rng.standard_normal() * 1e3)
        w.add_scalar(tag, v, step)
    w.close()
    f = _event_files(tmp_path)[0]
    _assert_file_matches_accumulator(f)
    # The series keep the last write per step, which is what EventAccumulator's list implies.
    acc = _accumulator(f)
    for s in _read([f]).series:
        last = {}
        for e in acc.Scalars(s.name):
            last[e.step] = e.value
        assert s.steps.tolist() == sorted(last)
        np.testing.assert_array_equal(s.values, np.array([last[k] for k in sorted(last)], dtype=np.float64))


def test_many_tags_and_many_values_per_event_grow_the_tables(tmp_path):
    """300 tags (more than the first tag table) in events of 300 values (more points than first guessed)."""
    from tensorboard.compat.proto import summary_pb2

    w = _writer(tmp_path)
    for step in range(6):
        values = [summary_pb2.Summary.Value(tag=f"t{i}", simple_value=i + step / 8) for i in range(300)]
        w._get_file_writer().add_summary(summary_pb2.Summary(value=values), step)
    w.close()
    f = _event_files(tmp_path)[0]
    _assert_file_matches_accumulator(f)
    series = _series(_read([f]))
    assert len(series) == 300
    assert series["t299"].values.tolist() == [299 + s / 8 for s in range(6)]


# The shared corpus (../shared/real-runs/INDEX.md lists 8 TensorBoard runs): with the corpus there,
# a missing run folder is a failure, never a silent skip.
REAL_RUNS = [p.name for p in run_dirs(CORPUS, "tfevents")]


@needs_corpus
def test_all_real_tensorboard_runs_are_present():
    assert len(REAL_RUNS) == 8, REAL_RUNS
    assert all(_event_files(REAL / run) for run in REAL_RUNS)


@needs_corpus
@pytest.mark.parametrize("run", REAL_RUNS)
def test_real_run_files_match_event_accumulator(run):
    for f in _event_files(REAL / run):
        _assert_file_matches_accumulator(f, _accumulator_of_real_file(f))


@needs_corpus
@pytest.mark.parametrize("run, metric, count, last", [
    ("gner-qe-roberta-base-ep20", "eval/loss", 199, 1.7975770235061646),
    ("gner-qe-deberta-v3-large-lr2e-5", "eval/loss", 14, 1.9363720417022705),
    ("lightning-seq2seq-translit-v15", "val_loss", 17, None),
])
def test_real_runs_through_the_folder_loader(run, metric, count, last):
    h = logsage.load_history(REAL / run, use_cache=False)
    assert h.format == "tensorboard"
    s = h.metric(metric)
    assert len(s) == count
    if last is not None:  # the trainer's last curve point (see SOURCE.txt / INDEX.md), not its final evaluate()
        assert s.values[-1] == pytest.approx(last, rel=1e-6)
    # Same points as EventAccumulator read from the file(s) that hold the curve.
    acc = _accumulator_of_real_file(sorted((REAL / run).glob("*tfevents*"))[0])
    ea = {e.step: e.value for e in acc.Scalars(metric)}
    assert s.steps.tolist() == sorted(ea)
    np.testing.assert_array_equal(s.values, [ea[k] for k in sorted(ea)])
    assert h.meta["wall_time_first"] == acc.FirstEventTimestamp()
    assert h.meta["wall_time_last"] >= max(e.wall_time for e in acc.Scalars(metric))


@needs_corpus
def test_nan_metrics_in_a_real_run_are_kept_and_reported():
    run = REAL / "gner-qe-roberta-large-lr5e-5-nan"
    h = logsage.load_history(run, use_cache=False)
    s = h.series["eval/pearson"]
    # INDEX.md pairs this run with hf_trainer_state/gner-qe-roberta-large-lr5e-5-nan (the same run's
    # trainer_state.json, written by another writer): the same steps, NaN at the same evaluations,
    # and the same finite values (float32 in the events).
    twin = logsage.load_history(REAL.parent / "hf_trainer_state" / run.name).series["eval_pearson"]
    assert len(s) == len(twin) == 25
    assert s.steps.tolist() == twin.steps.tolist()
    assert np.isnan(s.values).tolist() == np.isnan(twin.values).tolist()
    assert s.n_non_finite == twin.n_non_finite == 16
    finite = np.isfinite(twin.values)
    np.testing.assert_allclose(s.values[finite], twin.values[finite], rtol=1e-6)
    assert [c.count for c in h.cleanups if c.kind == "non_finite" and c.metric == "eval/pearson"] == [16]
    assert "eval/loss" in h.summary  # the post-training evaluate() file

