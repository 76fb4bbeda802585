"""Report: one self-contained HTML file (and optional PNGs) showing what each rule would have done.

    >>> from logsage.report.html import build_report, report_runs
    >>> result = replay(histories, ["hf:patience=3,threshold=1e-4", "gl"])
    >>> report = build_report(histories, result, tune_result=tune(histories))   # a pure rendering
    >>> report = report_runs(histories, rules=["hf:patience=3", "gl"], with_tune=True)  # replay + tune + render
    >>> report.write("report.html", png_dir="plots/")

Per run: the eval curve (and the train loss on its own right-hand axis) with each
rule's stop (dashed line) and selected checkpoint (ring) marked, the hindsight best
(star), the checkpoint inventory (a strip under the plot and a list: whole, broken,
evaluations without a checkpoint), and the scored decisions table (GPU-hours saved and,
given a price per GPU-hour, money saved per decision). For several runs:
the summary per rule and the regret-savings Pareto front. With a tune: the
recommendation, its leave-one-run-out validation and the comparison with defaults.

Self-contained means no reference to any other file or URL: styles, the small
script (sortable tables, click a legend entry to hide a rule) and the plots are
inline; a Content-Security-Policy meta tag makes the browser refuse anything else.

Both renderers draw the same figure description (`RunFigure`, `ParetoFigure`): the
HTML gets inline SVG (fast: no matplotlib, crisp at any zoom; a curve longer than
the plot is wide is drawn at pixel resolution, keeping each pixel column's minimum
and maximum, so no spike is lost), and `--png` gets matplotlib PNGs (Agg, imported
only then).
"""

from __future__ import annotations

import datetime as _dt
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from logsage.core.history import History
from logsage.core.runfolder import checkpoint_label
from logsage.report.figures import (ParetoFigure, RunFigure, esc, fmt, pareto_figure, pct, rule_colors, run_figure,
                                    run_message, same_stops)
from logsage.report.png import Canvas, png_pareto, png_run, pyplot
from logsage.report.svg import svg_pareto, svg_run
from logsage.rules.base import rule_spec

def default_report_rules() -> list[str]:
    """Rules drawn when none is asked: the common defaults people run (declared with each rule, as
    `logsage.rules.base.common_defaults`), those that need no input beyond the metric itself."""
    from logsage.rules.base import common_defaults, get_rule

    return [c.spec for c in common_defaults() if not get_rule(c.rule).needs]


DEFAULT_REPORT_RULES = default_report_rules()


