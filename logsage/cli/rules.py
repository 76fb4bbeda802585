"""`logsage rules`: list the stopping rules with their parameters, defaults, references and exactness."""

from __future__ import annotations

import click

from logsage.cli.output import console, emit_json, json_option


@click.command("rules")
@click.argument("name", required=False)
@json_option
def command(name: str | None, as_json: bool) -> None:
    """List the stopping rules: parameters (type, default, meaning), reference, and which library's
    semantics each reproduces exactly. Give a NAME for one rule.

    Every rule also takes min_evals and min_steps ("do not stop before").
    Parameters are set as NAME:k=v,k=v on `logsage replay --rule`.

    \b
    Example:
        logsage rules
        logsage rules hf
        logsage replay runs/qwen-lora --rule hf:patience=3,threshold=1e-4
    """
    from logsage.decide.engine import describe_rules
    from logsage.rules.base import COMMON_PARAM_HELP

    from logsage.rules.base import get_rule

    catalog = describe_rules(name)
    for r in catalog:  # what tune and watch derive from the declaration, shown where the rule is
        info = get_rule(r["name"])
        r["default_grid"] = None if info.grid is None else {k: list(v) for k, v in info.grid.items()}
        r["needs_value"] = info.needs_value
        r["vectorized"] = info.sweep is not None
        r["common_defaults"] = [{"label": c.label, "spec": c.spec} for c in info.common]
        if info.name == "recommended":
            from logsage.rules.recommended import learned, learned_spec

            r["learned"] = {**learned(), "spec": learned_spec()}
    if as_json:
        emit_json({"rules": catalog, "common_params": [
            {"name": k, "type": "int", "default": 0, "help": v} for k, v in COMMON_PARAM_HELP.items()]})
        return
    from rich.table import Table

    con = console()
    for r in catalog:
        exact = f"  [green]exact: {r['exact']}[/green]" if r["exact"] else ""
        con.print(f"[bold]{r['name']}[/bold]{exact}  {r['summary']}", soft_wrap=True)
        con.print(f"  [dim]reference:[/dim] {r['reference']}", soft_wrap=True)
        if r["default_grid"] is not None:
            grid = "; ".join(f"{k} {', '.join(map(str, v))}" for k, v in r["default_grid"].items())
            con.print(f"  [dim]tune's default grid:[/dim] {grid or 'nothing to vary'}", soft_wrap=True)
        else:
            con.print(f"  [dim]tune's default grid:[/dim] none: needs a value of your own, e.g. {r['needs_value']}",
                      soft_wrap=True)
        if r.get("learned"):
            from logsage.rules.recommended import figures_text

            con.print(f"  [dim]learned:[/dim] {r['learned']['spec']} ({figures_text()}; "
                      f"{r['learned']['command']})", soft_wrap=True)
        for c in r["common_defaults"]:
            con.print(f"  [dim]common default:[/dim] {c['label']} = {c['spec']}", soft_wrap=True)
        if r["needs"]:
            con.print(f"  [dim]needs:[/dim] {', '.join(r['needs'])}")
        if r["aliases"]:
            con.print("  [dim]aliases:[/dim] " + ", ".join(f"{k} = {v}" for k, v in r["aliases"].items()),
                      soft_wrap=True)
        if r["params"]:
            t = Table(show_edge=False, pad_edge=False, box=None, padding=(0, 2))
            for col in ("parameter", "type", "default", "meaning"):
                t.add_column(col, overflow="fold")
            for p in r["params"]:
                meaning = p["help"] + (f" (one of: {', '.join(p['choices'])})" if p.get("choices") else "")
                default = "none" if p["default"] is None else str(p["default"])
                t.add_row("  " + p["name"], p["type"], default, meaning)
            con.print(t)
        con.print()
    con.print("[bold]every rule[/bold] also takes:")
    for k, v in COMMON_PARAM_HELP.items():
        con.print(f"  {k} (int, default 0): {v}", soft_wrap=True)
