"""Outputs that cannot be written are one line naming the path, what happened and what to do; exit 1 (issue 9).

Faults are real where this machine allows them and injected otherwise:
* a read-only filesystem: a tmpfs mounted read-only (needs root and mount rights; skipped without);
* a full disk: `/dev/full` for stdout; an `OSError(ENOSPC)` injected into the export's file copy;
* a folder the user may not write: running as root, permissions do not apply, so
  `PermissionError(EACCES)` is injected into `open`/`mkdir` for paths under that folder
  (exactly what a non-root user gets from the kernel).
Runs are the real logs of `../shared/real-runs/` (read in place) and files written by
transformers' TrainerState.
"""

from __future__ import annotations

import builtins
import io
import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from logsage.cli.main import cli

ROOT = Path(__file__).resolve().parents[2]
REAL = ROOT.parent / "shared" / "real-runs"


def _a_real_run() -> Path:
    runs = sorted(p for p in REAL.glob("hf_trainer_state/*") if p.is_dir()) if REAL.is_dir() else []
    if not runs:
        pytest.skip(f"{REAL} (the shared corpus of real runs) is not here")
    return runs[0]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def _one_line(text: str) -> str:
    lines = [x for x in text.strip().splitlines() if x.strip() and not x.lstrip().startswith(("warning", "warnings."))]
    assert "Traceback" not in text and "Exception ignored" not in text, text
    assert len(lines) == 1, text
    return lines[0]


@pytest.fixture()
def read_only_dir(tmp_path):
    """A real read-only filesystem (tmpfs mounted ro)."""
    d = tmp_path / "ro"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(d)], capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a read-only tmpfs here (needs root and mount rights)")
    try:
        yield d
    finally:
        subprocess.run(["umount", str(d)], capture_output=True)


@pytest.fixture()
def forbidden(tmp_path, monkeypatch):
    """A folder that open()/mkdir() refuse with EACCES, as the kernel does for a user who may not write it."""
    d = tmp_path / "not-mine"
    d.mkdir()
    real_open, real_mkdir = builtins.open, os.mkdir

    def inside(p) -> bool:
        try:
            return Path(os.path.abspath(os.fspath(p))).is_relative_to(d)
        except TypeError:  # a file descriptor
            return False

    def guarded_open(file, mode="r", *a, **k):
        if inside(file) and any(c in mode for c in "wax+"):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(file))
        return real_open(file, mode, *a, **k)

    def guarded_mkdir(path, *a, **k):
        if inside(path):
            raise PermissionError(errno.EACCES, "Permission denied", os.fspath(path))
        return real_mkdir(path, *a, **k)

    monkeypatch.setattr(builtins, "open", guarded_open)
    monkeypatch.setattr(io, "open", guarded_open)  # pathlib's write_text goes through io.open
    monkeypatch.setattr(os, "mkdir", guarded_mkdir)
    return d


# ---------------------------------------------------------------------------- stdout
@pytest.mark.parametrize("args", [["ingest", "{run}", "--json"], ["replay", "{run}", "--rule", "hf:patience=3", "--json"],
                                  ["ingest", "{run}"], ["rules", "--json"]])
def test_json_to_a_full_stdout_is_one_line_and_exit_1(args):
    run = _a_real_run()
    with open("/dev/full", "w") as full:
        r = subprocess.run([sys.executable, "-m", "logsage", *[a.format(run=run) for a in args]], stdout=full,
                           stderr=subprocess.PIPE, text=True, env=_env(), timeout=120)
    assert r.returncode == 1, r.stderr
    line = _one_line(r.stderr)
    assert "stdout" in line and "No space left on device" in line


# ---------------------------------------------------------------------------- report / replay --plot / --png
def test_report_replay_plot_and_png_into_a_read_only_filesystem(read_only_dir, tmp_path):
    run = _a_real_run()
    cases = [(["report", str(run), "--out", str(read_only_dir / "r.html")], read_only_dir),
             (["report", str(run), "--out", str(tmp_path / "r.html"), "--png", str(read_only_dir / "plots")],
              read_only_dir / "plots"),
             (["replay", str(run), "--rule", "hf:patience=3", "--plot", str(read_only_dir / "c.png")],
              read_only_dir / "c.png")]
    for args, where in cases:
        r = subprocess.run([sys.executable, "-m", "logsage", *args], capture_output=True, text=True, env=_env(),
                           timeout=180)
        assert r.returncode == 1, (args, r.stderr)
        line = _one_line(r.stderr)
        assert str(read_only_dir) in line and "Read-only file system" in line and "writable" in line, line


