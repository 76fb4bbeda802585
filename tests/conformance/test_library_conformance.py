"""Our hf / lightning / keras rules stop where the real libraries stop, on named vectors.

Two layers:

1. `test_oracles_match_reference_table` checks the oracles (which drive the real
   transformers, pytorch_lightning and keras callbacks) against the stop indices the
   reference observed by running those libraries (`stopping-semantics.md` §8). The table
   counts from 1; the oracles count from 0.
2. The `test_*_matches_library` tests feed the same vectors, plus edge cases (NaN/inf,
   ties, exact-threshold steps, patience 0, max mode, all-NaN, one value, empty), to
   `logsage.decide.engine.decide_values` and require the library's stop index and its best
   index (the Trainer's best_global_step, Lightning's best_score, Keras' best_epoch). For
   Keras the weights it leaves in the model (the best epoch's with restore_best_weights,
   else the last epoch's) are checked against what the reason says.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest

from .oracles import hf_stop, keras_run, keras_stop, lightning_stop, lightning_stop_via_check

NAN = float("nan")
INF = float("inf")

ORACLES = {"hf": hf_stop, "lightning": lightning_stop, "keras": keras_stop}


# --------------------------------------------------------------------------- §8 table
# id -> (sequence, patience, delta, mode, {column: 1-based stop or None})
REFERENCE_TABLE = {
    "typical": ([1.0, .9, .8, .85, .82, .81, .79, .80, .80, .80], 2, 0.0, "min",
                {"hf": 5, "lightning": 5, "lightning_nocheck": 5, "keras": 5}),
    "ties": ([1.0, .9, .9, .9, .9, .9], 2, 0.0, "min",
             {"hf": 4, "lightning": 4, "lightning_nocheck": 4, "keras": 4}),
    "exact_delta": ([1.0, .75, .5, .25, 0.0], 1, .25, "min",
                    {"hf": 2, "lightning": 2, "lightning_nocheck": 2, "keras": 2}),
    "slow_creep": ([1.0, .9, .8, .7, .6, .5, .4], 2, .15, "min",
                   {"hf": 3, "lightning": None, "lightning_nocheck": None, "keras": None}),
    "nan_first": ([NAN, 1.0, .9, .8, .7, .6], 2, 0.0, "min",
                  {"hf": None, "lightning": 1, "lightning_nocheck": None, "keras": 3}),
    "nan_mid": ([1.0, .9, NAN, .8, NAN, NAN, .7], 2, 0.0, "min",
                {"hf": 6, "lightning": 3, "lightning_nocheck": 6, "keras": 6}),
    "inf_mid": ([1.0, INF, .9, .8], 2, 0.0, "min",
                {"hf": None, "lightning": 2, "lightning_nocheck": None, "keras": None}),
    "p0": ([1.0, .9, .95, .8], 0, 0.0, "min",
           {"hf": 1, "lightning": 3, "lightning_nocheck": 3, "keras": 3}),
    "prec": ([1.0, 1 - 1e-9, 1 - 2e-9, 1 - 3e-9], 2, 0.0, "min",
             {"hf": None, "lightning": 3, "lightning_nocheck": 3, "keras": 3}),
    "max_mode": ([.1, .2, .2, .3, .25, .29, .31], 2, 0.0, "max", {"hf": 6}),
}

# Best values the reference states explicitly (1-based evaluation of the best).
REFERENCE_BEST = {
    ("exact_delta", "hf"): 2,  # best .75: the Trainer ratchets on the sub-threshold gain
    ("exact_delta", "lightning"): 1,  # best 1.0
    ("exact_delta", "keras"): 1,  # best 1.0
    ("typical", "keras"): 3,  # "restores ep 3"
    ("nan_first", "keras"): 1,  # best NaN, "restores ep 1"
}

# Single-library vectors (§8 "Additional"): (library, sequence, mode, oracle kwargs, 1-based stop).
REFERENCE_SINGLE = [
    ("keras", [1.0, .9, .8, .7, .6, .55], "min", dict(patience=2, min_delta=0.0, baseline=.5), None),
    ("keras", [1.0, .9, .95], "min", dict(patience=2, min_delta=0.0, baseline=.5), 3),
    ("keras", [1.0, .4, .45, .46, .47], "min", dict(patience=2, min_delta=0.0, baseline=.5), 4),
    ("keras", [5.0, 4.0, 3.0, 3.5, 3.6], "min", dict(patience=1, min_delta=0.0, start_from_epoch=2), 4),
    # "max-mode, δ=.05 never stops (Lightning agrees)"; patience 2 as in the table's other rows.
    ("keras", [.1, .2, .25, .3, .31], "max", dict(patience=2, min_delta=.05), None),
    ("lightning", [.1, .2, .25, .3, .31], "max", dict(patience=2, min_delta=.05), None),
    ("lightning", [1.0, .5, .3, .2], "min", dict(patience=3, min_delta=0.0, stopping_threshold=.3), 4),
    ("lightning", [1.0, .5, 2.0, 3.0], "min", dict(patience=3, min_delta=0.0, divergence_threshold=2.0), 4),
    ("lightning", [1.0, .5, 2.0001, 3.0], "min", dict(patience=3, min_delta=0.0, divergence_threshold=2.0), 3),
]


def _zero_based(stop_1based):
    return None if stop_1based is None else stop_1based - 1


def _run_column(column, values, patience, delta, mode):
    if column == "hf":
        return hf_stop(values, patience=patience, threshold=delta, mode=mode)
    if column == "lightning":
        return lightning_stop(values, patience=patience, min_delta=delta, mode=mode)
    if column == "lightning_nocheck":
        return lightning_stop(values, patience=patience, min_delta=delta, mode=mode, check_finite=False)
    if column == "keras":
        return keras_stop(values, patience=patience, min_delta=delta, mode=mode)
    raise AssertionError(column)


def test_oracles_match_reference_table():
    """The oracles reproduce every observed cell of §8 (stop and stated best)."""
    mismatches = []
    for vector_id, (values, patience, delta, mode, columns) in REFERENCE_TABLE.items():
        for column, stop_1based in columns.items():
            stop, best = _run_column(column, values, patience, delta, mode)
            if stop != _zero_based(stop_1based):
                mismatches.append(f"{vector_id}/{column}: stop {stop} (0-based), table says {stop_1based} (1-based)")
            stated_best = REFERENCE_BEST.get((vector_id, column))
            if stated_best is not None and best != stated_best - 1:
                mismatches.append(f"{vector_id}/{column}: best {best} (0-based), table says {stated_best} (1-based)")
    for library, values, mode, kwargs, stop_1based in REFERENCE_SINGLE:
        stop, _best = ORACLES[library](values, mode=mode, **kwargs)
        if stop != _zero_based(stop_1based):
            mismatches.append(f"{library} {values} {kwargs}: stop {stop} (0-based), reference says {stop_1based}")
    assert not mismatches, "\n".join(mismatches)


def test_lightning_oracle_agrees_with_the_fit_check_path():
    """`_evaluate_stopping_criteria` alone stops where `_run_early_stopping_check(trainer)` does."""
    for values, patience, delta, mode, _ in REFERENCE_TABLE.values():
        for check_finite in (True, False):
            kwargs = dict(patience=patience, min_delta=delta, mode=mode, check_finite=check_finite)
            assert lightning_stop(values, **kwargs)[0] == lightning_stop_via_check(values, **kwargs)
    for library, values, mode, kwargs, _ in REFERENCE_SINGLE:
        if library == "lightning":
            assert lightning_stop(values, mode=mode, **kwargs)[0] == lightning_stop_via_check(values, mode=mode,
                                                                                              **kwargs)


def test_hf_oracle_agrees_with_a_full_trainer_run(tmp_path, monkeypatch):
    """Two vectors through the whole `Trainer.train()` loop (tiny torch model, scripted metric)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import EarlyStoppingCallback, Trainer, TrainingArguments

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(1, 1)

        def forward(self, x, labels=None):
            out = self.linear(x)
            loss = torch.nn.functional.mse_loss(out, labels)
            return {"loss": loss, "logits": out}

    data = [{"x": torch.tensor([float(i)]), "labels": torch.tensor([0.0])} for i in range(4)]

    for values, patience, threshold, mode in [
        ([1.0, .9, .8, .85, .82, .81, .79, .80, .80, .80], 2, 0.0, "min"),  # typical: stop 5
        ([1.0, .75, .5, .25, 0.0], 1, .25, "min"),  # exact_delta: stop 2, best .75
    ]:
        scripted = iter(values)
        seen = []

        def compute_metrics(_prediction):
            seen.append(next(scripted))
            return {"scripted": seen[-1]}

        args = TrainingArguments(
            output_dir=str(tmp_path / f"run{len(values)}"), eval_strategy="steps", eval_steps=1,
            save_strategy="no", max_steps=len(values), per_device_train_batch_size=4,
            per_device_eval_batch_size=4, metric_for_best_model="scripted", greater_is_better=(mode == "max"),
            load_best_model_at_end=False, report_to=[], use_cpu=True, logging_strategy="no",
            disable_tqdm=True, learning_rate=0.0,
        )
        trainer = Trainer(model=Tiny(), args=args, train_dataset=data, eval_dataset=data,
                          compute_metrics=compute_metrics,
                          callbacks=[EarlyStoppingCallback(patience, threshold)])
        trainer.train()
        oracle_stop, _ = hf_stop(values, patience=patience, threshold=threshold, mode=mode)
        # The run stops after the eval at which the callback fires: evals done == stop + 1.
        assert len(seen) == oracle_stop + 1
        assert trainer.state.best_metric == pytest.approx(min(seen) if mode == "min" else max(seen))


