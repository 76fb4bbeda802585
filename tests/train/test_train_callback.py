"""The public HF callback (logsage.integrations.hf.LogsageCallback) on scripted Trainer states (no training)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from logsage.core.errors import RuleConfigError


def _log(values, *, every=10, train=True):
    log = []
    for i, v in enumerate(values):
        step = every * (i + 1)
        if train:
            log.append({"loss": 2.0 - 0.01 * i, "step": step, "epoch": i / 10})
        log.append({"eval_loss": v, "step": step, "epoch": i / 10})
    return log


def _state(log, max_steps=1000):
    step = max((e["step"] for e in log), default=0)
    return SimpleNamespace(log_history=log, max_steps=max_steps, is_world_process_zero=True, global_step=step)


def _control():
    return SimpleNamespace(should_training_stop=False, should_save=False)


def test_stops_exactly_at_the_offline_stop_and_saves_it():
    from logsage.decide.engine import decide_values
    from logsage.integrations.hf import LogsageCallback

    values = [1.0, 0.9, 0.8, 0.85, 0.84, 0.83, 0.7]
    offline = decide_values(values, "hf", {"patience": 3}, steps=[10 * (i + 1) for i in range(len(values))])
    assert offline.stop_index == 5
    messages = []
    cb = LogsageCallback("hf:patience=3", echo=messages.append)
    for t in range(len(values)):
        control = _control()
        cb.on_evaluate(None, _state(_log(values[: t + 1])), control, metrics={"eval_loss": values[t]})
        if t < offline.stop_index:
            assert not control.should_training_stop
        else:
            assert control.should_training_stop and control.should_save
            break
    assert cb.stopped["step"] == 60 and cb.stopped["best_step"] == 30
    assert messages and "step 60" in messages[0] and "hf:patience=3" in messages[0]


def test_max_metrics_and_other_eval_sets():
    from logsage.integrations.hf import LogsageCallback, series_from_log_history

    cb = LogsageCallback("patience:patience=1", metric="accuracy", echo=lambda m: None)
    assert cb.key == "eval_accuracy" and cb.mode == "max"
    log = [{"eval_accuracy": 0.5, "step": 1}, {"eval_accuracy": 0.6, "step": 2}, {"eval_accuracy": 0.55, "step": 3}]
    control = _control()
    cb.on_evaluate(None, _state(log), control, metrics={"eval_other_loss": 1.0})  # not the watched key: ignored
    assert not control.should_training_stop
    cb.on_evaluate(None, _state(log), control, metrics={"eval_accuracy": 0.55})
    assert control.should_training_stop and cb.stopped["step"] == 3
    # a step logged twice (a resumed segment rewrote it) keeps its later value
    steps, vals = series_from_log_history([{"eval_loss": 1.0, "step": 5}, {"eval_loss": 2.0, "step": 5}], "eval_loss")
    assert steps.tolist() == [5] and vals.tolist() == [2.0]


def test_a_rule_that_had_already_fired_stops_at_once_and_says_so():
    from logsage.integrations.hf import LogsageCallback

    cb = LogsageCallback("hf:patience=1", echo=lambda m: None)
    decision = cb.decide(_log([1.0, 1.1, 1.2, 1.3]), 1000)
    assert decision["step"] == 40 and decision["rule_stop_step"] == 20
    assert "already fired at step 20" in decision["reason"]


def test_budget_and_train_loss_reach_the_rules():
    from logsage.decide.engine import decide_values
    from logsage.integrations.hf import LogsageCallback

    values = list(np.linspace(1.0, 0.5, 12)) + [0.55, 0.56, 0.57, 0.58, 0.59, 0.6, 0.61, 0.62]
    steps = [10 * (i + 1) for i in range(len(values))]
    log = _log(values)
    for spec in ("adaptive:patience=4", "pq:alpha=0.1,k=2"):
        cb = LogsageCallback(spec, echo=lambda m: None)
        name, _, params = spec.partition(":")
        given = dict(p.split("=") for p in params.split(","))
        tl = [(e["step"], e["loss"]) for e in log if "loss" in e]
        offline = decide_values(values, name, given, steps=steps, budget_steps=200,
                                train_steps=[s for s, _ in tl], train_values=[v for _, v in tl])
        live_stop = None
        for t in range(len(values)):
            d = cb.decide(log[: 2 * (t + 1)], 200)
            if d is not None:
                live_stop = d["step"]
                break
        assert offline.stop_index is not None, spec  # (adaptive stops one eval later without the budget)
        assert live_stop == steps[offline.stop_index], spec


def test_bad_rules_fail_before_training():
    from logsage.decide.live import parse_live_rules

    with pytest.raises(RuleConfigError, match="unknown rule 'hff'"):
        parse_live_rules(["hff:patience=2"])
    with pytest.raises(RuleConfigError, match="patience must be int"):
        parse_live_rules(["hf:patience=two"])


def test_strict_raises_after_a_round_without_the_metric_and_names_the_logged_keys():
    from logsage.core.errors import MetricNotFound
    from logsage.integrations.hf import LogsageCallback

    cb = LogsageCallback("hf:patience=3", metric="eval_los", echo=lambda m: None)
    log = [{"eval_loss": 1.0, "eval_runtime": 0.1, "step": 10}]
    cb.on_evaluate(None, _state(log), _control(), metrics={"eval_loss": 1.0, "eval_runtime": 0.1, "epoch": 1.0})
    with pytest.raises(MetricNotFound) as err:
        cb.on_step_begin(None, _state(log), _control())
    msg = str(err.value)
    assert "'eval_los'" in msg and "eval_loss, eval_runtime" in msg and "did you mean 'eval_loss'" in msg
    assert "\n" not in msg
    # strict=False: ignored, as HF's own callback does
    lax = LogsageCallback("hf:patience=3", metric="eval_los", strict=False, echo=lambda m: None)
    lax.on_evaluate(None, _state(log), _control(), metrics={"eval_loss": 1.0})
    lax.on_step_begin(None, _state(log), _control())


def test_several_eval_sets_in_one_round_are_fine():
    from logsage.integrations.hf import LogsageCallback

    cb = LogsageCallback("hf:patience=3", metric="eval_b_loss", echo=lambda m: None)
    log = [{"eval_a_loss": 1.0, "step": 10}, {"eval_b_loss": 2.0, "step": 10}]
    cb.on_evaluate(None, _state(log), _control(), metrics={"eval_a_loss": 1.0})  # set a first: not an error
    cb.on_evaluate(None, _state(log), _control(), metrics={"eval_b_loss": 2.0})
    cb.on_save(None, _state(log), _control())  # the round ends: the metric was seen


def _args(**kw):
    base = dict(save_strategy="steps", eval_strategy="steps", metric_for_best_model=None, greater_is_better=None,
                save_total_limit=None)
    base.update(kw)
    return SimpleNamespace(**base)


@pytest.mark.parametrize("args, state, problem", [
    (_args(), SimpleNamespace(eval_steps=50, save_steps=50), None),
    (_args(), SimpleNamespace(eval_steps=100, save_steps=50), None),  # saves more often: every eval has one
    (_args(), SimpleNamespace(eval_steps=50, save_steps=100), "some evaluations get no checkpoint"),
    (_args(save_strategy="no"), SimpleNamespace(eval_steps=50, save_steps=50), "no checkpoint is saved"),
    (_args(save_strategy="epoch"), SimpleNamespace(eval_steps=50, save_steps=50), "saves every epoch"),
    (_args(save_total_limit=2), SimpleNamespace(eval_steps=5, save_steps=5), "save_total_limit=2"),
    (_args(save_total_limit=2, metric_for_best_model="loss", greater_is_better=False),
     SimpleNamespace(eval_steps=5, save_steps=5), None),  # HF protects the best by the same metric
])
def test_save_cadence_problem(args, state, problem):
    from logsage.integrations.hf import save_cadence_problem

    found = save_cadence_problem(args, state, "eval_loss", "min")
    assert (found is None) if problem is None else (problem in found), found


def test_the_cadence_warning_is_given_once():
    import warnings

    from logsage.integrations.hf import LogsageCallback

    cb = LogsageCallback("hf", echo=lambda m: None)
    state = SimpleNamespace(eval_steps=5, save_steps=10, is_world_process_zero=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cb.on_train_begin(_args(), state, _control())
        cb.on_train_begin(_args(), state, _control())
    assert len([w for w in caught if "LogsageCallback" in str(w.message)]) == 1
