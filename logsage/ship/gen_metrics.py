"""Generation metrics: score a decoded prediction against its reference, and test two candidates paired by prompt.

Scorers (`resolve_metric(name)` returns a `Metric`):

* `exact`: 1.0 when the prediction equals the reference after stripping surrounding
  whitespace and collapsing runs of whitespace to one space (case kept), else 0.0;
* `contains`: 1.0 when the (normalised) reference occurs in the (normalised) prediction;
* `rouge-l`: ROUGE-L F-measure of the `rouge-score` package (Google's reimplementation
  of ROUGE-1.5.5; stemming off), in [0, 1];
* `bleu`: sentence BLEU of `sacrebleu` (its defaults, `effective_order=True`), divided by 100;
* `MODULE:FUNCTION` (or `path/to/file.py:FUNCTION`): the user's
  `FUNCTION(prediction, reference) -> float`; higher is better.

rouge-score and sacrebleu are the `gen` extra (`pip install 'logsage[gen]'`); a
missing one is a one-line error naming the extra. A scorer that raises, or returns
something that is not a finite number, is a one-line `DataError` naming the prompt
record and the scorer.

Paired tests (`paired_metric_test`) compare two candidates on the same prompts: for
a 0/1 metric the exact McNemar test (a two-sided binomial test on the discordant
prompts), otherwise a seeded paired bootstrap of the mean difference (the shifted-null
bootstrap test: resampled differences centred at zero, p = share at least as far
from zero as the observed mean difference). scipy and numpy only; nothing here
imports torch.
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from logsage.core.errors import DataError, UsageError

BUILTIN_METRICS = ("exact", "contains", "rouge-l", "bleu")
GEN_EXTRA_HINT = "install the gen extra: pip install 'logsage[gen]'"
DEFAULT_BOOTSTRAP = 10_000
DEFAULT_SEED = 0
LABELS = {"exact": "exact match", "contains": "contains", "rouge-l": "ROUGE-L", "bleu": "BLEU"}


@dataclass
class Metric:
    """A named scorer; `binary` when it only ever returns 0 or 1 (McNemar applies)."""

    name: str
    score_fn: Callable[[str, str], Any]
    binary: bool = False

    @property
    def label(self) -> str:
        return LABELS.get(self.name, self.name)

    def score(self, prediction: str, reference: str, where: str) -> float:
        """The score of one prediction; DataError naming `where` when the scorer fails or returns no number."""
        try:
            value = self.score_fn(prediction, reference)
        except Exception as e:  # the user's code: any exception becomes one line naming the record
            first = (str(e).strip().splitlines() or [""])[0][:160]
            raise DataError(f"{where}: --gen-metric {self.name} raised {type(e).__name__}"
                            f"{': ' + first if first else ''} on this record's prediction {prediction[:40]!r}; "
                            "fix the scorer so that it returns a number for every (prediction, reference)") from None
        if isinstance(value, bool):
            value = float(value)
        try:
            out = float(value)
        except (TypeError, ValueError):
            raise DataError(f"{where}: --gen-metric {self.name} returned {type(value).__name__} {value!r:.40}, "
                            "not a number; make it return a float (higher is better)") from None
        if not math.isfinite(out):
            raise DataError(f"{where}: --gen-metric {self.name} returned {out}; make it return a finite number")
        return out


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _exact(prediction: str, reference: str) -> float:
    return float(normalise(prediction) == normalise(reference))


def _contains(prediction: str, reference: str) -> float:
    return float(normalise(reference) in normalise(prediction))


def _need(module: str, package: str):
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UsageError(f"--gen-metric needs the {package} package, which is not installed; "
                         f"{GEN_EXTRA_HINT}") from None


def _rouge_l() -> Callable[[str, str], float]:
    rouge = _need("rouge_score.rouge_scorer", "rouge-score")
    scorer = rouge.RougeScorer(["rougeL"], use_stemmer=False)
    return lambda prediction, reference: scorer.score(reference, prediction)["rougeL"].fmeasure


def _bleu() -> Callable[[str, str], float]:
    sacrebleu = _need("sacrebleu", "sacrebleu")
    return lambda prediction, reference: sacrebleu.sentence_bleu(prediction, [reference]).score / 100.0


def _user_function(spec: str) -> Callable[[str, str], Any]:
    module_name, _, func_name = spec.rpartition(":")
    if not module_name or not func_name.isidentifier():
        raise UsageError(f"--gen-metric {spec}: use one of {', '.join(BUILTIN_METRICS)} or MODULE:FUNCTION "
                         "(FUNCTION(prediction, reference) -> float)")
    if module_name.endswith(".py"):
        path = Path(module_name)
        if not path.is_file():
            raise UsageError(f"--gen-metric {spec}: no such file {module_name}; give the scorer's file or module")
        loader_spec = importlib.util.spec_from_file_location(f"logsage_user_metric_{path.stem}", path)
        if loader_spec is None or loader_spec.loader is None:  # (a .py file always gets a source loader)
            raise UsageError(f"--gen-metric {spec}: {module_name} cannot be imported as a Python module")
        module = importlib.util.module_from_spec(loader_spec)
        try:
            loader_spec.loader.exec_module(module)
        except Exception as e:
            raise UsageError(f"--gen-metric {spec}: importing {module_name} failed ({type(e).__name__}: "
                             f"{(str(e).splitlines() or [''])[0][:160]}); fix the module") from None
    else:
        added = "" not in sys.path and "." not in sys.path
        if added:  # a console script's sys.path lacks the working folder; a local scorer module lives there
            sys.path.insert(0, "")
        try:
            module = importlib.import_module(module_name)
        except ImportError as e:
            raise UsageError(f"--gen-metric {spec}: cannot import {module_name} ({e}); run from the folder that "
                             "holds it, put it on PYTHONPATH, or give path/to/file.py:FUNCTION") from None
        except Exception as e:
            raise UsageError(f"--gen-metric {spec}: importing {module_name} failed ({type(e).__name__}: "
                             f"{(str(e).splitlines() or [''])[0][:160]}); fix the module") from None
        finally:
            if added:
                sys.path.remove("")
    fn = getattr(module, func_name, None)
    if not callable(fn):
        raise UsageError(f"--gen-metric {spec}: {module_name} has no function {func_name}")
    return fn


def resolve_metric(name: str) -> Metric:
    """The scorer `name` names (built-in or MODULE:FUNCTION); UsageError for an unknown one or a missing extra."""
    key = (name or "").strip().lower()
    if key in ("exact", "exact-match", "em"):
        return Metric("exact", _exact, binary=True)
    if key == "contains":
        return Metric("contains", _contains, binary=True)
    if key in ("rouge-l", "rougel", "rouge_l"):
        return Metric("rouge-l", _rouge_l())
    if key == "bleu":
        return Metric("bleu", _bleu())
    if ":" in name:
        return Metric(name, _user_function(name))
    raise UsageError(f"--gen-metric {name}: unknown metric; use one of {', '.join(BUILTIN_METRICS)} or "
                     "MODULE:FUNCTION (FUNCTION(prediction, reference) -> float)")


# ====================================================================== paired tests
def paired_metric_test(a: np.ndarray, b: np.ndarray, *, binary: bool, seed: int = DEFAULT_SEED,
                       n_boot: int = DEFAULT_BOOTSTRAP) -> dict[str, Any]:
    """Whether per-prompt scores `a` and `b` (the same prompts, in the same order) differ beyond chance.

    Binary scores: exact McNemar (two-sided binomial test on the b01/b10 discordant
    prompts). Otherwise: paired bootstrap of the mean difference, `n_boot` resamples
    from `np.random.default_rng(seed)`.
    """
    from scipy import stats

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError("paired scores must be of the same prompts")
    d = a - b
    out: dict[str, Any] = {"n_prompts": int(a.size), "mean_difference": float(d.mean()) if d.size else 0.0}
    if binary:
        only_a = int(np.sum((a > 0.5) & (b <= 0.5)))
        only_b = int(np.sum((b > 0.5) & (a <= 0.5)))
        n = only_a + only_b
        p = 1.0 if n == 0 else float(stats.binomtest(only_a, n, 0.5).pvalue)
        out.update(test="mcnemar-exact", only_a=only_a, only_b=only_b, p=min(1.0, p))
        return out
    if d.size < 2 or not np.any(d):
        out.update(test="paired-bootstrap", p=1.0, n_boot=n_boot, seed=seed)
        return out
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, d.size, size=(n_boot, d.size))
    means = d[idx].mean(axis=1)
    observed = d.mean()
    p = float(np.mean(np.abs(means - observed) >= abs(observed) - 1e-15))
    out.update(test="paired-bootstrap", p=max(p, 1.0 / n_boot), n_boot=n_boot, seed=seed)
    return out
