"""Canonical metric names: one alias table for every log format.

Each source writes the same quantity under its own name (`eval_loss` in HF's
`log_history`, `eval/loss` in its TensorBoard events, `val_loss` in Lightning and
Keras, `Validation Loss` in a model card). `canonical_name` maps a written name to
the HF `log_history` spelling, which is the one most fine-tuners know:

=====================================  =====================
written by the source                  canonical
=====================================  =====================
eval/loss, val_loss, val/loss,          eval_loss
valid_loss, validation_loss,
Validation Loss, ptl/val_loss
eval/<m>, val_<m>, Validation <M>       eval_<m>
eval_<set>_loss (several eval sets)     eval_<set>_loss (kept)
train/loss, train_loss_step,            loss
Training Loss, train_loss (Lightning)
train/<m>, train_<m>_step               <m>
lr, train/learning_rate                 learning_rate
train/epoch, Epoch                      epoch
=====================================  =====================

`kind_of` says whether a canonical name is an evaluation series (`eval`), a
training series (`train`), a test-time series (`test`) or bookkeeping
(`other`: epoch, runtimes, throughput, step counters). TRL PPO's value-head metrics
(`val/ratio`, `val/clipfrac_avg`...) are training series, not validation ones.

`direction` says whether lower or higher is better for a name, and why. RL and preference
trainers (TRL / ms-swift DPO, ORPO, KTO, PPO, GRPO) log many metrics whose direction the
plain rule (losses and errors `min`, anything else `max`) gets wrong; a table fixes them:

=============================================================  =====  ==========================
metric (any eval_/eval/ / train/ prefix)                       mode   why
=============================================================  =====  ==========================
kl, objective/kl, policy/approxkl_avg, *_kl, kl_avg            min    KL divergence (drift)
completions/clipped_ratio, clip_ratio/*, *clipfrac*            min    clipped fraction
frac_reward_zero_std                                           min    groups with no signal
val/ratio_var                                                  min    policy-update variance
rewards/rejected, logps/rejected, logits/rejected              min    the rejected answer
rewards/chosen, logps/chosen, logits/chosen                    max    the chosen answer
rewards/margins, rewards/accuracies, log_odds_*                max    preference separation
reward, rewards/<func>/mean, objective/rlhf_reward, scores     max    reward
objective/entropy, policy/entropy_avg                          max    entropy (TRL PPO docs)
=============================================================  =====  ==========================
"""

from __future__ import annotations

import difflib
import re

# Exact spellings that do not follow the prefix rules below.
_EXACT = {
    "validation loss": "eval_loss",
    "training loss": "loss",
    "train loss": "loss",
    "lr": "learning_rate",
    "epoch": "epoch",
    "step": "step",
    "train_loss": "loss",
    "train_loss_step": "loss",
    "train/loss": "loss",
    "train/train_loss": "train_loss_mean",
}

_BOOKKEEPING = re.compile(
    r"(runtime|samples_per_second|steps_per_second|_per_second|total_flos|flos|"
    r"^epoch$|^step$|global_step|num_tokens|num_input_tokens_seen|memory|train_speed|"
    r"elapsed|remaining|percentage|throughput|total_tokens|model_preparation_time|^hp_metric$|"
    r"epoch_time)"
)


def _snake(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip()).lower()


# TRL PPOTrainer's value-function metrics: "val/" there is the value head, not validation.
_PPO_VALUE_HEAD = {"val/clipfrac_avg", "val/ratio", "val/ratio_var", "val/num_eos_tokens"}


