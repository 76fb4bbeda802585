"""The significance rule: patience where an improvement must pass a paired test on per-example losses.

`logsage train` writes each evaluation's per-example losses
(checkpoint-N/per_example_eval_loss.jsonl); the replay passes them in
`RuleInput.per_example[step]` as arrays `id`, `loss_sum`, `n_tokens` (and `batch`,
unused here). An evaluation counts as an improvement only when its per-example
losses are significantly lower than those of the best checkpoint so far, paired
by example id — so noise in the mean eval loss does not reset patience.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from logsage.rules.common import (
    at_least,
    best_phrase,
    evals,
    num,
    require,
    undecidable,
)
from logsage.rules.base import Outcome, RuleInput, rule

TESTS = ("wilcoxon", "ttest")
MISSING = ("rule significance needs per-example eval losses written by `logsage train` "
           "(checkpoint-N/per_example_eval_loss.jsonl)")


def per_example_losses(record: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(sorted unique ids, mean loss per token for each) from one evaluation's per-example record.

    Rows with the same id are pooled (their loss sums and token counts added);
    ids with no tokens or a non-finite loss are dropped.
    """
    ids = np.asarray(record["id"])
    loss_sum = np.asarray(record["loss_sum"], dtype=np.float64)
    n_tokens = np.asarray(record["n_tokens"], dtype=np.float64)
    uniq, inverse = np.unique(ids, return_inverse=True)
    sums = np.bincount(inverse, weights=loss_sum, minlength=uniq.size)
    toks = np.bincount(inverse, weights=n_tokens, minlength=uniq.size)
    with np.errstate(divide="ignore", invalid="ignore"):
        loss = sums / toks
    keep = (toks > 0) & np.isfinite(loss)
    return uniq[keep], loss[keep]


def paired_p(new: tuple[np.ndarray, np.ndarray], old: tuple[np.ndarray, np.ndarray], test: str) -> tuple[float, int]:
    """(one-sided p-value for 'new losses are lower than old', number of pairs), pairing by id.

    p is 1 when there are fewer than 2 pairs or the test cannot run (all
    differences zero).
    """
    from scipy import stats

    _, i_new, i_old = np.intersect1d(new[0], old[0], assume_unique=True, return_indices=True)
    a, b = new[1][i_new], old[1][i_old]
    if a.size < 2:
        return 1.0, int(a.size)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        # scipy warns on near-identical samples (a constant shift); the p-value is still what we want.
        warnings.simplefilter("ignore", RuntimeWarning)
        try:
            if test == "wilcoxon":
                if not np.any(a != b):
                    return 1.0, int(a.size)
                p = stats.wilcoxon(a, b, alternative="less").pvalue
            else:
                p = stats.ttest_rel(a, b, alternative="less").pvalue
        except ValueError:
            return 1.0, int(a.size)
    p = float(p)
    return (p if math.isfinite(p) else 1.0), int(a.size)


def _validate(*, test: str, alpha: float, patience: int) -> None:
    require("significance", test in TESTS, f"test must be one of {', '.join(TESTS)}, got {test!r}")
    require("significance", alpha is not None and 0.0 < alpha < 1.0, f"alpha must be in (0, 1), got {alpha!r}")
    at_least("significance", "patience", patience, 0)


@rule("significance", reference="scipy 1.x scipy.stats.wilcoxon / scipy.stats.ttest_rel on per-example eval "
                                "losses against the best checkpoint (cf. optuna 4.x optuna.pruners.WilcoxonPruner)",
      needs=("per_example",), choices={"test": TESTS}, validate=_validate,
      # The usual levels 0.01-0.1 with patience 1-5; runs without per-example losses cannot be judged.
      grid={"alpha": [0.01, 0.05, 0.1], "patience": [1, 2, 3, 5]})
def significance(x: RuleInput, *, test: str = "wilcoxon", alpha: float = 0.05, patience: int = 3) -> Outcome:
    """Significance: patience where an improvement must be a significant paired gain on per-example losses.

    The first evaluation with per-example data becomes the best. Each later one is
    paired by example id with the best checkpoint so far and tested one-sided
    ("its losses are lower"); p < alpha makes it the new best and resets the count,
    otherwise the count grows; the stop comes when the count reaches patience. The
    test is always on per-example losses (loss_sum / n_tokens, lower is better),
    whatever metric is monitored. Evaluations without per-example data are skipped
    (they neither count nor reset). best_index is the best (significant) evaluation.

    Args:
        test: wilcoxon (signed-rank test on the paired differences, zero differences
            dropped) or ttest (paired t-test).
        alpha: significance level; an improvement needs the one-sided p-value strictly
            below it. Must be in (0, 1).
        patience: evaluations without a significant improvement before stopping; the
            stop comes when the count reaches it. Must be >= 0.
    """
    _validate(test=test, alpha=alpha, patience=patience)
    # The evidence is the per-example losses, not the mean metric, so a NaN mean does not
    # make the series undecidable (its per-example losses are judged on their own).
    steps = x.steps.tolist()
    have = [t for t, s in enumerate(steps) if s in x.per_example]
    if not have:
        return undecidable(MISSING)
    if len(have) < 2:
        return undecidable(f"{MISSING}; only {evals(len(have))} of {x.metric} has them, the test needs 2")
    best_index: int | None = None
    best_losses: tuple[np.ndarray, np.ndarray] | None = None
    count = 0
    last_p = math.nan
    for t in have:
        losses = per_example_losses(x.per_example[steps[t]])
        if best_losses is None:
            if losses[0].size:
                best_index, best_losses = t, losses
            continue
        last_p, pairs = paired_p(losses, best_losses, test)
        if last_p < alpha:
            best_index, best_losses, count = t, losses, 0
            continue
        count += 1
        if count >= patience and t >= x.not_before:
            return Outcome(t, best_index,
                           f"{x.metric} per-example losses did not improve significantly ({test}, one-sided "
                           f"p {num(last_p)} >= {num(alpha)} on {pairs} pairs) for {evals(count)} (patience "
                           f"{patience}) at step {steps[t]}; {best_phrase(x, best_index)}")
    skipped = x.values.size - len(have)
    note = f", {skipped} without per-example data skipped" if skipped else ""
    return Outcome(None, best_index,
                   f"{x.metric} per-example losses never went {evals(patience)} without a significant gain "
                   f"({test}, alpha {num(alpha)}) in {evals(len(have))}{note}; {best_phrase(x, best_index)}")