# --------------------------------------------------------------------------- conformance cases
@dataclass(frozen=True)
class Case:
    name: str
    library: str
    values: tuple
    mode: str
    params: dict = field(default_factory=dict)  # our parameter names == the oracle's keyword names

    @property
    def id(self):
        return f"{self.library}-{self.name}"


def _table_cases():
    """Every §8 cell as a conformance case (HF threshold / Lightning and Keras min_delta)."""
    cases = []
    for vector_id, (values, patience, delta, mode, columns) in REFERENCE_TABLE.items():
        # The table pins HF max mode only; the other libraries get the same vector anyway.
        for column in ("hf", "lightning", "lightning_nocheck", "keras"):
            if column == "hf":
                params = dict(patience=patience, threshold=delta)
                library = "hf"
            elif column == "keras":
                params = dict(patience=patience, min_delta=delta)
                library = "keras"
            else:
                params = dict(patience=patience, min_delta=delta, check_finite=(column == "lightning"))
                library = "lightning"
            cases.append(Case(f"{vector_id}" + ("-nocheck" if column == "lightning_nocheck" else ""),
                              library, tuple(values), mode, params))
    for i, (library, values, mode, kwargs, _) in enumerate(REFERENCE_SINGLE):
        cases.append(Case(f"single{i}", library, tuple(values), mode, dict(kwargs)))
    return cases


