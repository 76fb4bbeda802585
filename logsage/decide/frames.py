"""pandas views of replay and tune results, for notebooks (pandas is imported inside each function).

    >>> result = replay(runs, ["hf:patience=3", "gl"])
    >>> result.to_pandas()                        # one row per run x rule setting
    >>> result.to_pandas("summary")               # one row per rule setting, over the runs
    >>> from logsage.decide.frames import tune_frame
    >>> tune_frame(tune(runs), "candidates")      # or "comparison", "per_run", "folds"

Both work from the results' `to_dict()` form (what `--json` prints), so they follow the
documented output, not the result classes' internals.
"""

from __future__ import annotations

from typing import Any, Mapping

TUNE_TABLES = ("candidates", "comparison", "per_run", "folds")


def _pandas():
    try:
        import pandas as pd
    except ModuleNotFoundError:
        from logsage.core.extras import missing_extra_error

        raise missing_extra_error("the pandas views", "pandas") from None
    return pd


def spec_of(rule: str, params: Mapping[str, Any]) -> str:
    """The `--rule` spec of a (rule, parameters) pair: its non-default parameters only (as tune's rule_spec)."""
    from logsage.rules.base import COMMON_PARAMS, get_rule

    try:
        info = get_rule(rule)
    except Exception:  # a rule no longer registered: its name is what we have
        return rule
    defaults = {p.name: p.default for p in info.params}
    defaults.update({k: v[1] for k, v in COMMON_PARAMS.items()})
    changed = [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items()
               if k in defaults and defaults[k] != v]
    return rule + (":" + ",".join(changed) if changed else "")


def _with_spec(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        r = dict(r)
        if "spec" not in r and "rule" in r and isinstance(r.get("params"), dict):
            r["spec"] = spec_of(r["rule"], r["params"])
        out.append(r)
    return out


def replay_frame(result: Any, table: str = "decisions") -> Any:
    """`ReplayResult.to_pandas`: table "decisions" or "summary"."""
    if table not in ("decisions", "summary"):
        raise ValueError(f"table must be 'decisions' or 'summary', not {table!r}")
    doc = result if isinstance(result, Mapping) else result.to_dict()
    return _pandas().DataFrame(_with_spec(doc[table]))


def tune_frame(result: Any, table: str = "candidates") -> Any:
    """A tune result (a TuneResult or its to_dict()) as a DataFrame.

    table: "candidates" (every rule setting searched), "comparison" (the recommendation
    and the common defaults), "per_run" (the recommendation on each run, in-sample) or
    "folds" (each leave-one-run-out fold: the rule tuned without that run, scored on it).
    """
    if table not in TUNE_TABLES:
        raise ValueError(f"table must be one of {', '.join(TUNE_TABLES)}, not {table!r}")
    doc = result if isinstance(result, Mapping) else result.to_dict()
    if table == "per_run":
        rows = (doc.get("in_sample") or {}).get("per_run") or []
    elif table == "folds":
        rows = (doc.get("leave_one_run_out") or {}).get("folds") or []
    else:
        rows = doc.get(table) or []
    return _pandas().DataFrame(_with_spec(list(rows)))
