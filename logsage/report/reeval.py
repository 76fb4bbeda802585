"""The report's re-evaluation table: loss and generation metric per candidate, with the paired-test verdicts.

`reevaluation_section(path)` reads a selection file - the provenance file of an
export (`logsage_selection.json`), `logsage select --json` output saved to a file,
or `logsage evaluate --out FILE` - and renders one self-contained HTML section: per
candidate the logged value, the re-evaluated loss, the generation metric, its
p-value against the metric's best and whether it is distinguishable from it, the
rank under the selection objective; then the verdicts (the loss paired test, the
generation verdict, and the loss/metric disagreement when there is one).
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path
from typing import Any

from logsage.core.errors import DataError


def _e(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _n(v: Any, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def _cell(v: Any, digits: int = 4) -> str:
    raw = repr(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else ""
    return f'<td class="num" data-v="{raw}">{_e(_n(v, digits))}</td>'


def read_selection(path: str | Path) -> dict[str, Any]:
    """A selection file with re-evaluation results; DataError naming the file otherwise."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise DataError(f"{p}: not a readable selection file ({type(e).__name__}); pass the logsage_selection.json "
                        "of an export or the --out file of logsage evaluate") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("reevaluation"), dict):
        raise DataError(f"{p}: holds no re-evaluation results; re-run select with --eval-data/--eval-generate "
                        "(or logsage evaluate --out) and pass that file")
    return doc


def reevaluation_section(path: str | Path) -> str:
    doc = read_selection(path)
    ev = doc["reevaluation"]
    gen = ev.get("generation") or {}
    losses = {r["step"]: r for r in ev.get("results") or []}
    scores = {r["step"]: r for r in gen.get("results") or []}
    logged = {int(k): v for k, v in (doc.get("logged") or {}).items()}
    for c in doc.get("candidates") or []:
        logged.setdefault(c["step"], c.get("logged_value"))
    ranking = list(ev.get("ranking") or doc.get("ranking") or sorted(set(losses) | set(scores)))
    selected = doc.get("selected_step", ranking[0] if ranking else None)
    metric = doc.get("metric") or "logged"
    heads = ["step", f"logged {metric}", "re-evaluated loss"]
    if gen:
        heads += [gen.get("metric_label", "metric"), "p vs best", "vs best"]
    heads += ["rank", ""]
    rows = []
    for rank, step in enumerate(ranking, start=1):
        cells = [_cell(step), _cell(logged.get(step)), _cell((losses.get(step) or {}).get("loss"))]
        if gen:
            g = scores.get(step) or {}
            if step == gen.get("best_step"):
                verdict = "best"
            elif g.get("indistinguishable_from_best") is None:
                verdict = "–"
            else:
                verdict = "not distinguishable" if g["indistinguishable_from_best"] else "worse"
            cells += [_cell(g.get("mean"), 3), _cell(g.get("p_vs_best"), 2), f"<td>{_e(verdict)}</td>"]
        cells += [_cell(rank), f"<td>{'selected' if step == selected else ''}</td>"]
        rows.append(f"<tr>{''.join(cells)}</tr>")
    head = "".join(f"<th>{_e(h)}</th>" for h in heads)
    notes = []
    if (ev.get("paired_test") or {}).get("verdict"):
        notes.append(f"Loss: {_e(ev['paired_test']['verdict'])}.")
    if gen:
        notes.append(f"Generation ({_e(gen.get('n_prompts'))} prompts from {_e(gen.get('prompts'))}, greedy, at most "
                     f"{_e(gen.get('max_new_tokens'))} new tokens): {_e(gen.get('verdict'))}.")
        if gen.get("disagreement"):
            notes.append(f"<strong>Loss and {_e(gen.get('metric_label'))} disagree:</strong> "
                         f"{_e(gen['disagreement'])}.")
        if gen.get("objective"):
            notes.append(f"Ranked {_e(gen['objective'])}.")
        file = (ev.get("generations_file") or {}).get("name")
        if file:
            notes.append(f"Per-example generations: {_e(file)} beside the selection file.")
    body = "".join(f"<p>{n}</p>" for n in notes)
    return (f'<section class="reeval"><h2>Re-evaluation: {_e(doc.get("run") or path)}</h2>'
            f'<p class="dim">{_e(path)}</p><div class="tw"><table class="sortable"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table></div>{body}</section>')
