"""Incremental watch: the rule's state kept between polls gives exactly the reference replay's advice,
and the hostile cases of issue 9 (bad limits, a missing path, a log renamed over, a broken line, a
FIFO) and issue 13 (a finished run) are handled."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from corpus import REAL_RUNS
from logsage.cli.main import cli
from logsage.core.errors import IngestError, UsageError
from logsage.live import state as live_state
from logsage.live.watch import Watcher, watch
from logsage.decide.engine import decide_values

REAL = REAL_RUNS  # the shared real-run corpus, read in place
LLAMAFACTORY = REAL / "llamafactory_trainer_log" / "qwen2.5-7b-medical-lora" / "trainer_log.jsonl"


def _series(rng: np.random.Generator, n: int) -> np.ndarray:
    v = 1.0 / np.sqrt(np.arange(1, n + 1)) + rng.normal(0, 0.02, n) + np.maximum(np.arange(n) - 0.6 * n, 0) * 0.01
    v = np.round(v, rng.integers(1, 4))  # ties, so threshold and strictness matter
    for _ in range(rng.integers(0, 3)):
        v[rng.integers(n)] = rng.choice([np.nan, np.inf, -np.inf])
    return v


@pytest.mark.parametrize("seed", range(30))
def test_hf_state_equals_the_rule_on_every_prefix(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    v = _series(rng, n)
    steps = (np.arange(n) + 1) * 10
    params = {"patience": int(rng.integers(0, 5)), "threshold": float(rng.choice([0.0, 1e-3, 0.01, 0.05])),
              "min_evals": int(rng.integers(0, 6)), "min_steps": int(rng.choice([0, 55, 200]))}
    st = live_state.state_for("hf", params)
    for t in range(n):
        st.push(float(v[t]), int(steps[t]))
        want = decide_values(v[: t + 1], "hf", params, steps=steps[: t + 1])
        assert st.outcome() == (want.stop_index, want.best_index, want.decidable), (t, params)


def _hf_state_file(path: Path, history: list[dict], step: int, *, max_steps: int = 100_000) -> None:
    """As transformers' TrainerState.save_to_json writes it: sorted keys, indent 2, the whole file."""
    state = {"best_global_step": None, "best_metric": None, "best_model_checkpoint": None, "epoch": step / 1000,
             "eval_steps": 10, "global_step": step, "is_hyper_param_search": False, "is_local_process_zero": True,
             "is_world_process_zero": True, "log_history": history, "logging_steps": 10, "max_steps": max_steps,
             "num_input_tokens_seen": 0, "num_train_epochs": 3, "save_steps": 20,
             "stateful_callbacks": {"TrainerControl": {"args": {"should_epoch_stop": False, "should_evaluate": False,
                                                                "should_log": False, "should_save": True,
                                                                "should_training_stop": False}, "attributes": {}}},
             "total_flos": 0.0, "train_batch_size": 8, "trial_name": None, "trial_params": None}
    path.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")


def _grow_run(run: Path, values: np.ndarray, rule: str, *, every: int = 1, checkpoints: bool = True) -> list:
    """Write a plain HF run evaluation by evaluation (a checkpoint at every other save, one not whole)
    and poll after every `every` evaluations; the advice, as dicts (reasons included)."""
    from safetensors.numpy import save_file

    run.mkdir()
    w = Watcher(run, rule)
    history, out = [], []
    for i, v in enumerate(values):
        step = (i + 1) * 10
        history += [{"epoch": step / 1000, "grad_norm": 1.0, "learning_rate": 1e-4, "loss": 2.0 - i * 1e-3,
                     "step": step},
                    {"epoch": step / 1000, "eval_loss": float(v), "eval_runtime": 1.0,
                     "step": step}]
        if checkpoints and i % 2 == 0:
            ck = run / f"checkpoint-{step}"
            ck.mkdir()
            (ck / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2}))
            if i % 6 != 4:  # every third checkpoint has no weights: not whole, never selected
                save_file({"base_model.model.lm.lora_A.weight": np.zeros((2, 4), np.float32)},
                          str(ck / "adapter_model.safetensors"))
        _hf_state_file(run / "trainer_state.json", history, step)
        if (i + 1) % every == 0 or i == len(values) - 1:
            out += [a.to_dict() for a in w.poll()]
    n_rebuilds = w.n_rebuilds
    w.close()
    return out, n_rebuilds


@pytest.mark.parametrize("seed,rule,every", [(0, "hf:patience=3", 1), (1, "hf:patience=2,threshold=0.01", 1),
                                             (2, "hf:patience=4,min_evals=8", 3), (3, "hf", 2)])
def test_incremental_watch_equals_the_reference_replay_at_every_evaluation(tmp_path, monkeypatch, seed, rule, every):
    """Field for field (stop, selection, note, message, the rule's reason): the incremental path against
    the reference path (the history rebuilt and the prefix replayed at every evaluation)."""
    values = _series(np.random.default_rng(seed), 30)
    values[np.isinf(values)] = np.nan  # HF logs a diverged loss as NaN
    fast, fast_rebuilds = _grow_run(tmp_path / "fast", values, rule, every=every)
    monkeypatch.setattr(live_state, "state_for", lambda rule, params: None)  # no incremental state: reference
    ref, ref_rebuilds = _grow_run(tmp_path / "ref", values, rule, every=every)
    strip = lambda a: {k: (v.replace(str(tmp_path / "fast"), "RUN") if isinstance(v, str) else v)  # noqa: E731
                       for k, v in a.items()}
    assert [strip(a) for a in fast] == [{k: (v.replace(str(tmp_path / "ref"), "RUN") if isinstance(v, str) else v)
                                         for k, v in a.items()} for a in ref]
    assert fast_rebuilds == 1 and ref_rebuilds >= len(values) // every
    assert any(a["action"] == "stop" for a in fast) or all(a["action"] == "continue" for a in fast)


