"""trainer_state.json with damaged records (issue 9): every dropped value counted, no traceback.

The files are written the way the HF Trainer writes them (`TrainerState.save_to_json`:
`json.dumps(..., indent=2, sort_keys=True)`), starting from a real trainer_state.json of
../shared/real-runs whose records are then damaged one kind at a time.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import logsage
from logsage.cli.main import cli
from logsage.ingest import fastjson

ROOT = Path(__file__).resolve().parents[2]
REAL = ROOT.parent / "shared" / "real-runs" / "hf_trainer_state"
WHISPER = REAL / "whisper-large-v2-ja-38ep" / "trainer_state.json"
NAN_RUN = REAL / "gner-qe-roberta-large-lr5e-5-nan" / "trainer_state.json"
pytestmark = pytest.mark.skipif(not WHISPER.exists(), reason="needs ../shared/real-runs")


def _state() -> dict:
    return json.loads(WHISPER.read_text())


def _evals(state: dict) -> list[dict]:
    return [r for r in state["log_history"] if "eval_loss" in r]


def _write(tmp_path: Path, state: dict | str) -> Path:
    p = tmp_path / "trainer_state.json"
    p.write_text(state if isinstance(state, str) else json.dumps(state, indent=2, sort_keys=True) + "\n")
    return p


def _cleanup(h, kind: str, needle: str):
    hits = [c for c in h.cleanups if c.kind == kind and needle in c.message]
    assert hits, [(c.kind, c.message) for c in h.cleanups]
    return hits[0]


def test_values_that_are_not_numbers_are_counted(tmp_path):
    state = _state()
    ev = _evals(state)
    ev[0]["eval_loss"], ev[1]["eval_loss"], ev[2]["eval_loss"] = "0.5x", [0.4], {"value": 0.3}
    h = logsage.load_history(_write(tmp_path, state))
    assert h.metric("eval_loss").steps.tolist() == [r["step"] for r in ev[3:]]
    c = _cleanup(h, "dropped_record", "eval_loss: 3 value(s) that are not numbers")
    assert c.count == 3 and c.metric == "eval_loss" and "'0.5x'" in c.message


def test_string_step_is_read_and_said(tmp_path):
    state = _state()
    ev = _evals(state)
    step = ev[1]["step"]
    ev[1]["step"] = str(step)
    h = logsage.load_history(_write(tmp_path, state))
    assert step in h.metric("eval_loss").steps.tolist() and len(h.metric("eval_loss")) == len(ev)
    assert _cleanup(h, "coerced", "step as a string").count == 1
    assert not any("without a step" in c.message for c in h.cleanups)


def test_fractional_step_never_replaces_the_real_evaluation(tmp_path):
    state = _state()
    ev = _evals(state)
    real = dict(ev[1])
    state["log_history"].append(dict(real, step=real["step"] + 0.7, eval_loss=99.0))
    h = logsage.load_history(_write(tmp_path, state))
    s = h.metric("eval_loss")
    assert s.values[s.steps.tolist().index(real["step"])] == real["eval_loss"]
    assert 99.0 not in s.values.tolist()
    c = _cleanup(h, "dropped_record", "step is not a whole number")
    assert c.count == 1 and "(fractional)" in c.message


@pytest.mark.parametrize("bad, why", [("NaN", "not finite"), ("Infinity", "not finite"),
                                      ("-Infinity", "not finite"), ("123456789012345678901234", "beyond int64"),
                                      ('"forty"', "not a whole number"), ("true", "not a number")])
def test_bad_steps_are_counted_not_tracebacks(tmp_path, bad, why):
    state = _state()
    ev = _evals(state)
    ev[2]["step"] = "__BAD__"
    text = json.dumps(state, indent=2, sort_keys=True).replace('"__BAD__"', bad)
    h = logsage.load_history(_write(tmp_path, text))
    assert len(h.metric("eval_loss")) == len(ev) - 1
    assert f"({why})" in _cleanup(h, "dropped_record", "step is not a whole number").message


def test_bad_meta_is_a_warning_not_a_traceback(tmp_path):
    state = _state()
    state["global_step"] = "forty"
    state["stateful_callbacks"] = [{"TrainerControl": {}}]
    p = _write(tmp_path, state)
    h = logsage.load_history(p)
    assert "global_step" not in h.meta and len(h.metric("eval_loss")) == len(_evals(state))
    assert any("global_step is 'forty', not a number" in w for w in h.warnings)
    assert any("stateful_callbacks is a list" in w for w in h.warnings)
    r = CliRunner().invoke(cli, ["ingest", str(p), "--json"])
    assert r.exit_code == 0 and "Traceback" not in r.output


def test_duplicate_keys_in_one_record_are_reported(tmp_path):
    state = _state()
    ev = _evals(state)
    ev[0]["eval_loss"] = "__DUP__"
    text = json.dumps(state, indent=2, sort_keys=True).replace('"eval_loss": "__DUP__"',
                                                                '"eval_loss": 0.5, "eval_loss": 0.25')
    h = logsage.load_history(_write(tmp_path, text))
    assert h.metric("eval_loss").values[0] == 0.25  # the last, as every JSON reader
    c = _cleanup(h, "duplicates", "repeated key")
    assert c.count == 1 and "'eval_loss'" in c.message and f"step {ev[0]['step']}" in c.message


def test_colons_inside_strings_are_no_duplicates(tmp_path):
    state = _state()
    state["best_model_checkpoint"] = "C:\\runs\\out:checkpoint-10"
    h = logsage.load_history(_write(tmp_path, state))
    assert not any(c.kind == "duplicates" and "repeated key" in c.message for c in h.cleanups)


def test_entries_that_are_not_objects_are_counted(tmp_path):
    state = _state()
    n_evals = len(_evals(state))
    state["log_history"][1:1] = [1, "x", None, [2]]
    h = logsage.load_history(_write(tmp_path, state))
    assert len(h.metric("eval_loss")) == n_evals
    assert _cleanup(h, "dropped_record", "not JSON objects").count == 4


def test_shape_order_keeps_write_order_for_repeated_steps(tmp_path):
    """Two record shapes write the same step: the later write wins, as in the file."""
    state = _state()
    ev = _evals(state)
    state["log_history"].insert(0, {"epoch": 0.0, "eval_loss": 7.0, "step": ev[0]["step"]})  # another shape, earlier
    h = logsage.load_history(_write(tmp_path, state))
    assert h.metric("eval_loss").values[0] == ev[0]["eval_loss"]
    assert _cleanup(h, "duplicates", "eval_loss: 1 earlier write").count == 1


@pytest.mark.parametrize("path", [WHISPER, NAN_RUN], ids=["whisper", "nan-run"])
def test_orjson_and_the_stdlib_decoder_read_alike(path, monkeypatch):
    """The fast path (orjson, bare NaN quoted) and the stdlib decoder give the same History."""
    fast = logsage.load_history(path, use_cache=False)
    monkeypatch.setattr(fastjson, "_orjson", False)
    slow = logsage.load_history(path, use_cache=False)
    assert fast.series.keys() == slow.series.keys()
    for k in fast.series:
        a, b = fast.series[k], slow.series[k]
        assert a.steps.tolist() == b.steps.tolist()
        np.testing.assert_array_equal(a.values, b.values)
    assert [c.to_dict() for c in fast.cleanups] == [c.to_dict() for c in slow.cleanups]
    assert fast.meta == slow.meta or all(
        fast.meta[k] == slow.meta[k] or (isinstance(fast.meta[k], float) and math.isnan(fast.meta[k]))
        for k in fast.meta)
    if path == NAN_RUN:
        assert any(s.n_non_finite for s in fast.series.values())


def test_quoting_bare_tokens_never_changes_a_string():
    data = b'{"note": "lr-Infinity NaN", "v": NaN, "w": -Infinity, "x": Infinity}'
    obj, _ = fastjson.decode(data, file="f")
    assert obj["note"] == "lr-Infinity NaN"
    assert math.isnan(fastjson.QUOTED_NON_FINITE.get(obj["v"], obj["v"])) and obj["w"] in ("-Infinity", -math.inf)


def test_resumed_run_with_a_summary_in_the_middle_keeps_later_points(tmp_path):
    """HF writes a training summary at the end of each train(); a resumed run continues after it."""
    state = _state()
    hist = state["log_history"]
    summary = next(r for r in hist if "train_runtime" in r)
    last = max(r["step"] for r in hist if "step" in r)
    ev = _evals(state)
    later = [{"epoch": 40.0, "loss": 0.01, "step": last + 10},
             {"epoch": 40.0, "eval_loss": 0.5, "step": last + 10},  # a new evaluation: a point
             {"epoch": 40.0, "eval_loss": 0.123, "step": ev[0]["step"]}]  # an already evaluated step: summary
    hist[hist.index(summary) + 1:hist.index(summary) + 1] = later
    h = logsage.load_history(_write(tmp_path, state))
    s = h.metric("eval_loss")
    assert s.steps.tolist()[-1] == last + 10 and s.values[-1] == 0.5
    assert s.values[0] == ev[0]["eval_loss"] and h.summary["eval_loss"] == 0.123
    assert h.metric("loss").steps.tolist()[-1] == last + 10
