"""CLI basics: start-up weight, help, version, exit codes and one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from logsage.cli.main import cli
from corpus import REAL_RUNS, needs_corpus

ROOT = Path(__file__).resolve().parents[2]
RUN = REAL_RUNS / "hf_trainer_state" / "gner-qe-roberta-large-lr5e-5-nan"
HEAVY = ("torch", "transformers", "peft")


def _run(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "logsage", *args], capture_output=True, text=True, cwd=ROOT, **kw)


@needs_corpus
def test_import_cli_and_analysis_commands_never_import_torch():
    code = (
        "import sys, logsage.cli.main\n"
        "from click.testing import CliRunner\n"
        "r = CliRunner()\n"
        "def ok(args):\n"
        "    res = r.invoke(logsage.cli.main.cli, args)\n"
        "    assert res.exit_code == 0 and res.exception is None, (args, res.output)\n"
        "ok(['--help'])\n"
        f"ok(['ingest', {str(RUN)!r}, '--json'])\n"
        "for name in ('replay', 'rules', 'tune', 'report', 'watch'):\n"
        "    ok([name, '--help'])\n"
        f"ok(['replay', {str(RUN)!r}, '--rule', 'hf', '--json'])\n"
        "ok(['rules'])\n"
        "print(','.join(m for m in " + repr(HEAVY) + " if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"heavy modules imported: {out.stdout}"


def test_help_lists_commands_and_version():
    r = CliRunner().invoke(cli, ["--help"])
    assert r.exit_code == 0 and "ingest" in r.output
    r = CliRunner().invoke(cli, ["--version"])
    assert r.exit_code == 0 and "logsage" in r.output


def test_python_dash_m_works():
    out = _run("--version")
    assert out.returncode == 0 and out.stdout.startswith("logsage")


def test_format_names_match_readers():
    from logsage.cli.output import FORMAT_NAMES
    from logsage.ingest import _READER_MODULES, formats

    # One --format choice per reader module, and every choice has a reader that loaded.
    assert len(FORMAT_NAMES) == len(set(FORMAT_NAMES)) == len(_READER_MODULES)
    assert sorted(formats()) == sorted(FORMAT_NAMES)


@needs_corpus
def test_ingest_json_is_one_strict_document(tmp_path):
    out = _run("ingest", str(RUN), "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout, parse_constant=lambda c: pytest.fail(f"non-strict JSON token {c}"))
    (run,) = doc["runs"]
    assert run["path"] == str(RUN)
    assert run["format"] == "trainer-state"
    assert run["metrics"]["eval_loss"] == {**run["metrics"]["eval_loss"], "count": 25, "first_step": 500,
                                           "last_step": 12500, "canonical": "eval_loss"}
    assert run["checkpoints"] == [] and isinstance(run["warnings"], list)
    # That run only counts its NaN evaluations: no non-finite number reaches its document. Here NaN /
    # Infinity sit in fields printed as numbers: the trainer's best_metric (meta) and a final
    # trainer.evaluate() after training (summary); they must come out as null.
    state = json.loads((RUN / "trainer_state.json").read_text())
    state["best_metric"] = float("nan")
    final = dict([r for r in state["log_history"] if "eval_loss" in r][-1], eval_pearson=float("nan"),
                 eval_mse=float("inf"))
    state["log_history"].append(final)
    (tmp_path / "trainer_state.json").write_text(json.dumps(state))  # bare NaN / Infinity, as Python writes them
    out = _run("ingest", str(tmp_path), "--json")
    assert out.returncode == 0, out.stderr
    (run,) = json.loads(out.stdout, parse_constant=lambda c: pytest.fail(f"non-strict JSON token {c}"))["runs"]
    assert run["meta"]["best_metric"] is None
    assert run["summary"]["eval_pearson"] is None and run["summary"]["eval_mse"] is None
    assert run["summary"]["eval_loss"] == final["eval_loss"]  # the finite ones are kept


@needs_corpus
def test_path_echoed_as_given(tmp_path):
    rel = os.path.relpath(REAL_RUNS / "hf_trainer_state" / "whisper-large-v2-ja-38ep", ROOT) + "/"
    out = _run("ingest", rel, "--json")
    assert json.loads(out.stdout)["runs"][0]["path"] == rel


@needs_corpus
@pytest.mark.parametrize("args,code,needle", [
    (["ingest", "does/not/exist"], 1, "does/not/exist: no such file or folder"),
    (["ingest", str(RUN), "--format", "nope"], 2, "Invalid value for '--format'"),
    (["ingest"], 2, "Missing argument"),
    (["nonsense-command"], 2, "No such command"),
])
def test_bad_input_exit_codes_and_one_line_errors(args, code, needle):
    out = _run(*args)
    assert out.returncode == code
    assert needle in out.stderr
    if code == 1:
        assert out.stderr.strip().count("\n") == 0 and out.stderr.startswith("Error: ")


def test_unreadable_file_names_the_file(tmp_path):
    p = tmp_path / "trainer_state.json"
    p.write_text('{"log_history": [ {"step": 1, ')
    out = _run("ingest", str(p))
    assert out.returncode == 1 and str(p) in out.stderr and "Traceback" not in out.stderr
    dbg = _run("--debug", "ingest", str(p))
    assert "Traceback" in dbg.stderr
    after = _run("ingest", str(p), "--debug")  # also accepted after the subcommand
    assert "Traceback" in after.stderr


@needs_corpus
def test_several_runs_one_bad(tmp_path):
    out = _run("ingest", str(RUN), str(tmp_path / "missing"), "--json")
    assert out.returncode == 1
    doc = json.loads(out.stdout)
    assert len(doc["runs"]) == 1 and doc["errors"][0]["run"] == str(tmp_path / "missing")


@needs_corpus
def test_cli_reads_event_files_without_numba_probing_scipy_linalg(tmp_path):
    # numba's optional BLAS probe imports scipy.linalg (~0.4 s of a cold ingest); the CLI
    # skips it because logsage's kernel uses no BLAS (logsage/core/startup.py).
    run = REAL_RUNS / "tfevents" / "lightning-seq2seq-translit-v15"
    code = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from logsage.cli.main import cli\n"
        f"r = CliRunner().invoke(cli, ['ingest', {str(run)!r}, '--json', '--no-cache'])\n"
        "assert r.exit_code == 0, r.output\n"
        "print('scipy.linalg' in sys.modules)\n"
        "import scipy.linalg.cython_blas  # still importable afterwards\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_a_mistyped_command_gets_a_suggestion_and_exit_2():
    out = _run("replya", "x")
    assert out.returncode == 2
    assert "No such command 'replya'. Did you mean 'replay'?" in out.stderr


def test_command_list_is_in_workflow_order_and_never_cut():
    out = _run("--help")
    listed = [line.split()[0] for line in out.stdout.split("Commands:")[1].splitlines()
              if line.startswith("  ") and not line.startswith("   ")]
    from logsage.cli.main import _COMMANDS

    assert listed == list(_COMMANDS)
    assert listed.index("ingest") < listed.index("replay") < listed.index("tune") < listed.index("select")
    assert "..." not in out.stdout.split("Commands:")[1] and "…" not in out.stdout


@pytest.mark.slow
def test_ingest_lists_every_checkpoint_of_a_trained_run(tiny_run_dir):
    res = CliRunner().invoke(cli, ["ingest", str(tiny_run_dir)])
    assert res.exit_code == 0, res.output
    steps = sorted(int(p.name.split("-")[1]) for p in Path(tiny_run_dir).glob("checkpoint-*"))
    assert f"checkpoints: {len(steps)} ({len(steps)} whole)" in res.output
    for step in steps:
        assert f"checkpoint-{step}  adapter, whole" in res.output


def test_a_missing_eval_metric_is_never_offered_the_training_loss_as_a_stand_in():
    import numpy as np

    from logsage.core.errors import MetricNotFound
    from logsage.core.history import History, Series

    h = History(path="runs/f1-only", format="synthetic")
    h.series["eval_f1"] = Series("eval_f1", np.arange(1, 6), np.linspace(0.1, 0.5, 5))
    h.series["loss"] = Series("loss", np.arange(1, 6), np.linspace(2.0, 1.0, 5))
    with pytest.raises(MetricNotFound) as e:
        h.resolve("eval_loss")
    assert "did you mean 'loss'" not in str(e.value) and "available: eval_f1, loss" in str(e.value)
    with pytest.raises(MetricNotFound) as e:
        h.resolve("eval_f")
    assert "did you mean 'eval_f1'" in str(e.value)
