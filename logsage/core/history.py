"""History: the one normalized record of a training run that every stage shares.

A `History` is what ingest produces from any log format and what replay, scoring,
selection, tuning and reporting consume. It holds

* `series`: one `Series` per metric *as the source wrote it* (`eval/loss`,
  `eval_loss`, `val_loss`...), each with its canonical name (`names.py`), its kind
  (eval / train / test / other), and its points by global step, duplicates already
  resolved (the later write wins) and NaN/inf kept as values;
* `checkpoints`: the inventory of checkpoint folders found on disk, with their
  kind and whether they are whole;
* `cleanups`: a record of every repair made at the boundary (duplicates resolved,
  non-finite values seen, files skipped, truncated records, rounded values, which
  source won when two held the same metric) - nothing is changed silently;
* `meta`: run-level facts the logs state (max_steps, num_train_epochs, runtimes,
  the trainer's own best_metric claim...), and `summary`: final metrics from
  summary files (`all_results.json`), which are not points of any curve.

This module imports nothing from the rest of logsage except `names`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from logsage.core.errors import MetricNotFound
from logsage.core.names import canonical_name, closest, default_mode, kind_of


# `--metric "mean(eval_*_loss)"`: the mean over several eval sets (one eval set silently driving "best" is
# a known HF trap with a dict of eval datasets).
MEAN_OF = re.compile(r"mean\((.+)\)")


@dataclass
class Cleanup:
    """One repair or observation made while reading a log.

    `kind` is one of: ``duplicates`` (steps written more than once; the later write
    won), ``non_finite`` (NaN/inf values kept as evaluations), ``skipped_file``,
    ``truncated`` (a damaged or cut record; everything before it was kept),
    ``rounded`` (the source rounds values), ``source_choice`` (two sources held the
    same metric; the more precise one won), ``dropped_record`` (a record with no
    step, or a null/text value), ``seam`` (a stitch between two runs), ``overlap``
    (several files wrote the same steps), ``final_eval`` (an evaluation after
    training, e.g. of the best model, kept as a run summary, not a curve point),
    ``format_choice`` (several readers could read a file; the most specific did),
    ``sessions`` (a log of several training sessions; which one was read), ``step_choice``
    (how steps were derived when the log has none), ``coerced`` (a value written as text,
    e.g. ``"step": "5"``, read as a number), ``derived`` (a series computed from others:
    YOLO's fitness, ``mean(eval_*_loss)``).
    """

    kind: str
    message: str
    file: str | None = None
    metric: str | None = None
    count: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class Series:
    """The points of one metric, sorted by global step, one value per step."""

    name: str
    steps: np.ndarray  # int64, strictly increasing
    values: np.ndarray  # float64; NaN / +-inf are kept
    canonical: str = ""
    kind: str = ""
    source: str = ""  # file (or files) it came from
    format: str = ""
    wall_times: np.ndarray | None = None  # seconds since epoch, where the source records them
    precision: str = "float64"  # float64 | float32 | rounded

    def __post_init__(self) -> None:
        self.steps = np.asarray(self.steps, dtype=np.int64)
        self.values = np.asarray(self.values, dtype=np.float64)
        if not self.canonical:
            self.canonical = canonical_name(self.name)
        if not self.kind:
            self.kind = kind_of(self.canonical)

    def __len__(self) -> int:
        return int(self.steps.size)

    @property
    def first_step(self) -> int | None:
        return int(self.steps[0]) if self.steps.size else None

    @property
    def last_step(self) -> int | None:
        return int(self.steps[-1]) if self.steps.size else None

    @property
    def n_non_finite(self) -> int:
        return int((~np.isfinite(self.values)).sum())

    @classmethod
    def from_points(
        cls,
        name: str,
        steps: Iterable[int] | np.ndarray,
        values: Iterable[float] | np.ndarray,
        *,
        wall_times: Iterable[float] | np.ndarray | None = None,
        **kw: Any,
    ) -> tuple["Series", int]:
        """Build a series from points in write order; a step written twice keeps its later value.

        Returns the series and the number of earlier writes that were overridden by a
        different value (identical rewrites are not conflicts and are not counted).
        """
        s = np.asarray(steps, dtype=np.int64)
        v = np.asarray(values, dtype=np.float64)
        w = None if wall_times is None else np.asarray(wall_times, dtype=np.float64)
        if s.size == 0:
            return cls(name, s, v, wall_times=w, **kw), 0
        # Stable sort by step, then keep the LAST write of each step.
        order = np.argsort(s, kind="stable")
        s_sorted = s[order]
        last = np.ones(s_sorted.size, dtype=bool)
        last[:-1] = s_sorted[1:] != s_sorted[:-1]
        keep = order[last]
        # Count only overridden writes that disagree with the kept value: HF writes the
        # same epoch in the train and the eval record of one step, which is no conflict.
        kept_value = np.repeat(v[keep], np.diff(np.append(np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]]), s.size)))
        overridden = ~last
        same = (v[order] == kept_value) | (np.isnan(v[order]) & np.isnan(kept_value))
        dups = int((overridden & ~same).sum())
        return cls(name, s[keep], v[keep], wall_times=None if w is None else w[keep], **kw), dups


@dataclass
class Checkpoint:
    """A checkpoint folder found on disk.

    `kind` is ``adapter`` (PEFT LoRA: adapter_config.json + adapter weights),
    ``full`` (model weights and config.json) or ``other`` (only trainer state,
    optimizer, DeepSpeed shards...). `whole` is True when the weights are present,
    their safetensors headers are readable and consistent with the file sizes, and
    an adapter holds at least one non-empty tensor; `problem` says what is wrong
    otherwise. `pickle` is True when the weights are only in pickle files
    (`.bin`/`.pt`), which logsage will not load without an explicit opt-in.
    """

    step: int
    path: str
    kind: str
    whole: bool
    problem: str | None = None
    weights: list[str] = field(default_factory=list)
    pickle: bool = False

    def to_dict(self) -> dict[str, Any]:
        d = {"step": self.step, "path": self.path, "kind": self.kind, "whole": self.whole}
        if self.problem:
            d["problem"] = self.problem
        if self.pickle:
            d["pickle"] = True
        return d


@dataclass
class History:
    """Everything logsage knows about one run."""

    path: str  # the path as the user gave it
    format: str  # detected or forced format(s), e.g. "trainer-state" or "trainer-state+tensorboard"
    series: dict[str, Series] = field(default_factory=dict)
    checkpoints: list[Checkpoint] = field(default_factory=list)
    cleanups: list[Cleanup] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)
    summary: dict[str, float] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    # step -> {"id": array, "loss_sum": array, "n_tokens": array, "batch": array}
    per_example: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)

    # ------------------------------------------------------------------ lookup
    def resolve(self, name: str) -> str:
        """The source name of the series the user means by `name`.

        An exact source name wins; otherwise the canonical alias (`eval_loss` finds
        `eval/loss`); an unknown name raises `MetricNotFound` listing what exists.
        """
        if name in self.series:
            return name
        if MEAN_OF.fullmatch(name):
            return self._derive_mean(name)
        want = canonical_name(name)
        hits = [n for n, s in self.series.items() if s.canonical == want]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:  # prefer the eval series, then the longest
            hits.sort(key=lambda n: (self.series[n].kind != "eval", -len(self.series[n])))
            return hits[0]
        available = sorted(n for n, s in self.series.items() if s.kind in ("eval", "train", "test"))
        # Suggest a series of the kind asked for: an eval metric is never stood in for by the training loss.
        asked = kind_of(want)
        guess = closest(name, [n for n, s in self.series.items() if s.kind == asked or asked == "other"])
        hint = f"; did you mean {guess!r}?" if guess else ""
        raise MetricNotFound(
            f"metric {name!r} not found in {self.path}; available: {', '.join(available) or '(none)'}{hint}"
        )

    def _derive_mean(self, name: str) -> str:
        """`mean(PATTERN)`: the mean over the eval series whose name matches the glob PATTERN
        (`mean(eval_*_loss)`: every eval set's loss), at the steps where all of them were evaluated;
        added to the run as a derived eval series named `name`, and said in a `derived` cleanup."""
        import fnmatch

        pattern = MEAN_OF.fullmatch(name).group(1).strip()  # type: ignore[union-attr]
        members = sorted(n for n, s in self.series.items() if fnmatch.fnmatchcase(n, pattern) and len(s)
                         and s.kind == "eval")
        if not members:
            evals = sorted(n for n, s in self.series.items() if s.kind == "eval")
            raise MetricNotFound(f"{name}: no eval series of {self.path} matches {pattern!r}; eval series: "
                                 f"{', '.join(evals) or '(none)'}")
        kinds = {default_mode(m) for m in members}
        if len(kinds) > 1:
            raise MetricNotFound(f"{name}: {pattern!r} matches series of both directions ({', '.join(members)}); "
                                 "narrow the pattern (e.g. mean(eval_*_loss))")
        common = self.series[members[0]].steps
        for m in members[1:]:
            common = np.intersect1d(common, self.series[m].steps)
        values = np.mean([self.series[m].values[np.searchsorted(self.series[m].steps, common)] for m in members],
                         axis=0) if len(common) else np.array([], dtype=float)
        dropped = sum(len(self.series[m]) for m in members) - len(common) * len(members)
        self.series[name] = Series(name, common, values, canonical=name, kind="eval", source="derived",
                                   format="derived", precision=min((self.series[m].precision for m in members),
                                                                   key=["float64", "float32", "rounded"].index))
        self.cleanups.append(Cleanup("derived", f"{name}: mean of {len(members)} eval series ({', '.join(members)}) "
                                     f"at the {len(common)} steps where all were evaluated"
                                     + (f"; {dropped} point(s) at steps not shared by all left out" if dropped
                                        else ""), metric=name, count=dropped))
        return name

    def metric(self, name: str) -> Series:
        return self.series[self.resolve(name)]

    def primary_eval_metric(self) -> str | None:
        """The series a stopping rule watches by default: the eval loss, else the first eval series."""
        for want in ("eval_loss",):
            for n, s in self.series.items():
                if s.canonical == want and len(s):
                    return n
        evals = [n for n, s in self.series.items() if s.kind == "eval" and len(s)]
        return evals[0] if evals else None

    def train_loss(self) -> Series | None:
        for n, s in self.series.items():
            if s.canonical == "loss" and len(s):
                return s
        return None

    def epoch_at(self, steps: np.ndarray | list[int]) -> np.ndarray:
        """Epoch at each step (interpolated from the `epoch` series; NaN where unknown)."""
        steps = np.asarray(steps, dtype=np.float64)
        ep = next((s for s in self.series.values() if s.canonical == "epoch" and len(s)), None)
        if ep is None:
            return np.full(steps.shape, np.nan)
        return np.interp(steps, ep.steps.astype(np.float64), ep.values, left=np.nan, right=np.nan)

    def checkpoint_at(self, step: int) -> Checkpoint | None:
        for c in self.checkpoints:
            if c.step == step:
                return c
        return None

    @property
    def stated_max_steps(self) -> int | None:
        """The step budget the log itself states (max_steps / total_steps), or None.

        Rules that use training progress must use this one: a budget guessed from
        the last logged step would let a later evaluation change an earlier decision.
        """
        for key in ("max_steps", "total_steps"):
            v = self.meta.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0:
                return int(v)
        return None

    @property
    def max_steps(self) -> int | None:
        """The run's step budget for savings: the stated one, else its last logged step."""
        stated = self.stated_max_steps
        if stated is not None:
            return stated
        last = [step for s in self.series.values() if (step := s.last_step) is not None]
        return max(last) if last else None

    # ------------------------------------------------------------------ output
    def to_pandas(self, form: str = "long") -> Any:
        """The run's points as a pandas DataFrame (pandas is imported here, not by `import logsage`).

        form="long": one row per point, columns step, metric (source name), canonical, kind, value.
        form="wide": one row per step (the index), one column per metric; a step where a
        metric has no point holds NaN (the long form tells a missing point from a logged NaN).
        """
        if form not in ("long", "wide"):
            raise ValueError(f"form must be 'long' or 'wide', not {form!r}")
        try:
            import pandas as pd
        except ModuleNotFoundError:
            from logsage.core.extras import missing_extra_error

            raise missing_extra_error("History.to_pandas", "pandas") from None
        if form == "wide":
            cols = {n: pd.Series(s.values, index=pd.Index(s.steps, name="step")) for n, s in self.series.items()}
            frame = pd.DataFrame(cols) if cols else pd.DataFrame(index=pd.Index([], name="step"))
            frame.index.name = "step"
            return frame.sort_index()
        parts = [pd.DataFrame({"step": s.steps, "metric": n, "canonical": s.canonical, "kind": s.kind,
                               "value": s.values}) for n, s in self.series.items() if len(s)]
        if not parts:
            return pd.DataFrame(columns=["step", "metric", "canonical", "kind", "value"])
        return pd.concat(parts, ignore_index=True)

    def summary_dict(self) -> dict[str, Any]:
        """A JSON-ready description (no NaN tokens): what `logsage ingest --json` prints per run."""
        metrics = {}
        for n, s in self.series.items():
            metrics[n] = {
                "count": len(s),
                "first_step": s.first_step,
                "last_step": s.last_step,
                "canonical": s.canonical,
                "kind": s.kind,
                "non_finite": s.n_non_finite,
                "source": s.source,
                "precision": s.precision,
            }
        primary = self.primary_eval_metric()
        return {
            "path": self.path,
            "format": self.format,
            "files": self.files,
            "metrics": metrics,
            "primary_eval_metric": primary,
            "eval_count": len(self.series[primary]) if primary else 0,
            "checkpoints": [c.to_dict() for c in self.checkpoints],
            "cleanups": [c.to_dict() for c in self.cleanups],
            "warnings": list(self.warnings),
            "meta": json_safe(self.meta),
            "summary": json_safe(self.summary),
        }


def json_safe(obj: Any) -> Any:
    """Replace NaN/inf floats by None (strict JSON) recursively; numpy scalars become Python."""
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, np.ndarray):
        return json_safe(obj.tolist())
    return obj
