"""Tune's comparison table: the recommendation next to the baseline, the learned default and the common defaults.

Every row is scored on the same runs with the same figures (scale-free regret mean and
p90, savings, the on-disk figure apart). A rule that cannot judge some runs (PQ on a
run without a training loss) is scored on the others; `not_judged` names those runs and
why, and `partly_judged` turns that into one line per row (never a blank row).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from logsage.analysis.scores import Scores, summary


def comparison_rows(sc: Scores, specs: list[str], pairs: list[tuple[str, dict]],
                    rows: Sequence[tuple[str, int]]) -> list[dict[str, Any]]:
    """One row per (label, candidate index), in the order given, each candidate once."""
    out: list[dict[str, Any]] = []
    seen: set[int] = set()
    for label, c in rows:
        if c in seen:
            for row in out:  # the same rule under another name: say so on the existing row
                if row["index"] == c and label not in row["also"]:
                    row["also"].append(label)
            continue
        seen.add(c)
        row = {"label": label, "also": [], "index": c, "rule": pairs[c][0], "params": pairs[c][1], "spec": specs[c],
               **summary(sc, c)}
        row["not_judged"] = [{"run": sc.runs[r], "reason": why} for (cc, r), why in sorted(sc.reasons.items())
                             if cc == c]
        out.append(row)
    return out


def judged_text(row: Mapping[str, Any]) -> str:
    """"39/40 runs": how many runs a comparison or candidate row's figures are over."""
    return f"{row['n_decided']}/{row['n_runs']} runs"


def without_run(run: str, message: str) -> str:
    """`message` without its mention of the run's path, for a line that names the run already:
    a leading "RUN: " (most errors start so) or a later " in RUN" ("metric 'x' not found in RUN")."""
    run = str(run)
    if message.startswith(run + ": "):
        return message[len(run) + 2:]
    for mention in (f" in {run}", f" in '{run}'"):
        at = message.find(mention)
        if at >= 0 and message[at + len(mention):at + len(mention) + 1] in ("", ";", ",", ":", ")", " ", "\n"):
            return message[:at] + message[at + len(mention):]
    return message


def run_message(run: str, message: str) -> str:
    """"RUN: message" with the run's path said once (see `without_run`); a message that still
    names the run ("...; RUN logs none") is given alone."""
    rest = without_run(run, message)
    return rest if str(run) in rest else f"{run}: {rest}"


def partly_judged(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per comparison row whose rule could not judge every run, or whose on-disk figure
    leaves runs out: over how many runs its figures are, and which runs and why."""
    out = []
    for row in rows:
        name = f"{row['label'].split(' (')[0]} ({row['spec']})"
        if row["n_decided"] != row["n_runs"]:
            missing = row.get("not_judged") or []
            why = "; ".join(run_message(m["run"], m["reason"]) for m in missing[:3])
            more = f" (+{len(missing) - 3} more)" if len(missing) > 3 else ""
            head = (f"{name} could judge none of the runs" if row["n_decided"] == 0 else
                    f"{name}: figures over the {judged_text(row)} it can judge")
            out.append(f"{head}; not judged: {why}{more}")
    disk = [row for row in rows if (row.get("on_disk") or {}).get("n_missing")]
    if disk:
        names = sorted({r for row in disk for r in row["on_disk"]["missing"]})
        shown = ", ".join(names[:3]) + (f" (+{len(names) - 3} more)" if len(names) > 3 else "")
        out.append(f"on-disk figures leave out {len(names)} run(s) with no usable checkpoint at the stop of some "
                   f"rule: {shown} (the save-all figures count every run)")
    return out
