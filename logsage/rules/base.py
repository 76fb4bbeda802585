"""The rule contract: a registry built from the rules' own signatures.

A rule is a pure, causal function of a metric history. It is declared once:

    @rule("hf", reference="transformers EarlyStoppingCallback (4.47+ / 5.x)",
          aliases={"early_stopping_patience": "patience"})
    def hf(x: RuleInput, *, patience: int = 1, threshold: float = 0.0) -> Outcome:
        '''One-line summary.

        Args:
            patience: evaluations without improvement before stopping.
            threshold: ...
        '''

* keyword-only, annotated, defaulted parameters ARE the schema: `logsage rules`,
  `--rule name:k=v` parsing, type checks, grids and docs are derived from them;
* `x.values` is already oriented so that lower is better (the objective negated a
  `max` metric); rules never branch on the mode;
* the decision at evaluation t may use `x.values[: t + 1]` only (and the other
  arrays up to the same step); no I/O, no printing, no state kept between calls;
* a rule must not stop at an index below `x.not_before` (from the generic
  `min_evals` / `min_steps` parameters every rule accepts); it keeps its state
  running and stops at the first allowed index where its stop condition holds.

Validation raises `RuleConfigError` (a usage error, exit 2) with the bad value.
"""

from __future__ import annotations

import inspect
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from logsage.core.errors import RuleConfigError

# Parameters every rule accepts; applied through RuleInput.not_before.
COMMON_PARAMS = {"min_evals": (int, 0), "min_steps": (int, 0)}


@dataclass(frozen=True)
class RuleInput:
    """What a rule sees: one run's monitored series (and context), oriented lower-is-better."""

    values: np.ndarray  # float64, oriented (negated for max metrics); NaN/inf kept
    steps: np.ndarray  # int64 global step of each evaluation
    mode: str = "min"  # the original direction, for wording reasons only
    metric: str = "eval_loss"
    raw_values: np.ndarray | None = None  # as logged (not negated), for reasons
    epochs: np.ndarray | None = None  # epoch at each evaluation (NaN where unknown)
    train_steps: np.ndarray | None = None  # training-loss series (for Prechelt's PQ)
    train_values: np.ndarray | None = None
    budget_steps: int | None = None  # the run's max_steps (progress = step / budget)
    budget_epochs: float | None = None
    # Other monitored series for multi-metric rules: name -> (oriented values at the same steps, mode)
    extra: dict[str, tuple[np.ndarray, str]] = field(default_factory=dict)
    # step -> per-example losses (see logsage.train), for the significance rule
    per_example: dict[int, dict[str, np.ndarray]] = field(default_factory=dict)
    not_before: int = 0  # first eval index at which a stop is allowed

    def shown(self, i: int) -> float:
        """The value at index i as logged (for reasons)."""
        src = self.raw_values if self.raw_values is not None else self.values
        return float(src[i])


@dataclass(frozen=True)
class Outcome:
    """A rule's answer on one series.

    stop_index: 0-based evaluation index after which training stops (None: never).
    best_index: the evaluation the rule itself regards as best at its stop (what the
        library would restore); None when it has none (all NaN...).
    reason: one line in words, e.g. "eval_loss did not improve by more than 0.0001
        for 3 evaluations; best 1.79 at step 500".
    decidable: False when the rule cannot judge this series (too short, no finite
        values, missing inputs); then stop_index is None and the reason says why.
    """

    stop_index: int | None
    best_index: int | None
    reason: str
    decidable: bool = True


@dataclass(frozen=True)
class Param:
    name: str
    type: type
    default: Any
    help: str = ""
    choices: tuple[str, ...] | None = None


@dataclass(frozen=True)
class RuleInfo:
    name: str
    func: Callable[..., Outcome]
    reference: str
    summary: str
    params: tuple[Param, ...]
    aliases: dict[str, str]
    needs: tuple[str, ...] = ()  # e.g. ("train_loss",) or ("per_example",)
    exact: str | None = None  # library whose semantics it reproduces exactly
    # Checks parameter values (keyword arguments = the rule's params); raises RuleConfigError.
    validate: Callable[..., None] | None = None

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)


REGISTRY: dict[str, RuleInfo] = {}


def _doc_args(doc: str) -> dict[str, str]:
    """Parse a Google-style `Args:` section into {name: help}."""
    out: dict[str, str] = {}
    lines = inspect.cleandoc(doc or "").splitlines()
    in_args = False
    current = None
    for line in lines:
        if line.strip() in ("Args:", "Parameters:"):
            in_args = True
            continue
        if in_args:
            if line and not line.startswith(" "):
                break
            stripped = line.strip()
            if ":" in stripped and not line.startswith("        "):
                current, _, text = stripped.partition(":")
                current = current.split("(")[0].strip()
                out[current] = text.strip()
            elif current and stripped:
                out[current] += " " + stripped
    return out


def rule(
    name: str,
    *,
    reference: str,
    aliases: dict[str, str] | None = None,
    needs: tuple[str, ...] = (),
    exact: str | None = None,
    choices: dict[str, tuple[str, ...]] | None = None,
    validate: Callable[..., None] | None = None,
) -> Callable[[Callable[..., Outcome]], Callable[..., Outcome]]:
    """Register a rule function under `name` (see the module docstring)."""

    def deco(func: Callable[..., Outcome]) -> Callable[..., Outcome]:
        sig = inspect.signature(func)
        hints = typing.get_type_hints(func)
        helps = _doc_args(func.__doc__ or "")
        params = []
        for p in sig.parameters.values():
            if p.kind is not inspect.Parameter.KEYWORD_ONLY:
                continue
            if p.default is inspect.Parameter.empty:
                raise TypeError(f"rule {name}: parameter {p.name} needs a default")
            t = hints.get(p.name, type(p.default))
            origin = typing.get_origin(t)
            if origin is typing.Union or origin is types.UnionType:
                args = [a for a in typing.get_args(t) if a is not type(None)]
                t = args[0]
            params.append(Param(p.name, t, p.default, helps.get(p.name, ""),
                                (choices or {}).get(p.name)))
        summary = (inspect.cleandoc(func.__doc__ or "").splitlines() or [""])[0]
        REGISTRY[name] = RuleInfo(name, func, reference, summary, tuple(params), dict(aliases or {}),
                                  tuple(needs), exact, validate)
        return func

    return deco


