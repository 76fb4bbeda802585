"""Re-evaluation (logsage.ship.evaluate) on the real trained tiny run: HF Trainer's eval_loss, one base load, paired test."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from logsage.ship.evaluate import EvalData, EvalSettings, evaluate_checkpoints, paired_test

pytestmark = [pytest.mark.filterwarnings("ignore::FutureWarning")]
EVAL_FILE = Path(__file__).resolve().parents[2] / "examples" / "data" / "tiny_alpaca_eval.jsonl"


def logged_eval_losses(run: Path) -> dict[int, float]:
    state = json.loads((run / "trainer_state.json").read_text())
    return {int(r["step"]): float(r["eval_loss"]) for r in state["log_history"] if "eval_loss" in r}


@pytest.mark.slow
def test_reevaluated_loss_matches_the_logged_eval_loss_with_one_base_load(tiny_run_dir, monkeypatch):
    import transformers

    from logsage.ship.runfacts import manifest_eval_data, read_manifest

    loads = []
    real = transformers.AutoModelForCausalLM.from_pretrained.__func__

    def counting(cls, *args, **kwargs):
        loads.append(str(args[0]))
        return real(cls, *args, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", classmethod(counting))
    manifest = read_manifest(tiny_run_dir)
    data, warnings = manifest_eval_data(manifest, tiny_run_dir)
    assert warnings == [] and data is not None
    settings = EvalSettings.from_manifest(manifest)
    assert settings.batch_size == 3  # the run's per_device_eval_batch_size: batches of 3, 3 and 2 examples
    logged = logged_eval_losses(tiny_run_dir)
    steps = sorted(logged)
    ticks = []
    report = evaluate_checkpoints([(s, tiny_run_dir / f"checkpoint-{s}", "adapter") for s in steps],
                                  base=manifest["model"]["path"], eval_data=data, settings=settings,
                                  progress=lambda label, done, total: ticks.append((done, total)))
    assert len(loads) == 1  # K candidates, one base load
    assert ticks[-1] == (3 * len(steps), 3 * len(steps)) and [d for d, _ in ticks] == list(range(1, len(ticks) + 1))
    for r in report.results:
        assert abs(r.loss - logged[r.step]) <= 1e-3 * abs(logged[r.step]), (r.step, r.loss, logged[r.step])
        assert r.n_examples == 8 and r.perplexity == pytest.approx(math.exp(r.loss))
    assert report.ranked_steps()[0] == min(logged, key=logged.get)

    # The per-example losses agree with the ones the training run itself wrote at each evaluation.
    from logsage.ingest.per_example import read_per_example

    written = read_per_example(tiny_run_dir)
    for r in report.results:
        mine = dict(zip(map(str, r.per_example["id"].tolist()), r.per_example["loss_sum"]))
        theirs = dict(zip(map(str, written[r.step]["id"].tolist()), written[r.step]["loss_sum"]))
        assert mine.keys() == theirs.keys()
        assert all(abs(mine[k] - theirs[k]) <= 1e-4 * max(1.0, abs(theirs[k])) for k in mine)


@pytest.mark.slow
def test_batch_weighting_matters_and_follows_the_batch_size(tiny_run_dir):
    """One batch of 8 is a plain token mean; batches of 3, 3, 2 weight each batch's mean by its examples."""
    from logsage.ingest.per_example import hf_eval_loss

    step = min(logged_eval_losses(tiny_run_dir))
    ck = tiny_run_dir / f"checkpoint-{step}"
    base = json.loads((tiny_run_dir / "logsage_run.json").read_text())["model"]["path"]
    one = evaluate_checkpoints([(step, ck, "adapter")], base=base, eval_data=[str(EVAL_FILE)],
                               settings=EvalSettings(batch_size=8)).results[0]
    three = evaluate_checkpoints([(step, ck, "adapter")], base=base, eval_data=[str(EVAL_FILE)],
                                 settings=EvalSettings(batch_size=3)).results[0]
    per = one.per_example
    assert one.loss == pytest.approx(per["loss_sum"].sum() / per["n_tokens"].sum(), rel=1e-12)
    regrouped = dict(per, batch=np.arange(8) // 3)
    assert three.loss == pytest.approx(hf_eval_loss(regrouped), rel=1e-6)
    assert abs(one.loss - three.loss) > 1e-6  # the weighting really differs on this data


@pytest.mark.slow
def test_a_full_model_checkpoint_is_loaded_on_its_own(tiny_model_dir):
    report = evaluate_checkpoints([(0, tiny_model_dir, "full")], base=None, eval_data=[str(EVAL_FILE)],
                                  settings=EvalSettings(batch_size=4))
    r = report.results[0]
    assert r.n_examples == 8 and math.isfinite(r.loss) and report.base_load_s is None
    assert report.paired is None  # one candidate: nothing to compare


def test_eval_split_must_reproduce_the_recorded_examples(tmp_path):
    from logsage.core.errors import DataError

    train = Path(__file__).resolve().parents[2] / "examples" / "data" / "tiny_alpaca.jsonl"
    data = EvalData(files=[str(train)], split=0.25, seed=0)
    ids = [e.id for e in data.examples()]
    assert len(ids) == 5
    assert [e.id for e in EvalData(files=[str(train)], split=0.25, seed=0, expected_ids=ids).examples()] == ids
    with pytest.raises(DataError, match="differ from the ones the run evaluated"):
        EvalData(files=[str(train)], split=0.25, seed=1, expected_ids=ids).examples()


def _per(values, ids=None):
    values = np.asarray(values, dtype=np.float64)
    n = np.full(values.size, 4)
    return {"id": np.asarray(ids if ids is not None else range(values.size)), "loss_sum": values * n,
            "n_tokens": n, "batch": np.zeros(values.size, dtype=np.int64)}


def test_paired_test_separates_a_consistent_gap_from_noise():
    rng = np.random.default_rng(0)
    base = rng.uniform(1.0, 3.0, 40)
    consistent = paired_test(_per(base), _per(base + 0.2 + rng.normal(0, 0.02, 40)), 10, 20)
    assert consistent["differ"] and consistent["t_test_p"] < 1e-6 and consistent["mean_difference"] < 0
    assert "differ beyond the noise" in consistent["verdict"]
    noise = paired_test(_per(base), _per(base + rng.normal(0, 0.3, 40)), 10, 20)
    assert not noise["differ"] and noise["t_test_p"] > 0.05 and "do not differ" in noise["verdict"]
    same = paired_test(_per(base), _per(base), 10, 20)
    assert same["t_test_p"] == 1.0 and not same["differ"]


def test_paired_test_pairs_by_example_id_not_position():
    a = _per([1.0, 2.0, 3.0, 4.0], ids=["a", "b", "c", "d"])
    b = _per([4.1, 3.1, 2.1, 1.1], ids=["d", "c", "b", "a"])  # the same examples, listed in reverse
    res = paired_test(a, b, 1, 2)
    assert res["n_examples"] == 4 and res["mean_difference"] == pytest.approx(-0.1)
    assert paired_test(_per([1.0]), _per([2.0]), 1, 2) is None
