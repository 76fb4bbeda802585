"""Hostile run folders (issue 9): nothing hangs, nothing is skipped without a word.

FIFOs and devices named like logs, a symlink to /dev/zero, looping links, a folder 1,200
levels deep, a sub-folder the user cannot list (a real non-root user, and an injected
OSError), 20,000 unrelated files, a JSON log over the read cap. Every test that could
hang runs under an alarm. The trainer_state.json files are real ones from
../shared/real-runs, read in place or copied byte for byte into the test's own folder.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import logsage
from logsage.core.errors import IngestError

ROOT = Path(__file__).resolve().parents[2]
REAL = ROOT.parent / "shared" / "real-runs" / "hf_trainer_state"
STATE = REAL / "whisper-large-v2-ja-38ep" / "trainer_state.json"
pytestmark = pytest.mark.skipif(not STATE.exists(), reason="needs ../shared/real-runs")


@contextlib.contextmanager
def no_hang(seconds: int = 60):
    """Fail (instead of blocking the suite forever) when the body takes longer than `seconds`."""
    def boom(signum, frame):
        raise TimeoutError(f"did not finish within {seconds} s")

    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _run_with_state(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    shutil.copyfile(STATE, run / "trainer_state.json")
    return run


def _skips(h) -> list[str]:
    return [c.message for c in h.cleanups if c.kind == "skipped_file"]


def test_fifo_named_like_an_event_file_is_skipped_with_a_cleanup(tmp_path):
    run = _run_with_state(tmp_path)
    os.mkfifo(run / "events.out.tfevents.1.host.1.0")
    with no_hang():
        h = logsage.load_history(run, use_cache=False)
    assert len(h.metric("eval_loss")) == 5
    assert any("events.out.tfevents.1.host.1.0" in m and "FIFO" in m for m in _skips(h)), _skips(h)


def test_fifo_named_trainer_state_is_skipped_and_a_fifo_given_directly_is_one_line(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    os.mkfifo(run / "trainer_state.json")
    with no_hang():
        with pytest.raises(IngestError, match="no training log found"):
            logsage.load_history(run, use_cache=False)
        with pytest.raises(IngestError, match=r"trainer_state.json: is a FIFO \(named pipe\), not a regular file"):
            logsage.load_history(run / "trainer_state.json", use_cache=False)


def test_symlink_to_dev_zero_is_skipped_not_read(tmp_path):
    run = _run_with_state(tmp_path)
    os.symlink("/dev/zero", run / "all_results.json")
    os.symlink("/dev/zero", run / "events.out.tfevents.2.host.1.0")
    with no_hang():
        h = logsage.load_history(run, use_cache=False)
        with pytest.raises(IngestError, match="character device"):
            logsage.load_history(run / "events.out.tfevents.2.host.1.0", use_cache=False)
    assert len(h.metric("eval_loss")) == 5
    assert sum("character device" in m for m in _skips(h)) == 2


def test_json_read_is_capped_with_the_fix_in_the_message(tmp_path, monkeypatch):
    run = _run_with_state(tmp_path)
    monkeypatch.setenv("LOGSAGE_MAX_JSON_BYTES", "1000")
    with pytest.raises(IngestError) as e:
        logsage.load_history(run / "trainer_state.json", use_cache=False)
    msg = str(e.value)
    assert str(run / "trainer_state.json") in msg and "1,000 bytes" in msg and "LOGSAGE_MAX_JSON_BYTES" in msg
    monkeypatch.setenv("LOGSAGE_MAX_JSON_BYTES", str(STATE.stat().st_size))  # exactly the file: allowed
    assert len(logsage.load_history(run, use_cache=False).metric("eval_loss")) == 5


def test_looping_symlink_named_like_an_event_file_is_a_recorded_skip(tmp_path):
    run = _run_with_state(tmp_path)
    loop = run / "events.out.tfevents.3.host.1.0"
    os.symlink(loop.name, loop)  # points at itself: ELOOP
    os.symlink("missing-target", run / "events.out.tfevents.4.host.1.0")
    h = logsage.load_history(run, use_cache=False)
    assert len(h.metric("eval_loss")) == 5
    skips = _skips(h)
    assert any(loop.name in m and "looping" in m for m in skips), skips
    assert any("events.out.tfevents.4.host.1.0" in m for m in skips), skips


def test_run_folder_1200_levels_deep_is_no_recursion_error(tmp_path):
    run = tmp_path / "run"
    deep = run
    for _ in range(1200):
        deep = deep / "d"
        deep.mkdir(parents=deep.parent == run)
    shutil.copyfile(STATE, deep / "trainer_state.json")
    try:
        h = logsage.load_history(run, use_cache=False)
        assert len(h.metric("eval_loss")) == 5
        assert h.files == [str(deep / "trainer_state.json")]
    finally:  # bottom-up, iteratively: shutil.rmtree (and pytest's cleanup) recurse per level
        (deep / "trainer_state.json").unlink()
        while deep != run:
            deep.rmdir()
            deep = deep.parent


def test_unlistable_subfolder_injected_oserror_is_a_warning(tmp_path, monkeypatch):
    run = _run_with_state(tmp_path)
    (run / "runs" / "Mar01").mkdir(parents=True)
    real_scandir = os.scandir

    def scandir(path="."):
        if Path(path).name == "Mar01":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    h = logsage.load_history(run, use_cache=False)
    assert len(h.metric("eval_loss")) == 5
    assert any("runs/Mar01 cannot be listed (Permission denied)" in w for w in h.warnings), h.warnings
    assert any(c.kind == "skipped_file" and c.file == str(run / "runs" / "Mar01") for c in h.cleanups)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root to switch to a user")
def test_unlistable_subfolder_as_a_real_non_root_user():
    """chmod 000 on a sub-folder, then `logsage ingest` run as nobody: a warning, exit 0, never silent."""
    top = Path(tempfile.mkdtemp(prefix="logsage-nonroot-", dir="/tmp"))
    try:
        os.chmod(top, 0o755)
        run = top / "run"
        run.mkdir()
        shutil.copyfile(STATE, run / "trainer_state.json")
        hidden = run / "runs" / "Mar01"
        hidden.mkdir(parents=True)
        for d in (run, run / "runs"):
            os.chmod(d, 0o755)
        os.chmod(run / "trainer_state.json", 0o644)
        os.chmod(hidden, 0)
        env = dict(os.environ, PYTHONPATH=str(ROOT), LOGSAGE_CACHE_DIR=str(top / "cache"), HOME=str(top))
        as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable]
        probe = subprocess.run([*as_nobody, "-c", "import click, numpy, logsage"], capture_output=True, env=env,
                               timeout=60, cwd=str(top))
        if probe.returncode != 0:  # e.g. the interpreter's site-packages live under root's 0700 home
            pytest.skip("the Python environment is not readable by a non-root user here")
        r = subprocess.run([*as_nobody, "-m", "logsage", "ingest", str(run), "--json", "--no-cache"],
                           capture_output=True, text=True, env=env, timeout=120, cwd=str(top))
        assert r.returncode == 0, r.stderr
        assert "runs/Mar01 cannot be listed (Permission denied)" in r.stderr
        assert "Traceback" not in r.stderr
    finally:
        os.chmod(top / "run" / "runs" / "Mar01", 0o755)
        shutil.rmtree(top)


def test_twenty_thousand_unrelated_files_are_summarised(tmp_path):
    run = _run_with_state(tmp_path)
    junk = run / "junk"
    junk.mkdir()
    for i in range(20_000):
        (junk / f"sample_{i:05d}.txt").touch()
    h = logsage.load_history(run, use_cache=False)
    skips = [c for c in h.cleanups if c.kind == "skipped_file"]
    assert len(skips) == 1, len(skips)
    assert skips[0].count == 20_000 and "20000 files: not a log format" in skips[0].message
    assert "junk/sample_00000.txt" in skips[0].message and len(skips[0].message) < 400


def test_a_few_unrelated_files_are_still_named_one_by_one(tmp_path):
    run = _run_with_state(tmp_path)
    for name in ("notes.txt", "todo.txt"):
        (run / name).write_text("x")
    h = logsage.load_history(run, use_cache=False)
    assert sorted(m.split(":")[0] for m in _skips(h)) == ["notes.txt", "todo.txt"]


def test_regular_files_only_inside_checkpoints(tmp_path):
    run = _run_with_state(tmp_path)
    ck = run / "checkpoint-10"
    ck.mkdir()
    os.mkfifo(ck / "trainer_state.json")
    with no_hang():
        h = logsage.load_history(run, use_cache=False)
    assert len(h.metric("eval_loss")) == 5
    assert any("checkpoint-10/trainer_state.json" in m and "FIFO" in m for m in _skips(h))
    assert stat.S_ISFIFO(os.lstat(ck / "trainer_state.json").st_mode)  # left as it was