# ====================================================================== HTML
_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1240px;
padding:18px 24px;color:#1d1d1d;background:#fff}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 6px;word-break:break-all}
h3{font-size:14px;margin:14px 0 4px}.meta,.dim{color:#666}.warn{color:#a15c00}
section.run{border-top:1px solid #ddd;padding-top:6px}
table{border-collapse:collapse;margin:6px 0 10px;font-size:12.5px;max-width:100%}
th,td{border-bottom:1px solid #e6e6e6;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f6f6f6;cursor:pointer;user-select:none}td.num{text-align:right;white-space:nowrap;
font-variant-numeric:tabular-nums}tr.rec td{background:#eef7ee;font-weight:600}
svg{max-width:100%;height:auto;font:11px system-ui,sans-serif;display:block}
svg .frame{fill:#fff;stroke:#bbb}svg .grid{stroke:#eee}svg .tick{stroke:#999}
svg .eval{fill:none;stroke:#222;stroke-width:1.6}svg .eval-dots circle{fill:#222}
svg .train{fill:none;stroke:#a8a8a8;stroke-width:1}svg .train-tick{fill:#888}
svg .axis-title{fill:#444;font-size:12px}svg .stop{stroke-width:1.6;stroke-dasharray:5 3}
svg .selected{fill:none;stroke-width:2}svg .best{fill:#f2b705;stroke:#7a5c00;stroke-width:.8}
svg .nonfinite{fill:#c00;font-weight:700}svg .ck-whole{fill:#2ca02c}svg .ck-broken{fill:#d62728}
svg .ck-none{fill:#ddd}svg .strip-label{fill:#666;font-size:10px}svg .empty{fill:#999}
svg .front{fill:none;stroke:#444;stroke-width:1.2}svg .pt{stroke:#fff;stroke-width:.8}
svg .front-pt{stroke:#000;stroke-width:1.2}svg .front-label{font-size:10.5px;fill:#333}svg .off-front{fill:#888}
.legend{display:flex;flex-wrap:wrap;gap:4px 14px;margin:4px 0 2px;font-size:12.5px}
.legend span{cursor:pointer}.legend .sw{display:inline-block;width:12px;height:12px;border-radius:2px;
margin-right:4px;vertical-align:-1px}.legend .off{opacity:.35;text-decoration:line-through}
.hidden{display:none}.box{background:#f7f9fc;border:1px solid #dde3ec;border-radius:6px;padding:8px 12px}
details{margin:4px 0}.tw{overflow-x:auto;max-width:100%}td.reason{min-width:200px;font-size:11.5px;color:#333;overflow-wrap:anywhere}td.wrap{white-space:normal}summary{cursor:pointer;color:#444}code{background:#f3f3f3;padding:0 3px;border-radius:3px}
"""

# Sortable tables (click a header) and legend entries that hide/show a rule's marks on its plot.
_JS = """
(function(){
  function cellValue(td){var v=td.getAttribute('data-v');if(v!==null&&v!==''){var f=parseFloat(v);
    if(!isNaN(f))return f;}return td.textContent.trim();}
  document.querySelectorAll('table.sortable th').forEach(function(th,col){
    th.addEventListener('click',function(){
      var table=th.closest('table'),body=table.tBodies[0];if(!body)return;
      var rows=Array.prototype.slice.call(body.rows),asc=th.getAttribute('data-dir')!=='asc';
      rows.sort(function(a,b){var x=cellValue(a.cells[col]),y=cellValue(b.cells[col]);
        if(typeof x==='number'&&typeof y==='number')return asc?x-y:y-x;
        return asc?String(x).localeCompare(String(y)):String(y).localeCompare(String(x));});
      rows.forEach(function(r){body.appendChild(r);});th.setAttribute('data-dir',asc?'asc':'desc');
    });
  });
  document.querySelectorAll('.legend span[data-rule]').forEach(function(item){
    item.addEventListener('click',function(){
      var plot=document.getElementById(item.parentNode.getAttribute('data-plot'));if(!plot)return;
      var off=item.classList.toggle('off');
      plot.querySelectorAll('g.rule').forEach(function(g){
        if(g.getAttribute('data-rule')===item.getAttribute('data-rule'))g.classList.toggle('hidden',off);});
    });
  });
})();
"""

_CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
        "font-src data:; base-uri 'none'; form-action 'none'")


def _td(v: Any, kind: str = "num", spec: str = ".4g") -> str:
    """A table cell; numbers carry their raw value in data-v for sorting."""
    if kind == "pct":
        raw = "" if v is None or (isinstance(v, float) and not math.isfinite(v)) else repr(float(v))
        return f'<td class="num" data-v="{raw}">{pct(v)}</td>'
    if kind == "num":
        raw = "" if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) else repr(v)
        return f'<td class="num" data-v="{raw}">{esc(fmt(v, spec))}</td>'
    return f"<td>{esc(fmt(v))}</td>"


def _num_td(sort_value: Any, text: str) -> str:
    """A cell showing `text`, sorted by the number `sort_value`."""
    ok = isinstance(sort_value, (int, float)) and not isinstance(sort_value, bool) and math.isfinite(sort_value)
    return f'<td class="num" data-v="{repr(sort_value) if ok else ""}">{esc(text)}</td>'


def _table(headers: Sequence[str], rows: Sequence[str], cls: str = "sortable") -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    return (f'<div class="tw"><table class="{cls}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>')


@dataclass
class Report:
    """A rendered report: the HTML text and the figure descriptions (for PNGs)."""

    html: str
    run_figures: list[RunFigure]
    pareto: ParetoFigure | None
    errors: list[dict]

    def write(self, out: str | os.PathLike, *, png_dir: str | os.PathLike | None = None) -> list[str]:
        """Write the HTML (atomically) and, with png_dir, one PNG per run plus the Pareto plot.

        Returns the paths written.
        """
        out = Path(out)
        if out.parent and not out.parent.exists():
            out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(self.html, encoding="utf-8")
        os.replace(tmp, out)
        written = [str(out)]
        if png_dir is not None:
            written += write_pngs(self, png_dir)
        return written


def write_pngs(report: Report, png_dir: str | os.PathLike) -> list[str]:
    """One PNG per run (`run-<i>-<name>.png`) and `pareto.png` for several runs."""
    d = Path(png_dir)
    d.mkdir(parents=True, exist_ok=True)
    plt = pyplot()
    out = []
    canvas = Canvas(plt)
    try:
        for fig in report.run_figures:
            name = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in Path(fig.run.rstrip("/\\")).name)[:60]
            p = d / f"run-{fig.index:02d}-{name or 'run'}.png"
            png_run(fig, p, canvas=canvas)
            out.append(str(p))
    finally:
        canvas.close()
    if report.pareto is not None:
        p = d / "pareto.png"
        png_pareto(report.pareto, p, _mpl=plt)
        out.append(str(p))
    return out


def build_report(histories: Sequence[History], replay_result: Any, *, tune_result: Any = None, cost: Any = None,
                 title: str | None = None, unread: Sequence[dict] = (), extra_sections: str = "") -> Report:
    """The report of runs already replayed: a pure rendering of the results it is given.

    Args:
        histories: the runs, in the order `replay_result` has them.
        replay_result: `replay(histories, ...)`'s result (decisions for every run).
        tune_result: `tune(histories, ...)`'s result, for the recommendation section.
        cost: a `CostModel` (default: one GPU, no price).
        title: the page title (default: the run, or "N runs").
        unread: runs that could not be read ({"run", "error"}), named at the top of the page.
        extra_sections: HTML placed right under the header (the re-evaluation tables of
            selection files, `logsage.report.reeval.reevaluation_section`).
    """
    from logsage import __version__
    from logsage.analysis.cost import CostModel, costs, totals

    cost = cost or CostModel()
    decisions = list(replay_result.decisions)
    labels = [rule_spec(d.rule, d.params) for d in decisions]
    colors = rule_colors(labels)
    # replay gives every run the same (rule, parameters) list, in the order of the runs: slicing
    # by position keeps two runs given under the same path apart.
    per = len(decisions) // len(histories) if histories and len(decisions) % len(histories) == 0 else 0
    if per:
        run_decisions = [decisions[i * per:(i + 1) * per] for i in range(len(histories))]
    else:
        run_decisions = [[d for d in decisions if d.run == h.path] for h in histories]
    per_cost = costs(decisions, histories, cost)
    cost_by_id = {id(d): c for d, c in zip(decisions, per_cost)}
    out: list[str] = []
    now = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    title = title or ("logsage report: " + (histories[0].path if len(histories) == 1 else f"{len(histories)} runs"))
    metrics = sorted({d.metric for d in decisions if d.metric})
    out.append(f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
               f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">'
               f'<meta name="viewport" content="width=device-width,initial-scale=1">'
               f'<title>{esc(title)}</title><style>{_CSS}</style></head><body>')
    out.append(f"<header><h1>{esc(title)}</h1><p class=\"meta\">logsage {__version__} · {now} · "
               f"{len(histories)} run(s) · metric: {esc(', '.join(metrics) or '–')} · "
               f"rules: {esc(', '.join(colors))}</p>"
               f"<p class=\"dim\">Regret (mean, p90) = the share of each run's achievable improvement "
               f"(first evaluation → best) that the kept checkpoint gives up: |kept − best| / |first − best|, "
               f"averageable across runs of any scale; per run also in the metric's units and relative to "
               f"|best|. "
               f"Saved = fraction of the run's steps after the stop. Cost: {esc('; '.join(cost.assumptions()))}."
               f"</p></header>")
    for err in unread:  # runs that could not be read are named at the top, not silently missing
        out.append(f'<p class="warn">{esc(run_message(err["run"], err["error"]))}</p>')
    out.append(extra_sections)
    if tune_result is not None:
        out.append(_tune_section(tune_result.to_dict()))
    if len(histories) > 1:
        pf = pareto_figure(replay_result.summary, colors)
        out.append(_summary_section(replay_result.summary, totals(per_cost), pf))
    else:
        pf = None
    for err in replay_result.errors:
        out.append(f'<p class="warn">{esc(run_message(err["run"], err["error"]))}</p>')
    figures = []
    out.append(_index_table(histories, run_decisions))
    for i, h in enumerate(histories):
        ds = run_decisions[i]
        fig = run_figure(h, ds, i, colors)
        figures.append(fig)
        out.append(_run_section(h, ds, fig, cost_by_id, priced=cost.gpu_hour_cost is not None))
    out.append(f"<script>{_JS}</script></body></html>")
    return Report("".join(out), figures, pf, list(replay_result.errors))


def _index_table(histories: Sequence[History], run_decisions: list[list[Any]]) -> str:
    if len(histories) < 2:
        return ""
    rows = []
    for i, h in enumerate(histories):
        ds = run_decisions[i]
        d0 = next((d for d in ds if d.best_step is not None), None)
        s = h.series.get(ds[0].metric) if ds and ds[0].metric else None
        rows.append(f'<tr><td><a href="#run-{i}">{esc(h.path)}</a></td><td>{esc(h.format)}</td>'
                    f'{_td(len(s) if s is not None else 0)}{_td(d0.best_step if d0 else None)}'
                    f'{_td(d0.best_value if d0 else None)}</tr>')
    return "<h2>Runs</h2>" + _table(["run", "format", "evaluations", "best step", "best value"], rows)


def _summary_section(summary: Sequence[dict], cost_rows: Sequence[dict], pf: ParetoFigure | None) -> str:
    from logsage.decide.scoring import params_key

    cost_by_key = {params_key(r["rule"], r["params"]): r for r in cost_rows}
    priced = any(c.get("money_saved") is not None for c in cost_rows)
    rows = []
    for r in summary:
        c = cost_by_key.get(params_key(r["rule"], r["params"]), {})
        rows.append("<tr>" + f"<td>{esc(rule_spec(r['rule'], r['params']))}</td>"
                    + _num_td(r["n_decided"], f"{r['n_decided']}/{r['n_runs']}")
                    + _td(r.get("mean_regret_scaled"), "pct") + _td(r.get("p90_regret_scaled"), "pct")
                    + _td(r["mean_regret_rel"], "pct") + _td(r["mean_regret"]) + _td(r["mean_fraction_saved"], "pct")
                    + _td(r["stopped_before_best_rate"], "pct") + _td(c.get("gpu_hours_saved"))
                    + (_td(c.get("money_saved"), spec=",.2f") if priced else "")
                    + f"<td>{'yes' if r.get('pareto') else ''}</td></tr>")
    table = _table(["rule", "runs judged", "mean regret", "p90 regret", "mean relative regret",
                    "mean regret (units)", "mean saved",
                    "before best", "GPU-h saved", *(["money saved"] if priced else []), "Pareto"], rows)
    plot = (f"<h3>Regret against compute saved</h3>{svg_pareto(pf)}"
            "<p class=\"dim\">Each point is one rule with its parameters, averaged over the runs; the joined "
            "points are the Pareto front (no other rule saves more for less regret).</p>") if pf else ""
    return f'<section id="summary"><h2>Summary over runs</h2>{table}{plot}</section>'


def _tune_section(doc: dict) -> str:
    rec = doc.get("recommendation")
    obj = doc["objective"]
    parts = ['<section id="tune"><h2>Recommendation (tune)</h2><div class="box">']
    parts.append(f"<p><b>Objective:</b> {esc(obj['description'])} (<code>{esc(obj['spec'])}</code>)</p>")
    if rec is None:
        parts.append(f"<p class=\"warn\">No recommendation: {esc(' '.join(doc.get('notes', [])))}</p></div>")
        return "".join(parts) + "</section>"
    parts.append(f"<p><b>Use:</b> <code>--rule {esc(rec['spec'])}</code>"
                 + (f" <span class=\"warn\">({esc(rec['note'])})</span>" if rec.get("note") else "") + "</p>")
    ins, loo = doc["in_sample"], doc["leave_one_run_out"]
    priced = doc["cost"].get("gpu_hour_cost") is not None

    def fig(block: dict | None) -> str:
        if not block or block.get("mean") is None:
            return "–"
        sp = block.get("spread") or {}
        return (f"{pct(block['mean'])} <span class=\"dim\">(p90 {pct(block.get('p90'))}, "
                f"max {pct(sp.get('max'))})</span>")

    ok = loo.get("available")
    rows = [f"<tr><td>regret: share of the achievable improvement lost (mean)</td><td>{fig(ins['regret'])}</td>"
            f"<td>{fig(loo['regret']) if ok else '–'}</td></tr>",
            f"<tr><td>relative regret (mean)</td><td>{fig(ins['regret_rel'])}</td>"
            f"<td>{fig(loo['regret_rel']) if ok else '–'}</td></tr>",
            f"<tr><td>fraction of steps saved (mean)</td><td>{fig(ins['saved'])}</td>"
            f"<td>{fig(loo['saved']) if ok else '–'}</td></tr>",
            f"<tr><td>stopped before the best</td><td>{pct(ins['stopped_before_best_rate'])}</td>"
            f"<td>{pct(loo.get('stopped_before_best_rate')) if ok else '–'}</td></tr>",
            f"<tr><td>GPU-hours saved (total)</td><td>{esc(fmt(ins.get('gpu_hours_saved')))}</td>"
            f"<td>{esc(fmt(loo.get('gpu_hours_saved'))) if ok else '–'}</td></tr>"]
    if priced:
        rows.append(f"<tr><td>money saved (total)</td><td>{esc(fmt(ins.get('money_saved'), ',.2f'))}</td>"
                    f"<td>{esc(fmt(loo.get('money_saved'), ',.2f')) if ok else '–'}</td></tr>")
    parts.append(_table(["", f"in-sample ({ins['n_runs']} runs)",
                         f"leave-one-run-out ({loo['n_runs']} folds)" if ok else "leave-one-run-out"], rows, cls=""))
    if ok:
        parts.append(f"<p>Leave-one-run-out (tune on the other runs, score on the one left out) is the honest "
                     f"estimate for the next run; it chose the recommended rule in {pct(loo['agreement'])} of the "
                     f"folds.</p>")
        frows = [f"<tr><td>{esc(f['run'])}</td><td>{esc(f.get('spec') or '–')}</td>"
                 + _td(f.get("regret"), "pct") + _td(f.get("fraction_saved"), "pct")
                 + f"<td>{esc(fmt(f.get('stopped_before_best')))}</td>" + _td(f.get("gpu_hours_saved"))
                 + (_td(f.get("money_saved"), spec=",.2f") if priced else "") + "</tr>" for f in loo["folds"]]
        parts.append("<details><summary>per run</summary>" + _table(
            ["run left out", "rule chosen on the others", "regret", "saved", "stopped before best", "GPU-h saved",
             *(["money saved"] if priced else [])], frows)
            + "</details>")
    else:
        parts.append(f"<p class=\"warn\">{esc(loo['reason'])}</p>")
    crow = []
    for r in doc["comparison"]:
        cls = ' class="rec"' if r["label"] == "recommended" else ""
        crow.append(f"<tr{cls}><td>{esc(r['label'])}</td><td><code>{esc(r['spec'])}</code></td>"
                    + _num_td(r["n_decided"], f"{r['n_decided']}/{r['n_runs']}")
                    + _td(r["mean_regret"], "pct") + _td(r["p90_regret"], "pct") + _td(r["mean_regret_rel"], "pct")
                    + _td(r["mean_fraction_saved"], "pct") + _td(r["stopped_before_best_rate"], "pct")
                    + _td(r["gpu_hours_saved"]) + (_td(r.get("money_saved"), spec=",.2f") if priced else "")
                    + _td((r.get("on_disk") or {}).get("mean_regret"), "pct") + "</tr>")
    parts.append("<h3>Compared with the baseline and common defaults (same runs, no tuning)</h3>" + _table(
        ["", "rule", "runs judged", "mean regret", "p90 regret", "mean relative regret", "mean saved",
         "stopped before best", "GPU-h saved", *(["money saved"] if priced else []), "on disk (mean regret)"], crow))
    from logsage.analysis.tune import partly_judged

    parts.extend(f'<p class="warn">{esc(line)}</p>' for line in partly_judged(doc["comparison"]))
    if doc.get("excluded"):
        parts.append("<h3>Runs left out</h3><ul>" + "".join(
            f"<li>{esc(run_message(e['run'], e['reason']))}</li>" for e in doc["excluded"]) + "</ul>")
    parts.append("</div></section>")
    return "".join(parts)


def _inventory_html(h: History, fig: RunFigure) -> str:
    if not h.checkpoints:
        return "<p class=\"dim\">Checkpoints: none found (a bare log): selections are over all evaluations.</p>"
    whole = [c for c in h.checkpoints if c.whole]
    broken = [c for c in h.checkpoints if not c.whole]
    without = [s for s, st in fig.checkpoints.items() if st == "none"]
    items = [f"<li><b>whole</b> ({len(whole)}): "
             + (", ".join(f"{esc(checkpoint_label(c))} <span class=\"dim\">({esc(c.kind)})</span>" for c in whole) or "none")
             + "</li>"]
    if broken:
        items.append(f"<li class=\"warn\"><b>not whole</b> ({len(broken)}): " + "; ".join(
            f"{esc(checkpoint_label(c))}: {esc(c.problem or 'incomplete')}" for c in broken) + "</li>")
    if without:
        shown = ", ".join(str(s) for s in without[:30]) + (" …" if len(without) > 30 else "")
        items.append(f"<li><b>evaluations without a checkpoint</b> ({len(without)}): steps {shown}</li>")
    return "<h3>Checkpoint inventory</h3><ul>" + "".join(items) + "</ul>"


def _run_section(h: History, ds: Sequence[Any], fig: RunFigure, cost_by_id: dict[int, Any], *,
                 priced: bool = False) -> str:
    s = h.series.get(fig.metric) if fig.metric else None
    facts = [f"format {h.format}", f"{len(s) if s is not None else 0} evaluations of {fig.metric or '–'}"]
    if h.max_steps:
        facts.append(f"budget {h.max_steps} steps")
    parts = [f'<section class="run" id="run-{fig.index}" data-run="{esc(h.path)}">'
             f"<h2>{esc(h.path)}</h2><p class=\"meta\">{esc(' · '.join(facts))}</p>"]
    problems = {d.reason for d in ds if not d.decidable}
    if ds and len(problems) == 1 and not any(d.decidable for d in ds):
        from logsage.analysis.tune import without_run

        parts.append(f'<p class="warn">No rule can judge this run: {esc(without_run(h.path, problems.pop()))}</p>')
    legend = "".join(f'<span data-rule="{esc(m.label)}" title="click to hide or show">'
                     f'<i class="sw" style="background:{m.color}"></i>{esc(m.label)}</span>' for m in fig.markers)
    same = "".join(f" · same stop at {step}: {' = '.join(labels)}" for step, labels in same_stops(fig.markers))
    parts.append(f'<div class="legend" data-plot="plot-{fig.index}">{legend}'
                 f'<span class="dim">— dashed: stop · ring: checkpoint kept · ★ best in hindsight'
                 f'{" · ckpt strip: green whole / red not whole / grey no checkpoint" if fig.has_inventory else ""}'
                 f"{esc(same)}</span></div>")
    parts.append(svg_run(fig))
    rows = []
    for d in ds:
        c = cost_by_id.get(id(d))
        kept = "–" if d.selected_step is None else f"{d.selected_step} ({fmt(d.selected_value)})"
        regret = "–" if d.regret is None else f"{fmt(d.regret)} ({pct(d.regret_rel)})"
        trend = "–" if d.trend_slope is None else f"{d.trend_slope:+.3g}/eval (p {fmt(d.trend_p, '.2g')})"
        rows.append("<tr>" + f"<td>{esc(rule_spec(d.rule, d.params))}</td>" + _td(d.stop_step)
                    + _num_td(d.selected_step, kept) + _num_td(d.regret, regret) + _td(d.fraction_saved, "pct")
                    + _td(c.gpu_hours_saved if c else None)
                    + (_td(c.money_saved if c else None, spec=",.2f") if priced else "")
                    + f"<td>{esc(fmt(d.stopped_before_best))}</td>"
                    + _num_td(d.trend_slope, trend).replace('class="num"', 'class="num wrap"', 1)
                    + _td(d.overfit_gap)
                    + f"<td class=\"reason\">{esc(d.reason)}"
                    + (f"<br><span class=\"warn\">{esc(d.note)}</span>" if d.note else "")
                    + "</td></tr>")
    parts.append("<h3>Decisions</h3>" + _table(
        ["rule", "stop step", "kept step (value)", "regret (rel.)", "saved", "GPU-h saved",
         *(["money saved"] if priced else []), "before best", "trend at stop", "eval−train gap", "reason"], rows))
    parts.append(_inventory_html(h, fig))
    notes = [c.message for c in h.cleanups] + list(h.warnings)
    if notes:
        parts.append(f"<details><summary>{len(notes)} note(s) from reading the log</summary><ul>"
                     + "".join(f"<li>{esc(n)}</li>" for n in notes) + "</ul></details>")
    parts.append("</section>")
    return "".join(parts)


# ====================================================================== entry points
def report_runs(histories: Sequence[History], *, rules: Sequence[Any] | None = None, metric: str | None = None,
                mode: str | None = None, with_tune: bool = False, objective: str | None = None,
                cost: Any = None, title: str | None = None, unread: Sequence[dict] = (),
                extra_sections: str = "") -> Report:
    """Replay the runs through the rules (default `DEFAULT_REPORT_RULES`; with `with_tune`, the
    recommendation drawn first, then the rules), and `build_report` from the results.

    Raises:
        RuleConfigError / UsageError: a bad rule, objective or mode (before any work).
    """
    from logsage.decide.engine import replay

    rule_specs: list[Any] = list(rules) if rules else list(DEFAULT_REPORT_RULES)
    tune_result = None
    if with_tune:
        from logsage.analysis.tune import tune

        tune_result = tune(histories, metric=metric, mode=mode, objective=objective, cost=cost)
        rec = tune_result.recommendation
        if rec is not None:  # drawn first, so it gets the first colour
            rule_specs = [(rec["rule"], rec["params"])] + rule_specs
    result = replay(histories, rule_specs, metric=metric, mode=mode)
    return build_report(histories, result, tune_result=tune_result, cost=cost, title=title, unread=unread,
                        extra_sections=extra_sections)


def report_paths(paths: Sequence[str], out: str | os.PathLike, *, png_dir: str | os.PathLike | None = None,
                 format: str | None = None, use_cache: bool = True, cache_dir: str | None = None,
                 selections: Sequence[str] = (), **kwargs: Any) -> dict[str, Any]:
    """Load each path as one run, build the report and write it (and the PNGs).

    Runs that cannot be read are listed in the report and the returned `errors`. Each of `selections` (a
    selection file with re-evaluation results) adds its table (`logsage.report.reeval`).
    Returns {"out", "written", "runs", "errors"}.
    """
    from logsage.core.errors import IngestError, UsageError
    from logsage.ingest import load_histories

    from logsage.report.reeval import reevaluation_section

    sections = "".join(reevaluation_section(p) for p in selections)  # a bad selection file fails before any work
    histories, errors = load_histories(paths, format=format, use_cache=use_cache, cache_dir=cache_dir)
    if not histories:
        if errors:
            raise IngestError("no run could be read: " + "; ".join(e["error"] for e in errors))
        raise UsageError("no run given; pass at least one run folder or log file")
    report = report_runs(histories, unread=errors, extra_sections=sections, **kwargs)
    written = report.write(out, png_dir=png_dir)
    return {"out": str(out), "written": written, "runs": [h.path for h in histories],
            "errors": errors + list(report.errors)}


def referenced_urls(html_text: str) -> list[str]:
    """Every src/href/xlink:href (and CSS url()) value in the HTML that is not an in-page
    anchor or a data: URI - what must be empty for a self-contained report."""
    from html.parser import HTMLParser
    import re

    found: list[str] = []

    class _P(HTMLParser):
        def handle_starttag(self, tag, attrs):
            for k, v in attrs:
                if k in ("src", "href", "xlink:href", "srcset", "poster", "data", "action") and v is not None:
                    if not (v.startswith("#") or v.startswith("data:")):
                        found.append(v)

    _P().feed(html_text)
    for m in re.finditer(r"url\(\s*['\"]?([^)'\"]+)", html_text):
        if not m.group(1).startswith(("data:", "#")):
            found.append(m.group(1))
    for m in re.finditer(r"@import\s+['\"]([^'\"]+)", html_text):
        found.append(m.group(1))
    return found


__all__ = ["DEFAULT_REPORT_RULES", "Report", "build_report", "referenced_urls", "report_paths", "report_runs",
           "write_pngs"]