# ------------------------------------------------------------------ parameters
def _coerce(rule_name: str, p: Param, raw: Any) -> Any:
    """Parse/validate one value for parameter p (strings from the CLI, or Python values)."""
    t = p.type
    # A parameter whose default is None (`float | None`) accepts "none"/"null" to mean unset.
    if p.default is None and (raw is None or (isinstance(raw, str) and raw.strip().lower() in ("none", "null"))):
        return None
    try:
        if t is bool:
            if isinstance(raw, bool):
                return raw
            s = str(raw).strip().lower()
            if s in ("true", "1", "yes", "on"):
                return True
            if s in ("false", "0", "no", "off"):
                return False
            raise ValueError
        if t is int:
            if isinstance(raw, bool):
                raise ValueError
            if isinstance(raw, int):
                return raw
            f = float(str(raw))
            if not f.is_integer():
                raise ValueError
            return int(f)
        if t is float:
            if isinstance(raw, bool):
                raise ValueError
            v = float(raw) if not isinstance(raw, str) else float(raw.strip())
            return v
        if t is str:
            v = str(raw)
            if p.choices and v not in p.choices:
                raise RuleConfigError(
                    f"rule {rule_name}: {p.name} must be one of {', '.join(p.choices)}, got {v!r}")
            return v
    except RuleConfigError:
        raise
    except (TypeError, ValueError):
        raise RuleConfigError(
            f"rule {rule_name}: {p.name} must be {t.__name__}, got {raw!r}") from None
    return raw


def get_rule(name: str) -> RuleInfo:
    _load_all()
    if name not in REGISTRY:
        import difflib

        guess = difflib.get_close_matches(name, list(REGISTRY), n=1)
        hint = f"; did you mean {guess[0]!r}?" if guess else ""
        raise RuleConfigError(f"unknown rule {name!r}{hint} (see `logsage rules`)")
    return REGISTRY[name]


def resolve_params(info: RuleInfo, given: dict[str, Any]) -> dict[str, Any]:
    """Every parameter of the rule with the user's value (coerced) or the default, plus min_evals/min_steps.

    Unknown names raise RuleConfigError listing the valid ones; the library's own
    long names (aliases) are accepted.
    """
    names = {p.name: p for p in info.params}
    out: dict[str, Any] = {p.name: p.default for p in info.params}
    for k in COMMON_PARAMS:
        out.setdefault(k, COMMON_PARAMS[k][1])
    seen: dict[str, str] = {}
    for key, raw in given.items():
        k = info.aliases.get(key, key)
        if k in seen:
            raise RuleConfigError(f"rule {info.name}: {key!r} and {seen[k]!r} set the same parameter; give it once")
        seen[k] = key
        if k in names:
            out[k] = _coerce(info.name, names[k], raw)
        elif k in COMMON_PARAMS:
            v = _coerce(info.name, Param(k, int, 0), raw)
            if v < 0:
                raise RuleConfigError(f"rule {info.name}: {k} must be >= 0, got {v}")
            out[k] = v
        else:
            valid = ", ".join([*names, *COMMON_PARAMS])
            raise RuleConfigError(f"rule {info.name}: unknown parameter {key!r}; valid: {valid}")
    if info.validate is not None:
        info.validate(**{k: out[k] for k in names})
    return out


def parse_rule_spec(spec: str) -> tuple[str, dict[str, str]]:
    """Split "hf:patience=3,threshold=1e-4" into ("hf", {"patience": "3", "threshold": "1e-4"}).

    Values stay strings here; `resolve_params` types them. (Values that contain a
    comma, such as multi-metric lists, use `;` or `|` inside the value instead.)
    """
    name, _, rest = spec.partition(":")
    name = name.strip()
    if not name:
        raise RuleConfigError(f"empty rule name in {spec!r}; write e.g. hf:patience=3")
    params: dict[str, str] = {}
    if rest.strip():
        for part in rest.split(","):
            if not part.strip():
                continue
            k, eq, v = part.partition("=")
            if not eq or not k.strip():
                raise RuleConfigError(f"bad rule parameter {part!r} in {spec!r}; write name=value")
            if k.strip() in params:
                raise RuleConfigError(f"parameter {k.strip()!r} given twice in {spec!r}; give it once")
            params[k.strip()] = v.strip()
    return name, params


def list_rules() -> list[RuleInfo]:
    _load_all()
    return list(REGISTRY.values())


_RULE_MODULES = ("library", "patience", "smoothed", "adaptive", "multi", "prechelt", "trend", "threshold",
                 "significance")


def _load_all() -> None:
    import importlib

    for m in _RULE_MODULES:
        try:
            importlib.import_module(f"logsage.rules.{m}")
        except ModuleNotFoundError as e:
            if e.name != f"logsage.rules.{m}":
                raise


def finite_or_none(x: float) -> float | None:
    return float(x) if x is not None and math.isfinite(x) else None
