"""One checkpoint-name rule for inventory, walk, per-example files, select, prune and watch (logsage.core.runfolder).

Runs are written with the real writers (transformers' TrainerState for the log,
safetensors' own writer for the adapters; see tests/ship/test_prune.py). The cases are the
issue's: `checkpoint-012` beside `checkpoint-12` (a copy of another step), a step in
Arabic-Indic digits, a name with a trailing newline.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from logsage.cli.main import cli
from logsage.core.errors import CheckpointError
from logsage.core.runfolder import checkpoint_step, odd_checkpoint_name, step_conflicts
from logsage.ingest import load_history
from logsage.ingest.checkpoints import scan
from logsage.ship.prune import prune
from logsage.ship.select import choose_candidates
from run_builders import make_run, tree_digest, write_adapter

ODD_NAMES = ["checkpoint-\u0661\u0662", "checkpoint-24\n", "checkpoint- 7", "checkpoint-7 ", "checkpoint-+7",
             "checkpoint-\uff17"]  # Arabic-Indic 12, newline, spaces, sign, fullwidth 7


def test_the_name_rule():
    assert checkpoint_step("checkpoint-12") == 12 and checkpoint_step("checkpoint-012") == 12
    assert checkpoint_step("checkpoint-0") == 0
    for name in ODD_NAMES + ["checkpoint-", "checkpoint-best", "Checkpoint-5", "xcheckpoint-5", "checkpoint-5/"]:
        assert checkpoint_step(name) is None, name
    for name in ODD_NAMES:
        assert odd_checkpoint_name(name), name
    assert odd_checkpoint_name("checkpoint-best") is None and odd_checkpoint_name("checkpoint-5") is None
    assert step_conflicts(["checkpoint-12", "checkpoint-012", "checkpoint-4"]) == {
        12: ["checkpoint-012", "checkpoint-12"]}


def odd_run(root: Path) -> Path:
    """EVALS at 10..60 with checkpoints, plus a copy of step 10 named checkpoint-020 and the odd names."""
    run = make_run(root)
    shutil.copytree(run / "checkpoint-10", run / "checkpoint-020")  # "step 20" with step 10's weights
    for name in ODD_NAMES[:2]:
        write_adapter(run / name)
    return run


def test_inventory_walk_and_history_agree_on_names(tmp_path):
    run = odd_run(tmp_path / "run")
    found = scan(run)
    steps = [c.step for c in found.checkpoints]
    assert steps == [10, 20, 20, 30, 40, 50, 60]
    both = [c for c in found.checkpoints if c.step == 20]
    assert all(not c.whole and "checkpoint-020 and checkpoint-20" in c.problem for c in both)
    assert found.conflicts == {20: ["checkpoint-020", "checkpoint-20"]}
    assert sorted(Path(p).name for p, _ in found.skipped) == sorted(ODD_NAMES[:2])
    history = load_history(run)
    skipped = [c for c in history.cleanups if c.kind == "skipped_file" and "not read as a checkpoint" in c.message]
    assert len(skipped) == 2  # each odd name is reported, not silently read as a step
    assert [c.step for c in history.checkpoints] == steps


def test_select_never_picks_a_conflicting_step_and_names_both_folders(tmp_path):
    run = odd_run(tmp_path / "run")
    # eval_loss is best at 30; make 20 the best so that the rule would pick it.
    from transformers import TrainerState

    log = [{"eval_loss": v, "step": s, "epoch": s / 100} for s, v in
           [(10, 2.0), (20, 1.0), (30, 1.2), (40, 1.3), (50, 1.4), (60, 1.6)]]
    TrainerState(global_step=60, max_steps=60, log_history=log).save_to_json(str(run / "trainer_state.json"))
    sel = choose_candidates(load_history(run), "hf:patience=2")
    assert sel.candidates[0].step != 20
    said = " ".join(sel.notes) + " ".join(e["problem"] for e in sel.excluded)
    assert "checkpoint-020 and checkpoint-20" in said and "conflict" in said
    # When the conflicting step is the only one, select refuses, naming both folders.
    solo = make_run(tmp_path / "solo", evals=[(10, 1.0)])
    shutil.copytree(solo / "checkpoint-10", solo / "checkpoint-0010")
    with pytest.raises(CheckpointError, match="checkpoint-0010 and checkpoint-10"):
        choose_candidates(load_history(solo), "hf:patience=2")


def test_prune_leaves_conflicts_and_odd_names_alone(tmp_path):
    run = odd_run(tmp_path / "run")
    keep = {name: tree_digest(run / name) for name in ["checkpoint-020", "checkpoint-20", *ODD_NAMES[:2]]}
    plan = prune(run, "best")
    assert sorted(plan.deleted) == [10, 40, 50, 60]  # 30 is the best; 20 is two folders: neither is touched
    for name, digest in keep.items():
        assert (run / name).is_dir() and tree_digest(run / name) == digest, name
    reasons = [a["reason"] for a in plan.left_alone]
    assert sum("conflict" in r for r in reasons) == 2


def test_per_example_files_follow_the_rule(tmp_path):
    from logsage.ingest.per_example import FILENAME, read_per_example

    run = make_run(tmp_path / "run", evals=[(10, 1.0), (20, 0.9)])
    row = json.dumps({"id": 0, "loss_sum": 1.0, "n_tokens": 2, "batch": 0, "step": 0})
    for name in ["checkpoint-10", "checkpoint-20", "checkpoint-020", "checkpoint-\u0663\u0660"]:
        (run / name).mkdir(exist_ok=True)
        (run / name / FILENAME).write_text(row + "\n")
    assert sorted(read_per_example(run)) == [10]  # 20 is a conflict, ٣٠ not a checkpoint


def test_cli_ingest_reports_the_conflict(tmp_path):
    run = odd_run(tmp_path / "run")
    r = CliRunner().invoke(cli, ["ingest", str(run), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    text = json.dumps(doc)
    assert "checkpoint-020 and checkpoint-20" in text and "not read as a checkpoint" in text
