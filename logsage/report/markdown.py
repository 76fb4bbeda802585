"""Compact Markdown summaries of replay and tune results, for `$GITHUB_STEP_SUMMARY` or a PR comment.

    logsage replay runs/* --rule hf:patience=3 --rule gl --markdown >> "$GITHUB_STEP_SUMMARY"
    logsage tune runs/* --markdown >> "$GITHUB_STEP_SUMMARY"

Both functions take the result's `to_dict()` form (what `--json` prints), so they stay
independent of the result classes' internals. GitHub-flavoured Markdown: pipe tables,
numbers right-aligned, every rule written as the `--rule` spec that reproduces it.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence


def _spec(rule: str, params: Mapping[str, Any]) -> str:
    try:
        from logsage.analysis.tune import rule_spec

        return rule_spec(rule, dict(params))
    except Exception:  # a rule no longer registered: its name is what we have
        return rule


def _cell(v: Any) -> str:
    text = "-" if v is None else str(v)
    return text.replace("|", "\\|").replace("\n", " ")


def _num(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    return str(v)


def _pct(v: Any, digits: int = 1) -> str:
    return "-" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{100 * v:.{digits}f}%"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], right: set[int]) -> list[str]:
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---:" if i in right else "---" for i in range(len(header))) + "|"]
    out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return out


def replay_markdown(result: Mapping[str, Any], *, title: str = "logsage replay") -> str:
    """Decisions per run (stop, kept checkpoint, regret, compute saved) and, over several runs, the summary."""
    decisions = result.get("decisions", [])
    runs = list(dict.fromkeys(d["run"] for d in decisions))
    metrics = sorted({f"{d['metric']} ({d['mode']})" for d in decisions if d.get("metric")})
    lines = [f"### {title}", "",
             f"{len(runs)} run(s), {len({(d['rule'], str(d['params'])) for d in decisions})} rule setting(s); "
             f"metric: {', '.join(metrics) or '-'}", ""]
    rows = []
    for d in decisions:
        stop = "never" if d["decidable"] and d["stop_step"] is None else _num(d["stop_step"])
        if not d["decidable"]:
            stop = "undecidable"
        kept = "-" if d["selected_step"] is None else f"{d['selected_step']} ({_num(d['selected_value'])})"
        best = "-" if d["best_step"] is None else f"{d['best_step']} ({_num(d['best_value'])})"
        regret = _num(d["regret"]) + ("" if d.get("regret_rel") is None else f" ({_pct(d['regret_rel'])})")
        rows.append([d["run"], f"`{_spec(d['rule'], d['params'])}`", stop, kept, best, regret,
                     _pct(d["fraction_saved"], 0)])
    lines += _table(["run", "rule", "stop", "kept (value)", "best (value)", "regret", "saved"], rows,
                    right={2, 3, 4, 5, 6})
    summary = result.get("summary", [])
    if len(runs) > 1 and any(r.get("n_decided") for r in summary):
        lines += ["", "Over the runs (**bold**: on the Pareto front of regret vs compute saved):", ""]
        srows = []
        for r in summary:
            spec = f"`{_spec(r['rule'], r['params'])}`"
            srows.append([f"**{spec}**" if r.get("pareto") else spec, f"{r['n_decided']}/{r['n_runs']}",
                          _pct(r.get("mean_regret_scaled")), _pct(r.get("p90_regret_scaled")),
                          _pct(r.get("mean_fraction_saved"), 0), _pct(r.get("stopped_before_best_rate"), 0)])
        lines += _table(["rule", "runs", "mean regret", "p90 regret", "mean saved", "stopped before best"],
                        srows, right={1, 2, 3, 4, 5})
    for e in result.get("errors", []):
        lines += ["", f"- could not replay `{_cell(e.get('run'))}`: {_cell(e.get('error'))}"]
    lines += ["", "regret: the kept checkpoint's metric minus the hindsight best (relative in brackets); "
                  "saved: the share of the run's steps not trained."]
    return "\n".join(lines) + "\n"


def tune_markdown(result: Mapping[str, Any], *, title: str = "logsage tune") -> str:
    """The recommendation, its in-sample and leave-one-run-out figures, and the common defaults beside it."""
    rec = result.get("recommendation") or {}
    ins = result.get("in_sample") or {}
    loo = result.get("leave_one_run_out") or {}
    objective = (result.get("objective") or {}).get("description") or "-"
    n_used = ins.get("n_runs")
    lines = [f"### {title}", "",
             f"metric: {result.get('metric')} ({result.get('mode')}); runs used: {_num(n_used)}, left out: "
             f"{len(result.get('excluded') or [])}; candidates searched: {_num(result.get('n_candidates'))}",
             f"objective: {objective}", ""]
    if rec.get("spec"):
        lines += [f"**Recommendation: `--rule {rec['spec']}`**"
                  + ("" if rec.get("feasible", True) else " (no candidate met the constraint: the closest)"), ""]
    else:
        lines += ["**No recommendation** (no candidate could be judged on these runs).", ""]

    def fig(block: Mapping[str, Any], key: str) -> str:
        sub = block.get(key) or {}
        return _pct(sub.get("median"))

    rows = [["relative regret (median)", fig(ins, "regret"), fig(loo, "regret") if loo.get("available") else "-"],
            ["steps saved (median)", fig(ins, "saved"), fig(loo, "saved") if loo.get("available") else "-"],
            ["stopped before the best", _pct(ins.get("stopped_before_best_rate")),
             _pct(loo.get("stopped_before_best_rate")) if loo.get("available") else "-"]]
    lines += _table(["", f"in-sample ({_num(n_used)} runs)", "leave-one-run-out"], rows, right={1, 2})
    if loo.get("available") and loo.get("agreement") is not None:
        lines += ["", f"Leave-one-run-out chose the recommended rule in {_pct(loo['agreement'], 0)} of the folds; "
                      "its column is the honest estimate for the next run."]
    comparison = result.get("comparison") or []
    if comparison:
        lines += ["", "Compared with the baseline and common defaults (same runs):", ""]
        crows = [[c.get("label") or "-", f"`{c.get('spec') or _spec(c['rule'], c['params'])}`",
                  f"{c.get('n_decided')}/{c.get('n_runs')}", _pct(c.get("mean_regret")), _pct(c.get("p90_regret")),
                  _pct(c.get("mean_fraction_saved")), _pct(c.get("stopped_before_best_rate"))] for c in comparison]
        lines += _table(["", "rule", "runs", "mean regret", "p90 regret", "mean saved", "before best"], crows,
                        right={2, 3, 4, 5, 6})
    excluded = result.get("excluded") or []
    if excluded:
        def why(e: Mapping[str, Any]) -> str:  # the first clause: the full list of metrics is in --json
            text = str(e.get("reason") or e.get("error") or "-").split("; available")[0]
            return _cell(text if len(text) <= 120 else text[:119] + "…")

        lines += ["", "Left out: " + "; ".join(f"`{_cell(e.get('run'))}` ({why(e)})" for e in excluded)]
    return "\n".join(lines) + "\n"
