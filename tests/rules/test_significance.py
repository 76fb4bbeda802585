"""Golden cases for the significance rule on constructed per-example eval losses.

The per-example records have the layout `logsage train` writes (id, loss_sum,
n_tokens, batch). Improvements are built to be unambiguous for both tests: every
example's loss drops by 0.5 (p ~ 1e-10), while a "no change" evaluation moves half
the examples up and half down by the same amount (p ~ 0.5).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from logsage.core.errors import RuleConfigError
from logsage.rules.significance import paired_p, per_example_losses

from ._helpers import check_golden, decide, golden_params

N = 40
BASE = 2.0 + 0.3 * np.sin(np.arange(N))  # per-token losses of the first evaluation
TOKENS = np.full(N, 10.0)


def record(per_token_loss: np.ndarray, order: np.ndarray | None = None) -> dict[str, np.ndarray]:
    ids = np.arange(N)
    if order is not None:  # the same examples written in another order
        ids, per_token_loss = ids[order], per_token_loss[order]
    return {"id": ids, "loss_sum": per_token_loss * TOKENS[: len(ids)], "n_tokens": TOKENS[: len(ids)].copy(),
            "batch": ids // 8}


WIGGLE = np.where(np.arange(N) % 2 == 0, 0.01, -0.01)
STEPS = [10, 20, 30, 40]
# step 20 is much better; 30 and 40 only wiggle around it while their mean eval loss creeps down.
PER_EXAMPLE = {10: record(BASE), 20: record(BASE - 0.5), 30: record(BASE - 0.5 + WIGGLE),
               40: record(BASE - 0.5 - WIGGLE, order=np.random.default_rng(0).permutation(N))}
EVAL_LOSS = [2.0, 1.5, 1.499, 1.498]  # plain patience would keep resetting on these

GOLDEN: dict[str, list[tuple]] = {
    "significance": [
        (EVAL_LOSS, {"patience": 2}, "min", 3, 1, {"steps": STEPS, "per_example": PER_EXAMPLE}),
        (EVAL_LOSS, {"patience": 2, "test": "ttest"}, "min", 3, 1, {"steps": STEPS, "per_example": PER_EXAMPLE}),
        (EVAL_LOSS, {"patience": 3}, "min", None, 1, {"steps": STEPS, "per_example": PER_EXAMPLE}),
        # a second real improvement at step 30 resets the count
        (EVAL_LOSS, {"patience": 1}, "min", None, 2,
         {"steps": STEPS[:3], "per_example": {10: record(BASE), 20: record(BASE - 0.5), 30: record(BASE - 1.0)}}),
    ],
}


@pytest.mark.parametrize("rule,case", golden_params(GOLDEN))
def test_golden(rule, case):
    values, params, mode, stop, best, kw = case
    kw = dict(kw)
    values = values[: len(kw["steps"])]
    check_golden(rule, (values, params, mode, stop, best, kw))


def test_plain_patience_would_not_stop_on_the_same_means():
    assert decide(EVAL_LOSS, "patience", {"patience": 2}, steps=STEPS).stop_index is None


def test_paired_p_pairs_by_id_and_matches_scipy():
    def per_token(rec):  # rows back in id order
        order = np.argsort(rec["id"])
        return rec["loss_sum"][order] / rec["n_tokens"][order]

    new, old = PER_EXAMPLE[20], PER_EXAMPLE[10]
    p, pairs = paired_p(per_example_losses(new), per_example_losses(old), "wilcoxon")
    assert pairs == N
    assert p == pytest.approx(stats.wilcoxon(per_token(new), per_token(old), alternative="less").pvalue)
    # rows written in another order pair the same way
    shuffled = PER_EXAMPLE[40]
    p, _ = paired_p(per_example_losses(shuffled), per_example_losses(new), "ttest")
    assert p == pytest.approx(stats.ttest_rel(per_token(shuffled), per_token(new), alternative="less").pvalue)
    assert p > 0.05


def test_rows_with_the_same_id_are_pooled():
    rec = {"id": np.array([1, 1, 2]), "loss_sum": np.array([3.0, 1.0, 4.0]), "n_tokens": np.array([2.0, 2.0, 0.0])}
    ids, loss = per_example_losses(rec)
    assert ids.tolist() == [1] and loss.tolist() == [1.0]  # (3+1)/(2+2); id 2 has no tokens


def test_missing_per_example_data_is_undecidable_and_names_logsage_train():
    out = decide(EVAL_LOSS, "significance", steps=STEPS)
    assert not out.decidable and "logsage train" in out.reason
    out = decide(EVAL_LOSS, "significance", steps=STEPS, per_example={10: PER_EXAMPLE[10]})
    assert not out.decidable and "per_example_eval_loss.jsonl" in out.reason


@pytest.mark.parametrize("params,message", [
    ({"test": "mannwhitney"}, "test must be one of wilcoxon, ttest, got 'mannwhitney'"),
    ({"alpha": 1.5}, "alpha must be in (0, 1), got 1.5"),
    ({"patience": -1}, "patience must be >= 0, got -1"),
])
def test_bad_parameters_are_rejected_with_the_value(params, message):
    with pytest.raises(RuleConfigError) as err:
        decide([1.0, 0.9], "significance", params)
    assert message in str(err.value)
