"""The multi-metric rule: patience on a weighted composite of several metrics, or "all must stall".

From the fine-tuning guides: a composite
`Σ w_i · s_i` where s_i is the value of a min metric and the negated value of a
max metric (so lower is better), with patience on the composite; and a
commenter's combinator that keeps training while any metric still improves.
The replay passes the series named in `metrics` through `RuleInput.extra`
(`parse_metrics` says which).
"""

from __future__ import annotations

import math

import numpy as np

from logsage.core.names import canonical_name
from logsage.rules.common import (
    at_least,
    evals,
    finite_at_least,
    num,
    require,
    shown,
    undecidable,
)
from logsage.rules.base import Outcome, RuleInput, rule
from logsage.rules.patience import no_improvement_scan

COMBINES = ("weighted", "all")
EXAMPLE = "metrics=eval_loss:min:0.7;eval_accuracy:max:0.3"


def parse_metrics(spec: str) -> list[tuple[str, str | None, float]]:
    """Parse "eval_loss:min:0.7;eval_accuracy:max:0.3" into [(name, mode or None, weight)].

    Metrics are separated by ';' (or '|'; ',' already separates rule parameters).
    Each is `name[:min|max][:weight]`; a missing mode is the series' own, a missing
    weight is 1. Raises RuleConfigError on a malformed entry.
    """
    from logsage.core.errors import RuleConfigError

    out: list[tuple[str, str | None, float]] = []
    for item in spec.replace("|", ";").split(";"):
        item = item.strip()
        if not item:
            continue
        name, *rest = [part.strip() for part in item.split(":")]
        mode: str | None = None
        weight = 1.0
        if not name or len(rest) > 2:
            raise RuleConfigError(f"rule multi: bad metric {item!r}; write name:mode:weight, e.g. {EXAMPLE}")
        for part in rest:
            if part in ("min", "max"):
                mode = part
                continue
            try:
                weight = float(part)
            except ValueError:
                raise RuleConfigError(
                    f"rule multi: bad metric {item!r}: {part!r} is neither min/max nor a weight; e.g. {EXAMPLE}"
                ) from None
            if not (math.isfinite(weight) and weight >= 0):
                raise RuleConfigError(f"rule multi: weight of {name} must be a finite number >= 0, got {part}")
        out.append((name, mode, weight))
    if out and not any(w > 0 for _, _, w in out):
        raise RuleConfigError(f"rule multi: at least one weight must be > 0 in {spec!r}")
    return out


def _find(x: RuleInput, name: str) -> tuple[np.ndarray, str] | None:
    """The oriented series and its mode for a metric name: the monitored one, or one in x.extra.

    The replay's x.extra may resolve names lazily and raise MetricNotFound (listing
    the run's metrics) for an unknown one; that error is left to the caller.
    """
    want = canonical_name(name)
    if name == x.metric or want == canonical_name(x.metric):
        return x.values, x.mode
    try:
        return x.extra[name]
    except KeyError:
        pass
    for key, series in list(x.extra.items()):
        if canonical_name(key) == want:
            return series
    return None


def _validate(*, metrics: str, normalize: bool, combine: str, patience: int, min_delta: float) -> None:
    parse_metrics(metrics)
    require("multi", combine in COMBINES, f"combine must be one of {', '.join(COMBINES)}, got {combine!r}")
    at_least("multi", "patience", patience, 0)
    finite_at_least("multi", "min_delta", min_delta, 0.0)


@rule("multi", reference="Goodfellow, Bengio & Courville 2016, Deep Learning, Algorithm 7.1 on a weighted "
                         "composite of metrics, or on each metric with a stop when all have stalled",
      needs=("extra",), choices={"combine": COMBINES}, validate=_validate,
      # Which metrics to combine and how belongs to the user's runs: no default fits every run.
      needs_value="metrics=eval_loss:min:0.7;eval_accuracy:max:0.3")
