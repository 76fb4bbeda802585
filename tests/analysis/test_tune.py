"""Tune: rules x grids over past runs, an explicit objective, leave-one-run-out, defaults compared."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from logsage.cli.main import cli
from logsage.core.errors import RuleConfigError, UsageError
from logsage.core.history import History, Series
from logsage.rules.base import get_rule
from logsage.analysis.tune import COMMON_DEFAULTS, DEFAULT_GRIDS, DEFAULT_OBJECTIVE, Objective, parse_objective, tune
from corpus import REAL_RUNS, needs_corpus, run_dirs

REAL = REAL_RUNS


# ---------------------------------------------------------------------- synthetic runs with a known best rule
def _plateau_run(seed: int, k: int, tail: int, path: str) -> History:
    """A run whose only good patience is k, by construction.

    The loss falls to 1.0, then sits on a noisy plateau of k-1 evaluations that are all
    worse than 1.0, then dips to a late best of 0.8, then rises for `tail` evaluations.
    Patience <= k-1 stops on the plateau and keeps 1.0 (relative regret 0.25); patience
    >= k reaches the dip (regret 0) and stops `patience` evaluations after it, so k is
    the patience that saves the most without regret.
    """
    rng = np.random.default_rng(seed)
    descent = [2.0, 1.7, 1.4, 1.2, 1.0]
    plateau = list(1.05 + rng.uniform(0.0, 0.03, size=k - 1))
    rise = list(0.8 + 0.01 * np.arange(1, tail + 1) + rng.uniform(0.0, 0.004, size=tail))
    values = np.array(descent + plateau + [0.8] + rise)
    steps = np.arange(1, values.size + 1) * 50
    h = History(path=path, format="synthetic")
    h.series["eval_loss"] = Series("eval_loss", steps, values)
    h.meta["max_steps"] = int(steps[-1])
    return h


K = 3
SYNTHETIC = [_plateau_run(seed, K, tail, f"synthetic-{seed}") for seed, tail in enumerate([15, 20, 25, 18, 30])]


def test_tune_finds_the_patience_known_by_construction():
    result = tune(SYNTHETIC, rules=["hf"])
    rec = result.recommendation
    assert rec["rule"] == "hf" and rec["params"]["patience"] == K and rec["feasible"]
    assert result.in_sample["regret"]["median"] == 0.0 and result.in_sample["regret"]["spread"]["max"] == 0.0
    # Every fold, tuned on the other four runs, finds the same patience and has no regret on the fifth.
    folds = result.leave_one_run_out["folds"]
    assert len(folds) == len(SYNTHETIC)
    assert all(f["params"]["patience"] == K and f["regret_rel"] == 0.0 for f in folds)
    assert result.leave_one_run_out["agreement"] == 1.0


def test_shorter_patience_loses_the_dip_and_longer_patience_saves_less():
    result = tune(SYNTHETIC, rules=["hf:threshold=0"])
    by_patience = {c["params"]["patience"]: c for c in result.candidates}
    assert set(by_patience) == {1, 2, 3, 5, 8}  # the grid's other parameter is pinned by the spec
    for p in (1, 2):
        assert by_patience[p]["median_regret_rel"] == pytest.approx(0.25)
    for p in (5, 8):
        assert by_patience[p]["median_regret_rel"] == 0.0
        assert by_patience[p]["mean_fraction_saved"] < by_patience[K]["mean_fraction_saved"]


def test_max_saved_objective_agrees_on_the_synthetic_runs():
    result = tune(SYNTHETIC, rules=["hf", "patience"], objective="max-saved:max_regret=0")
    assert result.recommendation["params"]["patience"] == K
    assert result.recommendation["objective"] == "max-saved:max_regret=0"


def test_searching_every_rule_does_at_least_as_well_as_the_known_best():
    result = tune(SYNTHETIC)
    rec = next(c for c in result.comparison if c["label"] == "recommended")
    known = next(c for c in result.candidates if c["spec"] == f"hf:patience={K}")
    assert rec["median_regret_rel"] == 0.0
    assert rec["mean_regret_rel"] <= known["mean_regret_rel"]


# ---------------------------------------------------------------------- objective
def test_parse_objective():
    assert parse_objective(None).spec == DEFAULT_OBJECTIVE == "beat-baseline"
    assert "hf:patience=3,threshold=1e-4" in parse_objective(None).describe()
    assert "hf:patience=5" in parse_objective(None, "hf:patience=5").describe()
    o = parse_objective("max-saved:max_regret=0.01")
    assert (o.kind, o.value) == ("max-saved", 0.01)
    assert "mean scale-free regret <= 0.01" in o.describe()
    assert parse_objective("min-regret").value is None
    assert parse_objective("exchange").value == 5.0 and parse_objective("exchange:rate=2").value == 2.0
    assert isinstance(parse_objective(o), Objective)


@pytest.mark.parametrize("spec", ["fastest", "min-regret:max_regret=0.1", "min-regret:min_saved=2",
                                  "max-saved:max_regret=abc", "max-saved:max_regret", "beat-baseline:rate=2",
                                  "exchange:rate=-1"])
def test_bad_objectives_are_usage_errors(spec):
    with pytest.raises(UsageError):
        parse_objective(spec)


def test_infeasible_constraint_is_flagged_not_hidden():
    result = tune(SYNTHETIC, rules=["none", "hf:patience=8"], objective="min-regret:min_saved=0.99")
    assert result.recommendation["feasible"] is False
    assert "no candidate meets the constraint" in result.recommendation["note"]


# ---------------------------------------------------------------------- runs left out
def test_runs_without_the_metric_or_too_short_are_listed():
    no_metric = History(path="train-only", format="synthetic")
    no_metric.series["loss"] = Series("loss", [1, 2, 3], [3.0, 2.0, 1.0])
    short = History(path="two-evals", format="synthetic")
    short.series["eval_loss"] = Series("eval_loss", [10, 20], [1.0, 0.9])
    result = tune([*SYNTHETIC[:3], no_metric, short], rules=["hf"])
    reasons = {e["run"]: e["reason"] for e in result.excluded}
    assert set(reasons) == {"train-only", "two-evals"}
    assert "eval_loss" in reasons["train-only"] or "metric" in reasons["train-only"]
    assert "too short" in reasons["two-evals"]
    assert result.runs == [h.path for h in SYNTHETIC[:3]]


def test_fewer_than_three_runs_gives_no_honest_estimate():
    result = tune(SYNTHETIC[:2], rules=["hf"])
    loo = result.leave_one_run_out
    assert loo["available"] is False and "no honest estimate" in loo["reason"]
    # The in-sample search still runs and, on these runs too, finds the patience known by construction.
    assert result.in_sample["n_runs"] == 2 and result.in_sample["regret"]["spread"]["max"] == 0.0
    assert result.recommendation["params"]["patience"] == K and result.recommendation["feasible"]


def test_bad_rule_or_grid_fails_before_any_work():
    with pytest.raises(RuleConfigError):
        tune(SYNTHETIC, rules=["nosuchrule"])
    with pytest.raises(RuleConfigError, match="not a parameter"):
        tune(SYNTHETIC, rules=["gl"], grid={"patience": [1, 2]})


def test_user_grid_replaces_the_default_grid():
    result = tune(SYNTHETIC, rules=["hf"], grid={"patience": ["1", "3"]})
    assert [c["params"]["patience"] for c in result.candidates] == [1, 3]


def test_default_grids_name_real_parameters_and_defaults_are_candidates():
    for rule, grid in DEFAULT_GRIDS.items():
        info = get_rule(rule)
        names = {p.name for p in info.params}
        assert set(grid) <= names, (rule, set(grid) - names)
    from logsage.decide.engine import expand_rules
    from logsage.rules import rule_spec

    result = tune(SYNTHETIC)
    specs = {c["spec"] for c in result.candidates}
    for label, rule, params in COMMON_DEFAULTS:
        (info, full), = expand_rules([(rule, params)])
        assert rule_spec(info.name, full) in specs, label  # searched, so the recommendation can beat it
        assert any(label in (row["label"], *row["also"]) for row in result.comparison), label


# ---------------------------------------------------------------------- real runs (pinned)
def _real_eval_loss_runs() -> list[str]:
    return [str(p) for p in run_dirs(REAL, "hf_trainer_state") + run_dirs(REAL, "tfevents")]


PINNED_RULES = ["hf", "lightning", "keras", "gl", "up", "pq", "none", "forecast", "fixed", "patience-trend"]
PINNED_SPEC = "forecast:alpha=0.1"
PINNED_FIGURES = (0.0997, 0.5621)


@pytest.fixture(scope="module")
def real_histories():
    from logsage.ingest import load_history

    return [load_history(p) for p in _real_eval_loss_runs()]


@needs_corpus
def test_pinned_recommendation_on_real_runs(real_histories):
    """Pinned once on the bundled runs (hf_trainer_state + tfevents, eval_loss); the independent
    checks below would catch a wrong search even if the pin were updated blindly."""
    result = tune(real_histories, rules=PINNED_RULES, metric="eval_loss")
    assert len(result.runs) == 25 and len(result.excluded) == 3  # the three F1-only runs have no eval loss
    assert all("eval_loss" in e["reason"] for e in result.excluded)
    rec = result.recommendation
    assert rec["spec"] == PINNED_SPEC and rec["objective"] == "beat-baseline"
    assert rec["baseline"] == "hf:patience=3,threshold=0.0001"
    mine = result.comparison[0]
    assert mine["label"] == "recommended"
    assert (round(mine["mean_regret"], 4), round(mine["mean_fraction_saved"], 4)) == PINNED_FIGURES
    # Independent: every row of the comparison that saves at least as much as the baseline was a
    # candidate, so none may lose less of the achievable improvement than the recommendation.
    base = next(r for r in result.comparison if r["label"].startswith("baseline"))
    assert mine["mean_fraction_saved"] >= base["mean_fraction_saved"] - 1e-12
    for row in result.comparison[1:]:
        if row["n_decided"] == row["n_runs"] and row["mean_fraction_saved"] >= base["mean_fraction_saved"]:
            assert mine["mean_regret"] <= row["mean_regret"] + 1e-12, row["label"]
    none = next(r for r in result.comparison if r["rule"] == "none")
    assert none["mean_fraction_saved"] == 0.0 and none["mean_regret"] == 0.0
    loo = result.leave_one_run_out
    assert loo["available"] and len(loo["regret"]["per_run"]) == 25
    assert loo["regret"]["mean"] is not None and loo["regret"]["p90"] is not None


@needs_corpus
def test_max_saved_recommendation_saves_most_among_feasible_defaults(real_histories):
    result = tune(real_histories, rules=PINNED_RULES, metric="eval_loss", objective="max-saved:max_regret=0.05")
    mine = result.comparison[0]
    assert mine["mean_regret"] <= 0.05
    for row in result.comparison[1:]:
        if row["n_decided"] == row["n_runs"] and row["mean_regret"] <= 0.05:
            assert mine["mean_fraction_saved"] >= row["mean_fraction_saved"], row["label"]


def test_exchange_objective_maximises_saved_minus_rate_times_regret(real_histories):
    result = tune(real_histories, rules=PINNED_RULES, metric="eval_loss", objective="exchange:rate=2")
    assert result.recommendation["chosen_by"].startswith("maximise mean fraction of steps saved - 2 x")
    mine = result.comparison[0]
    utility = mine["mean_fraction_saved"] - 2 * mine["mean_regret"]
    for row in result.candidates:
        if row["eligible"]:
            assert utility >= row["mean_fraction_saved"] - 2 * row["mean_regret"] - 1e-12, row["spec"]


def test_nothing_beats_the_baseline_is_said_plainly():
    result = tune(SYNTHETIC, rules=["none", "hf:patience=3,threshold=1e-4"])
    rec = result.recommendation
    assert rec["spec"] == "hf:patience=3,threshold=0.0001" and rec["beats_baseline"] is False
    assert rec["note"].startswith("nothing beats the baseline hf:patience=3,threshold=0.0001")


def test_a_run_without_a_checkpoint_on_disk_never_nulls_a_figure(real_histories):
    """One run keeps only its last checkpoint: it is counted and named in the on-disk figures; the
    save-all figures of every rule are still computed over every run."""
    from logsage.ingest import load_history

    ckpt = REAL.parent.parent.parent / "shared" / "real-runs-2" / "hf_trainer_state" / "alpaca-lora-llama7b-r8-ckpt1400"
    if not ckpt.exists():
        ckpt = Path("/work/shared/real-runs-2/hf_trainer_state/alpaca-lora-llama7b-r8-ckpt1400")
    runs = [*real_histories[:6], load_history(str(ckpt))]
    result = tune(runs, rules=PINNED_RULES)
    for row in result.comparison:
        assert row["mean_regret"] is not None and row["mean_regret_rel"] is not None, row["label"]
    rows_missing = [row for row in result.comparison if row["on_disk"]["n_missing"]]
    assert rows_missing and all(str(ckpt) in row["on_disk"]["missing"] for row in rows_missing)
    from logsage.analysis.tune import partly_judged

    assert any("no usable checkpoint" in line and str(ckpt) in line for line in partly_judged(result.comparison))


@needs_corpus
def test_cli_tune_json_on_real_runs_is_strict_and_fast():
    t0 = time.monotonic()
    res = CliRunner().invoke(cli, ["tune", *_real_eval_loss_runs(), "--metric", "eval_loss", "--json"])
    elapsed = time.monotonic() - t0
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout, parse_constant=lambda c: pytest.fail(f"non-strict JSON token {c}"))
    assert {"recommendation", "leave_one_run_out", "in_sample", "comparison", "excluded"} <= set(doc)
    assert set(doc["recommendation"]) >= {"rule", "params", "objective"}
    loo = doc["leave_one_run_out"]
    for key in ("regret", "saved"):
        assert set(loo[key]) >= {"mean", "p90", "spread", "per_run"} and len(loo[key]["per_run"]) == 25
    assert elapsed < 60, f"tune took {elapsed:.1f}s on {len(_real_eval_loss_runs())} runs"
    assert "left out" in res.stderr  # the F1-only runs are named on stderr, not dropped silently


@needs_corpus
def test_cli_tune_terminal_output_prints_objective_and_honest_estimate():
    runs = [str(REAL / "tfevents" / n) for n in ("lightning-seq2seq-translit-v15", "lightning-seq2seq-translit-v13",
                                                 "lightning-seq2seq-translit-v10")]
    res = CliRunner().invoke(cli, ["tune", *runs, "--rule", "hf", "--objective", "min-regret:min_saved=0.1"])
    assert res.exit_code == 0, res.output
    assert "min-regret:min_saved=0.1" in res.stdout and "Recommendation" in res.stdout
    assert "leave-one-run-out" in res.stdout.lower()


@needs_corpus
def test_cli_usage_errors_exit_2():
    run = str(REAL / "tfevents" / "lightning-seq2seq-translit-v15")
    res = CliRunner().invoke(cli, ["tune", run, "--objective", "fastest"])
    assert res.exit_code == 2 and "unknown objective" in res.stderr
    res = CliRunner().invoke(cli, ["tune", run, "--grid", "patience"])
    assert res.exit_code == 2 and "--grid" in res.stderr


@needs_corpus
def test_cli_with_no_usable_run_exits_1_and_says_why(tmp_path):
    run = str(REAL / "wide_metrics_csv" / "gner-zse-phi3-4b")  # F1 only: no eval loss
    res = CliRunner().invoke(cli, ["tune", run, "--metric", "eval_loss", "--json"])
    assert res.exit_code == 1
    doc = json.loads(res.stdout)
    assert doc["recommendation"] is None and doc["excluded"][0]["run"] == run
    assert "no usable run" in " ".join(doc["notes"])


# ---------------------------------------------------------------------- default grids and their exclusions
def test_every_rule_has_a_default_grid_or_a_documented_exclusion():
    """A registered rule is searched by default over its DEFAULT_GRIDS entry, or is one of the
    USER_VALUE_RULES, which need the user's own value, are documented in `logsage tune --help`,
    and are left out of the whole search with a note (never silently)."""
    from logsage.rules.base import list_rules
    from logsage.analysis.tune import USER_VALUE_RULES

    names = {info.name for info in list_rules()}
    assert names - set(DEFAULT_GRIDS) - set(USER_VALUE_RULES) == set()
    assert set(DEFAULT_GRIDS) & set(USER_VALUE_RULES) == set()
    assert set(USER_VALUE_RULES) <= names
    res = CliRunner().invoke(cli, ["tune", "--help"], terminal_width=400)
    help_text = " ".join(res.output.split())
    for rule, example in USER_VALUE_RULES.items():
        param = example.partition("=")[0]
        assert param in {p.name for p in get_rule(rule).params}
        assert f"{rule}:{param}=" in help_text, (rule, help_text)
    result = tune(SYNTHETIC)
    searched = {c["rule"] for c in result.candidates}
    assert searched == set(DEFAULT_GRIDS) - {"recommended"}  # the learned default is compared, not searched
    for rule in USER_VALUE_RULES:
        assert any(n.startswith(f"rule {rule} not searched: it needs") for n in result.notes), result.notes


@needs_corpus
def test_rules_that_need_the_users_value_are_searched_when_it_is_given():
    result = tune(SYNTHETIC, rules=["all"], grid={"target": ["0.85", "1.1"]})
    assert [c["spec"] for c in result.candidates if c["rule"] == "threshold"] == \
        ["threshold:target=0.85", "threshold:target=1.1"]
    assert not any("threshold" in n for n in result.notes)
    result = tune(SYNTHETIC, rules=["threshold:target=0.85", "hf"])
    assert any(c["rule"] == "threshold" and c["eligible"] for c in result.candidates)
    with pytest.raises(RuleConfigError, match="threshold needs target"):
        tune(SYNTHETIC, rules=["threshold"])
    res = CliRunner().invoke(cli, ["tune", str(REAL / "tfevents" / "lightning-seq2seq-translit-v15"),
                                   "--rule", "multi"])
    assert res.exit_code == 2 and "multi needs metrics" in res.stderr


def test_default_grids_of_divergence_and_significance():
    result = tune(SYNTHETIC, rules=["divergence", "significance"])
    specs = [c["spec"] for c in result.candidates]
    assert specs[:4] == ["divergence", "divergence:ratio=1.5", "divergence:ratio=2", "divergence:ratio=3"]
    assert len([s for s in specs if s.startswith("significance")]) == 12
    # No per-example losses in these runs: significance cannot judge them, and says so.
    sig = next(c for c in result.candidates if c["rule"] == "significance")
    assert sig["n_decided"] == 0 and not sig["eligible"] and sig["mean_regret"] is None


# ---------------------------------------------------------------------- a rule that cannot judge every run
def _without_train_loss() -> list[History]:
    """The synthetic runs with a train loss, except the first (PQ needs one)."""
    runs = []
    for i, h in enumerate(SYNTHETIC):
        c = History(path=h.path, format=h.format, meta=dict(h.meta))
        c.series["eval_loss"] = h.series["eval_loss"]
        if i:
            steps = np.arange(10, int(h.series["eval_loss"].steps[-1]) + 1, 10)
            c.series["loss"] = Series("loss", steps, 2.0 / np.sqrt(steps))
        runs.append(c)
    return runs


def test_partly_judged_rule_is_scored_on_the_runs_it_can_judge():
    runs = _without_train_loss()
    result = tune(runs, rules=["hf"])
    pq = next(r for r in result.comparison if r["rule"] == "pq")
    assert (pq["n_decided"], pq["n_runs"]) == (4, 5)
    assert [m["run"] for m in pq["not_judged"]] == ["synthetic-0"]
    assert "training-loss" in pq["not_judged"][0]["reason"]
    # The figures are those of the four runs it can judge, not NaN.
    alone = next(r for r in tune(runs[1:], rules=["hf"]).comparison if r["rule"] == "pq")
    for key in ("mean_regret", "p90_regret", "mean_regret_rel", "median_fraction_saved", "mean_fraction_saved"):
        assert pq[key] == pytest.approx(alone[key]) and pq[key] is not None, key
    assert not next(c for c in result.candidates if c["rule"] == "hf")["rule"] == "pq"
    json.dumps(result.to_dict(), allow_nan=False)


def test_terminal_comparison_says_how_many_runs_a_row_is_over(capsys):
    from logsage.cli.tune import render

    render(tune(_without_train_loss(), rules=["hf"]).to_dict())
    out = capsys.readouterr().out
    row = next(ln for ln in out.splitlines() if ln.startswith("Prechelt PQ "))
    cells = [c.strip() for c in row.split("│")]
    assert cells[2] == "4/5" and all(c not in ("-", "") for c in cells[3:6]), row  # no blank figures
    assert ("Prechelt PQ (pq): figures over the 4/5 runs it can judge; not judged: pq needs a training-loss "
            "series; synthetic-0 logs none") in out
    assert next(ln for ln in out.splitlines() if ln.startswith("recommended ")).split("│")[2].strip() == "5/5"


@needs_corpus
def test_left_out_run_is_named_once(tmp_path):
    run = str(REAL / "wide_metrics_csv" / "gner-zse-phi3-4b")  # F1 only: no eval loss
    ok = [str(REAL / "tfevents" / n) for n in ("lightning-seq2seq-translit-v15", "lightning-seq2seq-translit-v13")]
    res = CliRunner().invoke(cli, ["tune", run, *ok, "--metric", "eval_loss", "--rule", "hf"])
    assert res.exit_code == 0, res.output
    line = next(ln for ln in res.stderr.splitlines() if "left out" in ln)
    assert line.startswith(f"warning: left out {run}: metric 'eval_loss' not found") and line.count(run) == 1, line
    missing = str(tmp_path / "nope")
    res = CliRunner().invoke(cli, ["tune", missing, *ok, "--rule", "hf", "--json"])
    assert next(ln for ln in res.stderr.splitlines() if "left out" in ln).count(missing) == 1
    assert missing not in json.loads(res.stdout)["excluded"][0]["reason"]  # the run is in its own field


def test_tune_refuses_a_grid_that_sweeps_a_value_the_rule_spec_sets():
    from logsage.core.errors import RuleConfigError

    with pytest.raises(RuleConfigError, match="drop one of them"):
        tune(SYNTHETIC, rules=["hf:patience=3"], grid={"patience": [1, 2]})


def test_a_grid_key_given_twice_is_refused_by_tune_exactly_as_replay_refuses_it():
    run = str(REAL / "tfevents" / "lightning-seq2seq-translit-v15")
    args = [run, "--grid", "patience=1", "--grid", "patience=2"]
    tuned = CliRunner().invoke(cli, ["tune", *args])
    replayed = CliRunner().invoke(cli, ["replay", *args, "--rule", "hf"])
    assert tuned.exit_code == replayed.exit_code == 2
    line = "--grid patience given twice; list all its values in one --grid"
    assert line in tuned.stderr and line in replayed.stderr


def test_tune_imports_no_private_name_of_another_module():
    import ast

    import logsage.analysis.tune as module

    tree = ast.parse(Path(module.__file__).read_text())
    private = [(node.module, a.name) for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
               for a in node.names if a.name.startswith("_") and node.module and node.module.startswith("logsage")]
    assert private == []


def test_the_shipped_learned_default_is_what_tune_chooses_on_the_public_corpora_and_beats_hf_patience_3():
    import importlib.util

    root = Path(__file__).resolve().parents[2]
    shared = root.parent / "shared"
    spec = importlib.util.spec_from_file_location("learn_default", root / "benchmarks" / "learn_default.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    doc = module.learn([str(shared / "real-runs"), str(shared / "real-runs-2")])
    from logsage.rules.recommended import learned

    shipped = learned()
    assert (doc["rule"], doc["params"]) == (shipped["rule"], shipped["params"])
    loo, base = doc["leave_one_run_out"], doc["baseline"]
    assert loo["mean_regret"] == pytest.approx(shipped["leave_one_run_out"]["mean_regret"], abs=1e-9)
    # issue 12's bar: no more regret than HF patience 3 (threshold 1e-4), at least as many steps saved
    assert loo["mean_regret"] <= base["mean_regret"] and loo["mean_saved"] >= base["mean_saved"]
    assert doc["n_runs"] >= 70


def test_progress_goes_to_stderr_only(capsys):
    result = tune(SYNTHETIC, rules=["hf"], progress=True)
    out = capsys.readouterr()
    assert "tune: replaying runs" in out.err and f"{len(SYNTHETIC)}/{len(SYNTHETIC)}" in out.err
    assert out.out == "" and result.recommendation is not None


def test_the_hint_for_a_rule_that_needs_a_value_is_quoted_for_the_shell():
    import shlex

    from logsage.core.errors import RuleConfigError

    with pytest.raises(RuleConfigError) as e:
        tune(SYNTHETIC, rules=["multi"])
    hint = str(e.value).split("--rule ", 1)[1].split(", or search", 1)[0]
    # pasted into a shell, the hint is one argument: the ';' between the metrics does not split it
    assert shlex.split(hint) == ["multi:metrics=eval_loss:min:0.7;eval_accuracy:max:0.3"]