def _cli(*args: str):
    return CliRunner().invoke(cli, list(args))


@pytest.mark.parametrize("opt,value", [("--timeout", "nan"), ("--timeout", "inf"), ("--timeout", "0"),
                                       ("--interval", "nan"), ("--interval", "inf"), ("--interval", "-1"),
                                       ("--max-evals", "0"), ("--max-evals", "-3")])
def test_bad_limits_are_usage_errors(tmp_path, opt, value):
    log = tmp_path / "trainer_log.jsonl"
    log.write_bytes(LLAMAFACTORY.read_bytes())
    r = _cli("watch", str(log), "--rule", "hf", opt, value)
    assert r.exit_code == 2, r.output
    assert opt in r.output and "Traceback" not in r.output
    with pytest.raises(UsageError):
        next(watch(log, "hf", **{opt[2:].replace("-", "_"): float(value) if opt != "--max-evals" else int(value)}))


def test_missing_path_says_it_waits_and_gives_up_at_the_timeout(tmp_path):
    r = _cli("watch", str(tmp_path / "nope"), "--rule", "hf", "--timeout", "0.3", "--interval", "0.05")
    assert r.exit_code == 1
    assert "waiting for it to appear" in r.output and "did not appear within 0.3 s" in r.output
    assert "Traceback" not in r.output


def test_finished_log_says_the_run_is_finished(tmp_path):
    log = tmp_path / "trainer_log.jsonl"
    log.write_bytes(LLAMAFACTORY.read_bytes())
    r = _cli("watch", str(log), "--rule", "hf:patience=2", "--interval", "0.01", "--timeout", "5")
    assert r.exit_code == 0, r.output
    assert "the run is finished" in r.output and "step budget" in r.output


def test_log_renamed_over_by_a_longer_file_is_read_again(tmp_path):
    lines = LLAMAFACTORY.read_bytes().splitlines(keepends=True)
    evals = [i for i, ln in enumerate(lines) if b"eval_loss" in ln]
    log = tmp_path / "trainer_log.jsonl"
    log.write_bytes(b"".join(lines[: evals[1] + 1]))
    w = Watcher(log, "hf:patience=100")
    assert [a.eval_index for a in w.poll()] == [1]
    # A different history (its evaluation values changed), longer, renamed over the log.
    other = [ln.replace(b'"eval_loss": ', b'"eval_loss": 1') if b"eval_loss" in ln else ln
             for ln in lines[: evals[3] + 1]]
    tmp = tmp_path / "new.jsonl"
    tmp.write_bytes(b"".join(other))
    os.replace(tmp, log)
    got = w.poll()
    assert got and got[-1].eval_index == 3
    want = json.loads(other[evals[3]])["eval_loss"]
    assert got[-1].value == pytest.approx(want)
    w.close()


def test_broken_line_in_an_appended_chunk_drops_only_that_line(tmp_path):
    lines = LLAMAFACTORY.read_bytes().splitlines(keepends=True)
    evals = [i for i, ln in enumerate(lines) if b"eval_loss" in ln]
    log = tmp_path / "trainer_log.jsonl"
    log.write_bytes(b"".join(lines[: evals[0] + 1]))
    w = Watcher(log, "hf:patience=100")
    assert len(w.poll()) == 1
    chunk = lines[evals[0] + 1: evals[2] + 1]
    broken = evals[0] + 1 + 1  # the second line of the chunk (0-based in the file)
    chunk[1] = b'{"current_steps": oops\n'
    with open(log, "ab") as f:
        f.write(b"".join(chunk))
    got = w.poll()
    assert [a.eval_index for a in got] == [1, 2]  # both evaluations of the chunk kept
    msgs = w.warnings()
    assert len(msgs) == 1 and msgs[0].startswith(f"{log}:{broken + 1}:") and "dropped that line" in msgs[0]
    assert w.warnings() == []  # each warning once
    w.close()


def test_warnings_are_shown_by_the_cli(tmp_path):
    lines = LLAMAFACTORY.read_bytes().splitlines(keepends=True)
    lines[3] = b"{not json\n"
    log = tmp_path / "trainer_log.jsonl"
    log.write_bytes(b"".join(lines))
    # At the first look the whole file is one chunk: the broken line is dropped and named.
    r = _cli("watch", str(log), "--rule", "hf:patience=2", "--interval", "0.01", "--timeout", "5")
    assert r.exit_code == 0, r.output
    assert f"{log}:4:" in r.output and "dropped that line" in r.output


def test_a_fifo_named_like_a_log_is_not_read(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    os.mkfifo(run / "trainer_state.json")
    w = Watcher(run, "hf")
    assert w.poll() == []  # returns at once: the FIFO is never opened
    w.close()


def test_missing_path_is_awaited_then_followed(tmp_path):
    with pytest.raises(IngestError, match="did not appear"):
        list(watch(tmp_path / "later", "hf", interval=0.01, timeout=0.05))