def _negated(values):
    return tuple(-v for v in values)


def _edge_cases():
    """Edge cases beyond the table, each run on all three libraries in both modes."""
    raw = {
        "empty": (),
        "single": (1.0,),
        "single_nan": (NAN,),
        "all_nan": (NAN, NAN, NAN, NAN),
        "all_inf": (INF, INF, INF),
        "inf_first": (INF, 1.0, 1.0, 1.0, 1.0),
        "neg_inf_mid": (1.0, -INF, 0.5, 0.4, 0.3),
        "nan_then_inf": (NAN, INF, 1.0, 1.0, 1.0),
        "constant": (0.5,) * 6,
        "rising": (0.1, 0.2, 0.3, 0.4, 0.5),
        "falling": (0.5, 0.4, 0.3, 0.2, 0.1),
        "float_tenth_steps": (1.0, 0.9, 0.8, 0.7, 0.6, 0.5),  # 0.9-0.8 != 0.1 in float64
        "late_improvement": (1.0, 1.1, 1.2, 0.5, 1.3, 1.4, 1.5),
    }
    out = []
    for name, values in raw.items():
        for mode, seq in (("min", values), ("max", _negated(values))):
            for patience in (0, 1, 2):
                for delta in (0.0, 0.1):
                    tag = f"{name}-{mode}-p{patience}-d{delta}"
                    out.append(Case(tag, "hf", seq, mode, dict(patience=patience, threshold=delta)))
                    out.append(Case(tag, "keras", seq, mode, dict(patience=patience, min_delta=delta)))
                    for check_finite in (True, False):
                        out.append(Case(f"{tag}-cf{int(check_finite)}", "lightning", seq, mode,
                                        dict(patience=patience, min_delta=delta, check_finite=check_finite)))
    return out


