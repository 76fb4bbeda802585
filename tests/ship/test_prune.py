"""`logsage prune`: keep what the user names, delete only the other checkpoint-N folders, report what it freed."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from logsage.cli.main import cli
from logsage.ship.prune import parse_keep, prune
from run_builders import EVALS, make_run, tree_digest, write_adapter  # noqa: F401

def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def checkpoints(run: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in run.glob("checkpoint-*") if p.name.split("-")[1].isdigit())


def test_parse_keep():
    assert parse_keep("selected, best,last,checkpoint-500, 40") == ["selected", "best", "last", 500, 40]
    assert parse_keep(["best", "last"]) == ["best", "last"]
    for bad in ("", "newest", "checkpoint-x"):
        with pytest.raises(Exception, match="--keep"):
            parse_keep(bad)


def test_dry_run_reports_and_deletes_nothing(tmp_path):
    run = make_run(tmp_path / "run")
    before = tree_digest(run)
    plan = prune(run, "selected,best,last", rule="hf:patience=2", dry_run=True)
    assert tree_digest(run) == before
    why = {k["step"]: k["why"] for k in plan.keep}
    assert set(why) == {30, 60}  # hf:patience=2 picks 30 (also the best), last = 60
    assert "best logged" in why[30] and any(w.startswith("selected by hf") for w in why[30])
    assert why[60] == ["newest whole"]
    assert [d["step"] for d in plan.delete] == [10, 20, 40, 50]
    assert plan.freed_bytes == sum(du(run / f"checkpoint-{s}") for s in (10, 20, 40, 50))


def test_prune_deletes_only_unkept_checkpoint_folders(tmp_path):
    run = make_run(tmp_path / "run", states={20: "broken"})
    (run / "exports").mkdir()
    (run / "exports" / "model.safetensors").write_bytes(b"x" * 100)
    (run / "checkpoint-final").mkdir()  # not numeric: not a checkpoint folder
    (run / "checkpoint-final" / "notes.txt").write_text("hand-picked")
    (run / "logsage_run.json").write_text(json.dumps({"status": "completed"}))
    kept_before = {s: tree_digest(run / f"checkpoint-{s}") for s in (30, 60)}
    freed = sum(du(run / f"checkpoint-{s}") for s in (10, 20, 40, 50))
    r = CliRunner().invoke(cli, ["prune", str(run), "--keep", "best", "--keep", "last", "--json", "--yes"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["freed_bytes"] == freed and doc["deleted_steps"] == [10, 20, 40, 50] and not doc["dry_run"]
    assert any(d["step"] == 20 and "cut short" in d["problem"] for d in doc["delete"])
    assert checkpoints(run) == [30, 60]
    assert {s: tree_digest(run / f"checkpoint-{s}") for s in (30, 60)} == kept_before
    assert (run / "exports" / "model.safetensors").exists() and (run / "checkpoint-final" / "notes.txt").exists()
    assert (run / "trainer_state.json").exists() and (run / "logsage_run.json").exists()


def test_symlinked_checkpoints_and_their_targets_are_left_alone(tmp_path):
    run = make_run(tmp_path / "run", evals=EVALS[:3])
    outside = tmp_path / "elsewhere" / "checkpoint-99"
    write_adapter(outside)
    os.symlink(outside, run / "checkpoint-40")
    plan = prune(run, "best")
    assert any(a["step"] == 40 and "symbolic link" in a["reason"] for a in plan.left_alone)
    assert (run / "checkpoint-40").is_symlink() and (outside / "adapter_model.safetensors").exists()
    assert checkpoints(run) == [30, 40]


def test_pickle_pick_is_kept_with_and_without_the_opt_in(tmp_path):
    run = make_run(tmp_path / "run", states={30: "pickle"})
    plan = prune(run, "selected", rule="hf:patience=2", dry_run=True)
    kept = {k["step"] for k in plan.keep}
    # Without --allow-pickle `select` picks 40; with it, 30. Both stay.
    assert kept == {30, 40}


def test_keep_list_errors(tmp_path):
    run = make_run(tmp_path / "run", evals=EVALS[:2])
    r = CliRunner().invoke(cli, ["prune", str(run), "--keep", "selected"])
    assert r.exit_code == 2 and "--rule" in r.output
    r = CliRunner().invoke(cli, ["prune", str(run), "--keep", "500"])
    assert r.exit_code == 2 and "no checkpoint-500" in r.output and "10, 20" in r.output
    broken = make_run(tmp_path / "broken", evals=EVALS[:2], states={10: "broken", 20: "broken"})
    before = tree_digest(broken)
    r = CliRunner().invoke(cli, ["prune", str(broken), "--keep", "best,last"])
    assert r.exit_code == 1 and "refusing to delete every checkpoint" in r.output
    assert tree_digest(broken) == before


def test_human_output_names_what_goes_and_what_it_frees(tmp_path):
    run = make_run(tmp_path / "run", evals=EVALS[:3])
    r = CliRunner().invoke(cli, ["prune", str(run), "--keep", "20", "--dry-run"])
    assert r.exit_code == 0, r.output
    assert "keep         checkpoint-20" in r.output and "would delete checkpoint-10" in r.output
    assert "would free" in r.output and checkpoints(run) == [10, 20, 30]


# ---------------------------------------------------------------------------- issue 9: "Doubtful"
def test_a_checkpoint_newer_than_the_log_is_kept_and_the_plan_says_so(tmp_path):
    run = make_run(tmp_path / "run")  # the log ends at step 60
    write_adapter(run / "checkpoint-70", broken=True)  # still being written: no trainer_state, weights cut short
    before = tree_digest(run / "checkpoint-70")
    plan = prune(run, "best,last")
    assert sorted(plan.deleted) == [10, 20, 40, 50]
    kept = {k["step"]: k["why"] for k in plan.keep}
    assert set(kept) == {30, 60, 70} and any("newer than the log's last step 60" in w for w in kept[70])
    assert tree_digest(run / "checkpoint-70") == before


def test_without_a_terminal_prune_needs_yes_and_dry_run_never_asks(tmp_path):
    run = make_run(tmp_path / "run")
    before = tree_digest(run)
    r = CliRunner().invoke(cli, ["prune", str(run), "--keep", "best"])  # CliRunner's stdin is not a terminal
    assert r.exit_code == 2 and "--yes" in r.output and "not a terminal" in r.output
    assert len([x for x in r.output.splitlines() if x.strip()]) == 1
    assert tree_digest(run) == before
    r = CliRunner().invoke(cli, ["prune", str(run), "--keep", "best", "--dry-run"])
    assert r.exit_code == 0 and "would delete" in r.output and tree_digest(run) == before
    r = CliRunner().invoke(cli, ["prune", str(run), "--keep", "best", "--yes"])
    assert r.exit_code == 0 and checkpoints(run) == [30]


def _prune_on_a_terminal(run: Path, answer: bytes) -> tuple[int, str]:
    """`logsage prune RUN --keep best` with stdin, stdout and stderr on a real pseudo-terminal, answering `answer`."""
    import pty
    import subprocess
    import sys
    import time

    leader, follower = pty.openpty()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2]),
                                                          os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "logsage", "prune", str(run), "--keep", "best"],
                            stdin=follower, stdout=follower, stderr=follower, env=env, close_fds=True)
    os.close(follower)
    seen = b""
    deadline = time.monotonic() + 60
    answered = False
    while time.monotonic() < deadline:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        seen += chunk
        if not answered and b"[y/N]" in seen:
            os.write(leader, answer)
            answered = True
    proc.wait(timeout=60)
    os.close(leader)
    return proc.returncode, seen.decode(errors="replace")


def test_on_a_terminal_prune_shows_the_plan_and_asks(tmp_path):
    run = make_run(tmp_path / "run")
    before = tree_digest(run)
    code, out = _prune_on_a_terminal(run, b"n\n")
    assert code == 1 and "would delete" in out and "[y/N]" in out, out
    assert tree_digest(run) == before
    code, out = _prune_on_a_terminal(run, b"y\n")
    assert code == 0 and "deleted" in out, out
    assert checkpoints(run) == [30]
