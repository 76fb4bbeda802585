"""The rule contract: a registry built from the rules' own signatures.

A rule is a pure, causal function of a metric history. It is declared once:

    @rule("hf", reference="transformers EarlyStoppingCallback (4.47+ / 5.x)",
          aliases={"early_stopping_patience": "patience"},
          grid={"patience": [1, 2, 3, 5, 8], "threshold": [0.0, 1e-4, 1e-3]},
          sweep="logsage.decide.sweep:HF_FORM", counts="threshold",
          common=[("HF patience 3, threshold 1e-4 (blog recipe)", {"patience": 3, "threshold": 1e-4})])
    def hf(x: RuleInput, *, patience: int = 1, threshold: float = 0.0) -> Outcome:
        '''One-line summary.

        Args:
            patience: evaluations without improvement before stopping.
            threshold: ...
        '''

* keyword-only, annotated, defaulted parameters ARE the schema: `logsage rules`,
  `--rule name:k=v` parsing, type checks and docs are derived from them;
* everything else the package knows about a rule is declared here too, and the
  tables elsewhere are derived from it: its default search grid (`grid`) or the value
  only the user can give (`needs_value`, e.g. "target=0.8"); its vectorized sweep
  form (`sweep`, "module:attribute", resolved lazily by `logsage.decide.sweep`); the
  margin parameter under which its counter is "evaluations since the best" when 0
  (`counts`, for `logsage watch`); the common defaults people run with it (`common`:
  display name + parameters, compared by `tune` and drawn by `report`); and a real
  `reference` (library version and function, or paper);
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
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from logsage.core.errors import RuleConfigError

# Parameters every rule accepts; applied through RuleInput.not_before.
COMMON_PARAMS = {"min_evals": (int, 0), "min_steps": (int, 0)}
COMMON_PARAM_HELP = {
    "min_evals": "do not stop before this many evaluations (a stop is allowed at evaluation index >= min_evals - 1)",
    "min_steps": "do not stop before this global step (a stop is allowed at an evaluation with step >= min_steps)",
}


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
class CommonDefault:
    """A setting people actually run (`tune` compares the recommendation with it)."""

    label: str  # display name, e.g. "HF patience 3, threshold 1e-4 (blog recipe)"
    rule: str
    params: dict[str, Any]

    @property
    def spec(self) -> str:
        return rule_spec(self.rule, self.params)


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
    # Default search grid (parameter -> values); None when the rule needs a value of the user's.
    grid: dict[str, tuple[Any, ...]] | None = None
    needs_value: str | None = None  # an example of the value it needs, e.g. "target=0.8"
    sweep: str | None = None  # "module:attribute" of its vectorized form
    counts: str | None = None  # margin parameter; at 0 the counter is "evaluations since the best"
    common: tuple[CommonDefault, ...] = ()
    module: str = ""

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
    grid: Mapping[str, Sequence[Any]] | None = None,
    needs_value: str | None = None,
    sweep: str | None = None,
    counts: str | None = None,
    common: Sequence[tuple[str, Mapping[str, Any]]] = (),
) -> Callable[[Callable[..., Outcome]], Callable[..., Outcome]]:
    """Register a rule function under `name` (see the module docstring).

    Exactly one of `grid` (its default search grid; {} for a rule with nothing to vary)
    and `needs_value` must be given.
    """
    if (grid is None) == (needs_value is None):
        raise TypeError(f"rule {name}: declare either a default grid or needs_value (a value of the user's own)")
    if "seed-rules" in reference or not reference.strip():
        raise TypeError(f"rule {name}: reference must cite a library version + function or a paper")

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
        names = {p.name for p in params}
        for key in (*(grid or {}), *([counts] if counts else [])):
            if key not in names and key not in COMMON_PARAMS:
                raise TypeError(f"rule {name}: {key!r} is not one of its parameters")
        summary = (inspect.cleandoc(func.__doc__ or "").splitlines() or [""])[0]
        REGISTRY[name] = RuleInfo(
            name, func, reference, summary, tuple(params), dict(aliases or {}), tuple(needs), exact, validate,
            grid=None if grid is None else {k: tuple(v) for k, v in grid.items()}, needs_value=needs_value,
            sweep=sweep, counts=counts, common=tuple(CommonDefault(label, name, dict(ps)) for label, ps in common),
            module=func.__module__)
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
            text = str(raw)
            if p.choices and text not in p.choices:
                raise RuleConfigError(
                    f"rule {rule_name}: {p.name} must be one of {', '.join(p.choices)}, got {text!r}")
            return text
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
    """Every registered rule, in a fixed order whatever the import order: by family module (`rule_modules`),
    then as declared in it."""
    _load_all()
    modules = {f"logsage.rules.{m}": i for i, m in enumerate(_MODULES)}
    order = {name: i for i, name in enumerate(REGISTRY)}
    return sorted(REGISTRY.values(), key=lambda r: (modules.get(r.module, len(modules)), order[r.name]))


def has_param(info: RuleInfo, key: str) -> bool:
    """Whether a parameter name applies to a rule: one of its parameters, an alias of one, or min_evals/min_steps."""
    k = info.aliases.get(key, key)
    return k in COMMON_PARAMS or any(p.name == k for p in info.params)


# ------------------------------------------------------------------ one spelling of "rule + params"
def _same(a: Any, b: Any) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def _value_text(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    return "none" if v is None else str(v)


def rule_spec(name: str, params: Mapping[str, Any]) -> str:
    """The `--rule` spec that reproduces a (rule, parameters) pair: its non-default parameters only,
    e.g. "hf:patience=3,threshold=0.0001" (the one formatter: tune, report, watch and replay use it).

    A rule that is not registered is shown with every parameter given.
    """
    info = REGISTRY.get(name)
    if info is None:
        _load_all()
        info = REGISTRY.get(name)
    defaults: dict[str, Any] = {k: v[1] for k, v in COMMON_PARAMS.items()}
    if info is not None:
        defaults.update({p.name: p.default for p in info.params})
    changed = [f"{k}={_value_text(v)}" for k, v in params.items()
               if info is None or (k in defaults and not _same(defaults[k], v))]
    return name + (":" + ",".join(changed) if changed else "")


def parse_grid(items: Sequence[str]) -> dict[str, list[str]]:
    """`--grid patience=1,2,3 --grid threshold=0,1e-4` -> {"patience": ["1","2","3"], ...} (the one
    `--grid` parser of every command; the values are typed by the rules).

    Raises:
        RuleConfigError: an item without NAME=V1,..., or a key given twice (which values were meant?).
    """
    grid: dict[str, list[str]] = {}
    for item in items:
        key, eq, values = item.partition("=")
        vals = [v.strip() for v in values.split(",") if v.strip()]
        if not eq or not key.strip() or not vals:
            raise RuleConfigError(f"bad --grid {item!r}; write NAME=V1,V2,... e.g. --grid patience=1,2,3")
        if key.strip() in grid:
            raise RuleConfigError(f"--grid {key.strip()} given twice; list all its values in one --grid")
        grid[key.strip()] = vals
    return grid


# ------------------------------------------------------------------ tables derived from the declarations
def default_grids() -> dict[str, dict[str, list[Any]]]:
    """rule -> its declared default search grid (rules that need a value of the user's are absent)."""
    return {i.name: {k: list(v) for k, v in i.grid.items()} for i in list_rules() if i.grid is not None}


def user_value_rules() -> dict[str, str]:
    """rule -> an example of the value of the user's own it needs before it can be searched."""
    return {i.name: i.needs_value for i in list_rules() if i.needs_value is not None}


def common_defaults() -> list[CommonDefault]:
    """The settings people actually run, in registry order (tune's comparison, report's rules)."""
    return [c for i in list_rules() for c in i.common]


def counting_rules() -> dict[str, str]:
    """rule -> its margin parameter, for rules whose counter is "evaluations since the best" at margin 0."""
    return {i.name: i.counts for i in list_rules() if i.counts}


def sweep_forms() -> dict[str, str]:
    """rule -> "module:attribute" of its vectorized sweep form."""
    return {i.name: i.sweep for i in list_rules() if i.sweep}


def rules_table_markdown() -> str:
    """The README's rules table, generated from the declarations (a test keeps the README equal to it)."""
    lines = ["| rule | what | default grid | exact semantics of | reference |", "|---|---|---|---|---|"]
    for i in list_rules():
        if i.grid is None:
            grid = f"needs a value of your own (e.g. `{i.needs_value}`)"
        elif not i.grid:
            grid = "nothing to vary"
        else:
            grid = "; ".join(f"{k} {', '.join(_value_text(v) for v in vs)}" for k, vs in i.grid.items())
        what = i.summary.rstrip(".").replace("|", "\\|")
        lines.append(f"| `{i.name}` | {what} | {grid} | {i.exact or ''} | {i.reference.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def rule_modules() -> list[str]:
    """The rule family modules of this package (every public module of logsage.rules but the contract
    and the helpers)."""
    import pkgutil

    import logsage.rules as pkg

    found = sorted(m.name for m in pkgutil.iter_modules(pkg.__path__) if not m.name.startswith("_")
                   and m.name not in ("base", "common"))  # the contract and the helpers
    # The library rules first: the ones people know (and `all` lists them first).
    return sorted(found, key=lambda m: m != "library")


_LOADED: list[str] = []
_MODULES: list[str] = []


def _load_all() -> None:
    """Import every rule module once (each registers its rules); an import error is a bug and raises."""
    if _LOADED:
        return
    import importlib

    if not _MODULES:
        _MODULES.extend(rule_modules())
    for m in _MODULES:
        importlib.import_module(f"logsage.rules.{m}")
        _LOADED.append(m)