def _targeted_cases():
    """Exact-threshold steps, thresholds/baselines, and the libraries' documented quirks."""
    c = []
    # Exact-threshold improvements in both modes (0.25 steps are exact in binary).
    for mode, seq in (("min", (1.0, .75, .5, .25, 0.0)), ("max", (0.0, .25, .5, .75, 1.0))):
        c.append(Case(f"exact_step-{mode}", "hf", seq, mode, dict(patience=1, threshold=.25)))
        c.append(Case(f"exact_step-{mode}", "keras", seq, mode, dict(patience=1, min_delta=.25)))
        c.append(Case(f"exact_step-{mode}", "lightning", seq, mode, dict(patience=1, min_delta=.25)))
    # HF: the best ratchets on sub-threshold gains; patience 0 stops at the first eval.
    c.append(Case("ratchet_max", "hf", (.1, .2, .3, .4, .5, .6), "max", dict(patience=2, threshold=.15)))
    c.append(Case("p0_max", "hf", (.1, .2, .3), "max", dict(patience=0, threshold=0.0)))
    c.append(Case("nan_first_then_inf", "hf", (NAN, INF, INF, 1.0), "min", dict(patience=2, threshold=0.0)))
    c.append(Case("nan_first_max", "hf", (NAN, .5, .4, .3), "max", dict(patience=2, threshold=0.0)))
    c.append(Case("tiny_gain_float64", "hf", (1.0, 1 - 1e-9, 1 - 2e-9), "min", dict(patience=1, threshold=0.0)))
    # Lightning: thresholds in both modes, strictness, priority (non-finite before thresholds).
    c.append(Case("stop_thr_max", "lightning", (.1, .5, .7, .8), "max", dict(patience=3, min_delta=0.0,
                                                                                stopping_threshold=.7)))
    c.append(Case("div_thr_max", "lightning", (1.0, .5, .2, .1), "max", dict(patience=3, min_delta=0.0,
                                                                                divergence_threshold=.2)))
    c.append(Case("div_thr_max_below", "lightning", (1.0, .5, .19, .1), "max", dict(patience=3, min_delta=0.0,
                                                                                     divergence_threshold=.2)))
    c.append(Case("stop_thr_first", "lightning", (.1, .5), "min", dict(patience=3, min_delta=0.0,
                                                                         stopping_threshold=.3)))
    c.append(Case("nan_vs_thresholds", "lightning", (1.0, NAN, .1), "min",
                  dict(patience=3, min_delta=0.0, stopping_threshold=.3, divergence_threshold=2.0)))
    c.append(Case("nan_vs_thresholds_nocheck", "lightning", (1.0, NAN, .1), "min",
                  dict(patience=3, min_delta=0.0, check_finite=False, stopping_threshold=.3,
                       divergence_threshold=2.0)))
    c.append(Case("inf_vs_divergence_nocheck", "lightning", (1.0, INF, .1), "min",
                  dict(patience=3, min_delta=0.0, check_finite=False, divergence_threshold=2.0)))
    c.append(Case("both_thresholds", "lightning", (1.0, .5, 2.5), "min",
                  dict(patience=3, min_delta=0.0, stopping_threshold=.3, divergence_threshold=2.0)))
    c.append(Case("float32_delta", "lightning", (1.0, 0.9, 0.8, 0.7), "min", dict(patience=1, min_delta=0.1)))
    # Keras: baseline in both modes, start_from_epoch, the epoch>0 guard, restore_best_weights.
    c.append(Case("baseline_max", "keras", (.1, .2, .15, .16), "max", dict(patience=2, min_delta=0.0,
                                                                            baseline=.5)))
    c.append(Case("baseline_reached_max", "keras", (.1, .6, .55, .5, .4), "max", dict(patience=2, min_delta=0.0,
                                                                                      baseline=.5)))
    c.append(Case("baseline_exact", "keras", (1.0, .5, .6, .7, .8), "min", dict(patience=2, min_delta=0.0,
                                                                                  baseline=.5)))
    c.append(Case("baseline_p0", "keras", (1.0, 1.0, .9), "min", dict(patience=0, min_delta=0.0, baseline=.5)))
    c.append(Case("start_beyond_end", "keras", (1.0, 2.0, 3.0), "min", dict(patience=0, min_delta=0.0,
                                                                              start_from_epoch=5)))
    c.append(Case("start_with_nan", "keras", (NAN, NAN, NAN, 1.0, 1.0), "min", dict(patience=1, min_delta=0.0,
                                                                                      start_from_epoch=2)))
    c.append(Case("start_p0", "keras", (5.0, 1.0, 3.0, 3.0), "min", dict(patience=0, min_delta=0.0,
                                                                           start_from_epoch=2)))
    c.append(Case("restore_best", "keras", (1.0, .9, .8, .85, .82, .81, .79, .80, .80, .80), "min",
                  dict(patience=2, min_delta=0.0, restore_best_weights=True)))
    c.append(Case("restore_nan_first", "keras", (NAN, 1.0, .9, .8), "min",
                  dict(patience=2, min_delta=0.0, restore_best_weights=True)))
    c.append(Case("float32_delta", "keras", (1.0, 0.9, 0.8, 0.7), "min", dict(patience=1, min_delta=0.1)))
    c.append(Case("large_patience", "keras", (1.0, 1.1, 1.2, 1.3), "min", dict(patience=10, min_delta=0.0)))
    # best_epoch is the last counted improvement, not the lowest value: .7 misses .8 by less than .15.
    for restore in (False, True):
        c.append(Case(f"best_epoch_min_delta-r{int(restore)}", "keras", (1.0, .9, .8, .7, .75), "min",
                      dict(patience=2, min_delta=.15, restore_best_weights=restore)))
        c.append(Case(f"best_epoch_baseline_max-r{int(restore)}", "keras", (.1, .3, .2, .25, .2), "max",
                      dict(patience=2, min_delta=0.0, baseline=.5, restore_best_weights=restore)))
    c.append(Case("restore_never_stops", "keras", (1.0, .9, .95, .8), "min",
                  dict(patience=5, min_delta=0.0, restore_best_weights=True)))
    c.append(Case("restore_start_beyond_end", "keras", (1.0, 2.0), "min",
                  dict(patience=0, min_delta=0.0, start_from_epoch=3, restore_best_weights=True)))
    return c