def test_report_replay_plot_and_png_into_a_folder_the_user_may_not_write(forbidden, tmp_path):
    run = _a_real_run()
    for args in (["report", str(run), "--out", str(forbidden / "r.html")],
                 ["report", str(run), "--out", str(tmp_path / "ok.html"), "--png", str(forbidden / "plots")],
                 ["replay", str(run), "--rule", "hf:patience=3", "--plot", str(forbidden / "c.png")]):
        r = CliRunner().invoke(cli, args)
        assert r.exit_code == 1, (args, r.output)
        line = _one_line(r.stderr)  # replay has printed its table on stdout before the plot
        assert str(forbidden) in line and "Permission denied" in line and "choose a folder you own" in line


def test_train_output_that_is_a_file_is_refused_before_any_model_loads(tmp_path):
    afile = tmp_path / "run"
    afile.write_text("not a folder")
    r = subprocess.run([sys.executable, "-m", "logsage", "train", "--model", "/nonexistent-model",
                        "--data", str(ROOT / "examples" / "data" / "tiny_alpaca.jsonl"), "--output", str(afile)],
                       capture_output=True, text=True, env=_env(), timeout=120)
    assert r.returncode == 2, r.stderr
    line = _one_line(r.stderr)
    assert str(afile) in line and "is a file" in line and afile.read_text() == "not a folder"


# ---------------------------------------------------------------------------- exports
@pytest.fixture(scope="module")
def adapter_ckpt(tmp_path_factory):
    """A checkpoint folder with a small adapter written by safetensors' own writer."""
    import json

    import numpy as np
    from safetensors.numpy import save_file

    d = tmp_path_factory.mktemp("faults") / "checkpoint-10"
    d.mkdir()
    (d / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 4,
                                                       "base_model_name_or_path": "nowhere"}))
    save_file({"base_model.model.q_proj.lora_A.weight": np.ones((2, 8), np.float32)},
              str(d / "adapter_model.safetensors"))
    (d / "generation_config.json").write_text("{}")
    return d


def _strays(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if ".logsage-" in p.name) if parent.is_dir() else []


@pytest.mark.parametrize("code,words", [(errno.ENOSPC, "free some space"), (errno.EROFS, "writable filesystem"),
                                        (errno.EACCES, "you may write to")])
def test_export_write_failures_are_one_line_and_leave_nothing_behind(adapter_ckpt, tmp_path, monkeypatch, code,
                                                                     words):
    from logsage.core.errors import ExportError
    from logsage.ship import export as export_mod

    real_copy = shutil.copy2

    def failing_copy(src, dst, *a, **k):
        if str(dst).startswith(str(tmp_path)):
            raise OSError(code, os.strerror(code), str(dst))
        return real_copy(src, dst, *a, **k)

    monkeypatch.setattr(export_mod.shutil, "copy2", failing_copy)
    out = tmp_path / "ship"
    with pytest.raises(ExportError) as e:
        export_mod.export_checkpoint(adapter_ckpt, out)
    msg = str(e.value)
    assert "\n" not in msg and os.strerror(code) in msg and words in msg and str(out) in msg
    assert not out.exists() and _strays(tmp_path) == []


def test_export_into_a_read_only_filesystem_and_a_forbidden_folder(adapter_ckpt, read_only_dir, tmp_path):
    from logsage.core.errors import ExportError
    from logsage.ship.export import export_checkpoint

    with pytest.raises(ExportError, match="Read-only file system.*writable filesystem"):
        export_checkpoint(adapter_ckpt, read_only_dir / "ship")


def test_export_cli_into_a_forbidden_folder_is_one_line(adapter_ckpt, forbidden, tmp_path):
    from transformers import TrainerState

    run = tmp_path / "run"
    run.mkdir()
    shutil.copytree(adapter_ckpt, run / "checkpoint-10")
    TrainerState(global_step=10, max_steps=10, log_history=[{"eval_loss": 1.0, "step": 10, "epoch": 1.0}]
                 ).save_to_json(str(run / "trainer_state.json"))
    r = CliRunner().invoke(cli, ["select", str(run), "--rule", "hf:patience=1", "--export", str(forbidden / "ship")])
    assert r.exit_code == 1, r.output
    line = _one_line(r.stderr)
    assert str(forbidden) in line and "Permission denied" in line
