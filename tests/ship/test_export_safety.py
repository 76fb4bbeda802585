"""What an export may replace: never the run, its checkpoints, the base, the current directory or a root;
with --force only an earlier logsage export, with --force-any any other folder (issue 9, "Unsafe").

The command-line cases run `logsage select` on a copy of conftest's `tiny_run_dir` (a real
`logsage train --save-all` run), so a guard that failed would destroy only the copy; each
case asserts the copy is byte-for-byte unchanged. The library guard is tested without any
model: `export_checkpoint` checks OUT before it loads or writes anything.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from logsage.cli.main import cli
from logsage.core.errors import ExportError, UsageError
from logsage.ship import export as export_mod
from logsage.core.runfolder import SELECTION_FILE
from logsage.ship.atomic import check_export_target
from logsage.ship.export import export_checkpoint

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture()
def run_copy(tiny_run_dir, tmp_path):
    """A private copy of the trained tiny run inside tmp_path/runs/ (so its parent holds only it)."""
    dest = tmp_path / "runs" / "run"
    shutil.copytree(tiny_run_dir, dest, symlinks=True)
    return dest


def select(run: Path, export: Path | str, *extra: str):
    return CliRunner().invoke(cli, ["select", str(run), "--rule", "hf:patience=1", "--export", str(export),
                                    *extra])


def one_line_error(result) -> str:
    lines = [x for x in result.output.strip().splitlines() if x.strip()]
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    return lines[0]


# ---------------------------------------------------------------------------- the command on a real run
@pytest.mark.slow
@pytest.mark.parametrize("target", ["run", "parent", "checkpoint", "checkpoint-sub"])
@pytest.mark.parametrize("flags", [("--force",), ("--force", "--force-any")])
def test_select_never_exports_over_the_run_its_parent_or_a_checkpoint(run_copy, target, flags):
    before_run = digest(run_copy.parent)
    checkpoint = sorted(run_copy.glob("checkpoint-*"))[0]
    out = {"run": run_copy, "parent": run_copy.parent, "checkpoint": checkpoint,
           "checkpoint-sub": checkpoint / "export"}[target]
    r = select(run_copy, out, *flags)
    assert r.exit_code == 2, r.output
    line = one_line_error(r)
    assert str(out) in line and ("never replaced" in line or "inside" in line)
    assert digest(run_copy.parent) == before_run  # not one byte of the run (or beside it) changed
    assert not list(run_copy.parent.parent.glob(".*logsage-*"))  # nothing was even started


@pytest.mark.slow
def test_select_never_exports_over_the_current_directory_or_through_a_symlink(run_copy, tmp_path, monkeypatch):
    before = digest(run_copy)
    work = tmp_path / "work"
    work.mkdir()
    (work / "notes.txt").write_text("mine")
    monkeypatch.chdir(work)
    r = select(run_copy, ".", "--force", "--force-any")
    assert r.exit_code == 2 and "current directory" in one_line_error(r)
    r = select(run_copy, work.parent, "--force", "--force-any")  # contains the current directory (and the run)
    assert r.exit_code == 2, r.output
    assert (work / "notes.txt").read_text() == "mine"
    # A link that leads into the run: compared after resolving it.
    link = tmp_path / "innocent-looking"
    link.symlink_to(run_copy, target_is_directory=True)
    r = select(run_copy, link, "--force", "--force-any")
    assert r.exit_code == 2 and "innocent-looking" in one_line_error(r)
    r = select(link, tmp_path / "runs", "--force", "--force-any")  # the run given through the link
    assert r.exit_code == 2, r.output
    assert digest(run_copy) == before and link.is_symlink()


@pytest.mark.slow
def test_force_replaces_only_a_logsage_export_unless_force_any(run_copy, tmp_path):
    mine = tmp_path / "my-folder"
    mine.mkdir()
    (mine / "thesis.tex").write_text("precious")
    r = select(run_copy, mine, "--force")
    line = one_line_error(r)
    assert r.exit_code == 1 and "not written by logsage" in line and "--force-any" in line
    assert (mine / "thesis.tex").read_text() == "precious"
    r = select(run_copy, mine, "--force-any")  # --force-any alone is a usage error, not a wider --force
    assert r.exit_code == 2 and "--force" in r.output and (mine / "thesis.tex").exists()
    r = select(run_copy, mine, "--force", "--force-any")
    assert r.exit_code == 0, r.output
    assert not (mine / "thesis.tex").exists() and (mine / SELECTION_FILE).is_file()
    # Now it is a logsage export: plain --force replaces it.
    (mine / "left-by-the-old-export").write_text("x")
    r = select(run_copy, mine, "--force")
    assert r.exit_code == 0, r.output
    assert not (mine / "left-by-the-old-export").exists() and (mine / SELECTION_FILE).is_file()


# ---------------------------------------------------------------------------- the library guard, no model
def test_export_checkpoint_checks_out_before_loading_anything(tmp_path, monkeypatch):
    def must_not_run(*a, **k):
        raise AssertionError("the export started although OUT is refused")

    monkeypatch.setattr(export_mod, "_export", must_not_run)
    run = tmp_path / "run"
    ckpt = run / "checkpoint-5"
    base = tmp_path / "base"
    for d in (ckpt, base):
        d.mkdir(parents=True)
    for out in (ckpt, run, tmp_path, ckpt / "inside", base, base / "sub"):
        with pytest.raises(UsageError, match="never replaced|inside"):
            export_checkpoint(ckpt, out, base_dir=base, force=True, force_any=True, protect=[run])
    with pytest.raises(UsageError, match="filesystem root"):
        export_checkpoint(ckpt, Path(os.path.abspath(os.sep)), force=True, force_any=True)
    monkeypatch.chdir(tmp_path / "run")
    with pytest.raises(UsageError, match="current directory"):
        export_checkpoint(tmp_path / "elsewhere", Path.cwd(), force=True, force_any=True)
    with pytest.raises(UsageError, match="current directory"):
        export_checkpoint(tmp_path / "elsewhere", tmp_path, force=True, force_any=True)


def test_check_export_target_rules(tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    check_export_target(tmp_path / "new")  # a new folder: fine
    with pytest.raises(ExportError, match="already exists.*--force"):
        check_export_target(plain)
    with pytest.raises(ExportError, match="not written by logsage"):
        check_export_target(plain, force=True)
    check_export_target(plain, force=True, force_any=True)
    (plain / SELECTION_FILE).write_text('{"export": {"kind": "adapter"}}')
    check_export_target(plain, force=True)  # an earlier logsage export
    (plain / SELECTION_FILE).write_text("[1, 2]")  # not our record
    with pytest.raises(ExportError, match="not written by logsage"):
        check_export_target(plain, force=True)
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(ExportError, match="not a folder"):
        check_export_target(afile, force=True, force_any=True)
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(ExportError, match="symbolic link"):
        check_export_target(loop, force=True, force_any=True)


# ---------------------------------------------------------------------------- a base from outside the run
EVIL_CODE = '''import pathlib
pathlib.Path(__file__).with_name("I_RAN").write_text("the base's own code was executed")
from transformers import Qwen2ForCausalLM as EvilForCausalLM  # noqa: E402
'''


@pytest.mark.slow
def test_a_base_named_by_the_run_outside_it_is_warned_about_and_its_code_never_carried(run_copy, tiny_model_dir,
                                                                                      tmp_path):
    import json

    evil = run_copy.parent / "evilbase"  # "../evilbase" from the run
    shutil.copytree(tiny_model_dir, evil)
    config = json.loads((evil / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (evil / "config.json").write_text(json.dumps(config))
    (evil / "modeling_evil.py").write_text(EVIL_CODE)
    for cfg_path in run_copy.glob("checkpoint-*/adapter_config.json"):
        cfg = json.loads(cfg_path.read_text())
        cfg["base_model_name_or_path"] = "../evilbase"
        cfg_path.write_text(json.dumps(cfg))
    (run_copy / "logsage_run.json").unlink()  # only the adapter's config names the base now
    out = tmp_path / "merged"
    r = CliRunner().invoke(cli, ["select", str(run_copy), "--rule", "hf:patience=1", "--export", str(out),
                                 "--merge", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert any("outside the run folder" in w and "--base" in w for w in doc["warnings"])
    assert any("modeling_evil.py" in w and "--carry-remote-code" in w for w in doc["warnings"])
    assert not list(out.glob("*.py")) and not (evil / "I_RAN").exists()  # not carried, never executed
    # Asked for: carried (still not executed: logsage never passes trust_remote_code unless told).
    out2 = tmp_path / "merged-with-code"
    r = CliRunner().invoke(cli, ["select", str(run_copy), "--rule", "hf:patience=1", "--export", str(out2),
                                 "--merge", "--carry-remote-code", "--base", str(evil), "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert (out2 / "modeling_evil.py").is_file() and not (evil / "I_RAN").exists()
    assert not any("outside the run folder" in w for w in doc["warnings"])  # named by the user: no warning