CASES = _table_cases() + _edge_cases() + _targeted_cases()


def _our_params(case):
    """The rule parameters as a user would pass them: None means 'not given' (the default)."""
    return {k: v for k, v in case.params.items() if v is not None}


def _show(values):
    return "[" + ", ".join("nan" if isinstance(v, float) and math.isnan(v) else repr(v) for v in values) + "]"


def _decide(case):
    from logsage.decide.engine import decide_values

    return decide_values(list(case.values), case.library, _our_params(case), mode=case.mode)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_stop_index_matches_library(case):
    library_stop, _ = ORACLES[case.library](list(case.values), mode=case.mode, **case.params)
    ours = _decide(case)
    assert ours.stop_index == library_stop, (
        f"{case.library} {case.params} mode={case.mode} on {_show(case.values)}: "
        f"library stops at {library_stop}, logsage at {ours.stop_index} ({ours.reason})")


def _library_best(case):
    """The library's own answer to "which evaluation is best / kept at the stop".

    HF: `state.best_global_step` at the stop (or the end): what load_best_model_at_end loads
    when every evaluation is saved. Lightning: the evaluation whose value is `best_score`.
    Keras: the callback's `best_epoch` (None when it never saw a value), whatever
    restore_best_weights says.
    """
    return ORACLES[case.library](list(case.values), mode=case.mode, **case.params)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_best_index_matches_library(case):
    library_stop, library_best = _library_best(case)
    ours = _decide(case)
    assert ours.best_index == library_best, (
        f"{case.library} {case.params} mode={case.mode} on {_show(case.values)}: library best "
        f"{library_best} (stop {library_stop}), logsage best {ours.best_index} (stop {ours.stop_index})")


def test_keras_restore_target_is_best_epoch():
    """With restore_best_weights the weights Keras leaves are its best_epoch's (oracle self-check)."""
    for case in CASES:
        if case.library == "keras" and case.params.get("restore_best_weights"):
            run = keras_run(list(case.values), mode=case.mode, **case.params)
            if run.best_epoch is not None:
                assert run.kept_index == run.best_epoch, case.id


@pytest.mark.parametrize("case", [c for c in CASES if c.library == "keras"], ids=lambda c: c.id)
def test_keras_reason_says_which_weights_keras_leaves(case):
    """The reason names the epoch Keras restores (read back from the model's weights after
    `on_train_end`) with restore_best_weights, and says it keeps the last epoch's otherwise."""
    run = keras_run(list(case.values), mode=case.mode, **case.params)
    ours = _decide(case)
    if run.best_epoch is None:
        assert "Keras saw no evaluation" in ours.reason
        return
    if case.params.get("restore_best_weights"):
        assert run.kept_index == run.best_epoch == ours.best_index, case.id
        assert f"Keras restores epoch {run.kept_index} (restore_best_weights=true)" in ours.reason, ours.reason
    else:
        last_trained = run.stop_index if run.stop_index is not None else len(case.values) - 1
        assert run.kept_index == last_trained, case.id
        assert "Keras keeps the last epoch's weights (restore_best_weights=false)" in ours.reason, ours.reason
    assert f"best epoch {run.best_epoch} at step " in ours.reason, ours.reason


def test_keras_restore_best_weights_does_not_change_best_epoch():
    """Oracle self-check: Keras' best_epoch and stop are the same with restore_best_weights on or off."""
    for case in CASES:
        if case.library == "keras":
            params = {k: v for k, v in case.params.items() if k != "restore_best_weights"}
            off = keras_run(list(case.values), mode=case.mode, restore_best_weights=False, **params)
            on = keras_run(list(case.values), mode=case.mode, restore_best_weights=True, **params)
            assert (off.stop_index, off.best_epoch) == (on.stop_index, on.best_epoch), case.id