def multi(x: RuleInput, *, metrics: str = "", normalize: bool = False, combine: str = "weighted",
          patience: int = 7, min_delta: float = 0.0) -> Outcome:
    """Multi-metric: patience on a weighted composite of several metrics, or stop only when all stall.

    The composite is Σ w·s where s is the metric (min) or its negation (max), so
    lower is better. Without normalize the metric with the larger scale dominates.
    A non-finite component makes the evaluation a non-improvement. best_index is the
    best composite evaluation at the stop (also under combine=all). The guide's
    min_epochs 10 maps to the generic min_evals=10.

    Args:
        metrics: the metrics as name:mode:weight separated by ';', e.g.
            eval_loss:min:0.7;eval_accuracy:max:0.3; mode defaults to the series' own,
            weight to 1. Required.
        normalize: divide each metric by the absolute value of its first finite value,
            so that weights compare metrics of different scales; the reason says which is used.
        combine: weighted (patience on the composite) or all (stop only when every
            metric has gone `patience` evaluations without improving by more than min_delta).
        patience: evaluations without improvement before stopping; the stop comes when
            the count reaches it. Must be >= 0.
        min_delta: an improvement must beat the best by more than this (a gain equal to
            it counts as no improvement), in composite units (weighted) or each metric's
            (normalized) units (all). Must be >= 0.
    """
    _validate(metrics=metrics, normalize=normalize, combine=combine, patience=patience, min_delta=min_delta)
    spec = parse_metrics(metrics)
    if not spec:
        return undecidable(f"rule multi needs the metrics to combine; set {EXAMPLE}")
    n = int(x.values.size)
    if n < 2:
        return undecidable(f"only {evals(n)}; rule multi needs at least 2")
    parts: list[list[float]] = []
    words: list[str] = []
    for name, mode, weight in spec:
        found = _find(x, name)
        if found is None:
            have = ", ".join([x.metric, *x.extra]) or "none"
            return undecidable(f"rule multi: metric {name} is not among the series given (have {have}); "
                               f"name a logged metric in metrics=")
        oriented, own_mode = found
        use_mode = mode or own_mode
        vals = (-oriented if use_mode != own_mode else oriented).tolist()
        if len(vals) != n:
            return undecidable(f"rule multi: {name} has {len(vals)} values, not one per evaluation of {x.metric}")
        scale = 1.0
        if normalize:
            first = next((v for v in vals if math.isfinite(v)), None)
            if first is None or first == 0.0:
                return undecidable(f"rule multi: cannot normalize {name}: its first finite value is "
                                   f"{num(first)}; use normalize=false")
            scale = abs(first)
        parts.append([v / scale for v in vals])
        sign = "-" if use_mode == "max" else ""
        words.append(f"{num(weight)}×{sign}{name}" + (f"/{num(scale)}" if normalize else ""))
    weights = [w for _, _, w in spec]
    composite = [sum(w * p[t] for w, p in zip(weights, parts)) for t in range(n)]
    # (Only the weighted form needs a finite composite; "all" judges each metric on its own,
    # and asking about the whole series here would let later evaluations decide.)
    if combine == "weighted" and not any(math.isfinite(c) for c in composite):
        return undecidable(f"rule multi: the composite {' + '.join(words)} has no finite value")
    how = f"composite {' + '.join(words)} ({'normalized by first values' if normalize else 'not normalized'})"
    if combine == "weighted":
        s = no_improvement_scan(composite, [patience] * n, [min_delta] * n, not_before=x.not_before)
        stop, best, why = s.stop, s.best_index, f"did not improve by more than {num(min_delta)} for {evals(s.count)}"
    else:
        stop, why = _all_stall(parts, patience, min_delta, x.not_before)
        end = stop if stop is not None else n - 1
        best = no_improvement_scan(composite[: end + 1], [n + 1] * (end + 1), [0.0] * (end + 1)).best_index
    best_words = (f"best composite {num(composite[best])} at step {int(x.steps[best])} "
                  f"({x.metric} {shown(x, best)})" if best is not None else "no finite composite")
    if stop is not None:
        return Outcome(stop, best, f"{how} {why} (patience {patience}, combine={combine}) at step "
                                   f"{int(x.steps[stop])}; {best_words}")
    return Outcome(None, best, f"{how} never ran out of patience {patience} (combine={combine}) in "
                               f"{evals(n)}; {best_words}")


def _all_stall(parts: list[list[float]], patience: int, min_delta: float, not_before: int) -> tuple[int | None, str]:
    """Stop at the first evaluation where every metric has gone `patience` evaluations without improving."""
    m = len(parts)
    best = [math.inf] * m
    seen = [False] * m
    count = [0] * m
    need = max(patience, 1)  # at least the current evaluation improved none of them
    for t in range(len(parts[0])):
        for i in range(m):
            v = parts[i][t]
            if math.isfinite(v) and (not seen[i] or best[i] - v > min_delta):
                best[i], seen[i], count[i] = v, True, 0
            elif seen[i]:  # counting starts at a metric's first finite value
                count[i] += 1
        if t >= not_before and min(count) >= need:
            return t, (f"saw every metric go at least {evals(min(count))} without improving by more than "
                       f"{num(min_delta)}")
    return None, ""