def canonical_name(name: str) -> str:
    """Map a metric name as a source wrote it to logsage's canonical spelling.

    >>> canonical_name("eval/loss"), canonical_name("val_loss"), canonical_name("train/loss")
    ('eval_loss', 'eval_loss', 'loss')
    """
    raw = name.strip()
    low = raw.lower()
    if low in _EXACT:
        return _EXACT[low]
    # Lightning's project prefix, e.g. "ptl/val_loss".
    if low.startswith("ptl/"):
        return canonical_name(raw[4:])
    if low in _PPO_VALUE_HEAD:
        return "value/" + low[len("val/"):]
    for prefix in ("eval/", "eval_", "val/", "val_", "valid/", "valid_", "validation/", "validation_"):
        if low.startswith(prefix):
            rest = raw[len(prefix):]
            return "eval_" + _snake(rest)
    if low.startswith("validation "):
        return "eval_" + _snake(raw[len("validation "):])
    if low.startswith("test/") or low.startswith("test_"):
        return "test_" + _snake(raw[5:])
    if low.startswith("predict_") or low.startswith("predict/"):
        return "predict_" + _snake(raw[8:])
    if low.startswith("train/"):
        rest = raw[len("train/"):]
        return canonical_name(rest) if rest.lower() not in ("loss",) else "loss"
    if low.startswith("train_") and low.endswith("_step"):
        return _snake(raw[len("train_"):-len("_step")])
    return _snake(raw)


def kind_of(canonical: str) -> str:
    """`eval`, `train`, `test` or `other` for a canonical metric name."""
    if _BOOKKEEPING.search(canonical):
        return "other"
    if canonical.startswith("eval_"):
        return "eval"
    if canonical.startswith("test_") or canonical.startswith("predict_"):
        return "test"
    return "train"


# (pattern on the name without its eval_/eval/ / train/ / test_ prefix, mode, why); first match wins.
_DIRECTIONS = [
    (r"(^|[/_])kl($|_avg$|_mean$)|approxkl", "min", "a KL divergence (lower: closer to the reference policy)"),
    (r"clipped_ratio|clip_ratio|clipfrac", "min", "a clipped fraction (lower: fewer clipped completions/updates)"),
    (r"frac_reward_zero_std", "min", "the fraction of GRPO groups with zero reward spread (no learning signal)"),
    (r"ratio_var$", "min", "the variance of the policy-update ratio"),
    (r"(rewards|logps|logits)/rejected", "min", "the rejected answer's reward/log-prob (it should fall)"),
    (r"(rewards|logps|logits)/chosen", "max", "the chosen answer's reward/log-prob (it should rise)"),
    (r"rewards/margins|rewards/accuracies|log_odds", "max", "the preference margin/accuracy"),
    (r"(^|/)(reward|rewards|rlhf_reward|scores)(/|$|_mean$)|^rewards/.*/mean$", "max", "a reward"),
    (r"entropy", "max", "the policy entropy (TRL: keep it up)"),
]
_LOSS_LIKE = r"(loss|error|err$|_err_|perplexity|ppl|wer$|_wer|cer$|_cer|mse|mae|rmse|nll|distance)"


def direction(name: str) -> tuple[str, str]:
    """(`min` or `max`, why) for a metric name: the RL/preference table first, then the plain rule."""
    low = canonical_name(name)
    bare = re.sub(r"^(eval_|eval/|train/|test_|value/)", "", low)
    for pattern, mode, why in _DIRECTIONS:
        if re.search(pattern, bare):
            return mode, why
    if re.search(_LOSS_LIKE, low):
        return "min", "a loss/error-like name"
    return "max", "not a loss/error-like name (the default)"


def default_mode(name: str) -> str:
    """`min` for losses, errors, perplexities, KL divergences, clipped fractions, the rejected
    answer's rewards and the like; `max` otherwise (see `direction` and the table above).

    Unlike HF's `greater_is_better` default (True for anything not ending in
    "loss"), error-like names such as `eval_wer` or `eval_perplexity` are `min`.
    """
    return direction(name)[0]


def closest(name: str, choices: list[str]) -> str | None:
    """The closest available name (for 'did you mean' in errors)."""
    canon = {canonical_name(c): c for c in choices}
    hit = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    if hit:
        return hit[0]
    hit = difflib.get_close_matches(canonical_name(name), list(canon), n=1, cutoff=0.5)
    return canon[hit[0]] if hit else None
