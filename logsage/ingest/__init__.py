"""Ingest: any supported training log (a file or a run folder) into one `History`.

    >>> from logsage import load_history
    >>> h = load_history("runs/qwen-lora")              # format detected and reported in h.format
    >>> h = load_history("events.out.tfevents.1.host", format="tensorboard")

What a run is: each path given is one run. A folder is one run whatever it holds
(a trainer_state.json at its root and in checkpoint-N/, several event files,
summaries such as all_results.json, a logsage manifest). When two sources in the
folder hold the same metric, the more precise one wins (trainer_state.json keeps
float64, event files float32, model cards are rounded) and the choice is recorded
in `History.cleanups`. Summary files are run summaries (`History.summary`), never
points of a curve. Files no reader claims are listed as skipped, not read.

One module per format; `FORMATS` lists them in detection order.
"""

from __future__ import annotations

import importlib
import os
import re
import stat
from pathlib import Path
from types import ModuleType
from typing import Iterable, Iterator

import numpy as np

from logsage.core.errors import IngestError, UsageError
from logsage.core.history import Cleanup, History, Series
from logsage.core.runfolder import RUN_MANIFEST, checkpoint_step
from logsage.ingest.readers.base import PRECISION_RANK, ReadContext, ReadResult, file_kind, open_regular

# Detection order matters: the first reader that claims a file reads it.
_READER_MODULES = [
    "trainer_state",
    "tensorboard",
    "swift",
    "llamafactory",
    "lightning_csv",
    "yolo_csv",
    "sentence_transformers_csv",
    "keras_csv",
    "openai_ft",
    "bedrock",
    "dvclive",
    "tb_csv",
    "wandb_csv",
    "wandb_run",
    "trackio",
    "mlflow",
    "model_card",
    "torchtune_log",
    "mlx_log",
    "console_log",
    "wide",
]

SUMMARY_FILES = {"all_results.json", "eval_results.json", "train_results.json", "test_results.json",
                  "predict_results.json"}
# Files that belong to a run but are not metric logs; listed as ignored, not as "skipped".
KNOWN_NON_LOGS = {"SOURCE.txt", "hparams.yaml", "args.json", "adapter_config.json", "config.json",
                   "training_args.bin", RUN_MANIFEST, "tokenizer.json", "tokenizer_config.json",
                   "special_tokens_map.json", "generation_config.json", "vocab.json", "merges.txt",
                   ".gitattributes", "chat_template.jinja", "running_log.txt", "training_args.yaml",
                   # a W&B run folder's companions (wandb-summary.json is read by the wandb-run reader)
                   "wandb-summary.json", "wandb-metadata.json", "requirements.txt", "config.yaml", "diff.patch",
                   "debug.log", "debug-internal.log", "debug-core.log"}

# Weights, images and code: part of a run folder, never logs.
NOT_LOG_SUFFIXES = {".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".model", ".png", ".jpg", ".jpeg",
                     ".svg", ".py", ".lock", ".npz", ".npy", ".gguf", ".onnx", ".msgpack", ".h5"}

_loaded: dict[str, ModuleType] = {}


def reader_modules() -> list[ModuleType]:
    mods = []
    for name in _READER_MODULES:
        if name not in _loaded:
            try:
                _loaded[name] = importlib.import_module(f"logsage.ingest.readers.{name}")
            except ModuleNotFoundError as e:  # a reader not written yet: not offered
                if e.name == f"logsage.ingest.readers.{name}":
                    continue
                raise
        mods.append(_loaded[name])
    return mods


def formats() -> list[str]:
    """Names accepted by `--format`, in detection order."""
    return [m.FORMAT for m in reader_modules()]


def formats_table_markdown() -> str:
    """The README's formats table, from each reader's `FORMAT` and `DESCRIPTION`, in detection order
    (a test keeps the README equal to it)."""
    lines = ["| `--format` | what it reads |", "|---|---|"]
    lines += [f"| `{m.FORMAT}` | {m.DESCRIPTION.replace('|', '/')} |" for m in reader_modules()]
    return "\n".join(lines) + "\n"


class _Formats:
    """Lazy list of supported format names (`logsage.FORMATS`)."""

    def __iter__(self):
        return iter(formats())

    def __contains__(self, item: object) -> bool:
        return item in formats()

    def __repr__(self) -> str:
        return repr(formats())


FORMATS = _Formats()


def _head(path: Path) -> bytes:
    try:
        with open_regular(path) as f:  # never blocks, even if the file was swapped for a FIFO
            return f.read(4096)
    except (OSError, IngestError):
        return b""


class SkippedFiles:
    """Files of a run folder that are not read, by reason: one cleanup per file while they are few,
    one summary per reason (count and a few examples) when a folder holds thousands."""

    LIST_UP_TO = 20
    EXAMPLES = 5

    def __init__(self, root: Path) -> None:
        self.root = root
        self.by_reason: dict[str, list[Path]] = {}

    def add(self, path: Path, reason: str) -> None:
        self.by_reason.setdefault(reason, []).append(path)

    def cleanups(self) -> list[Cleanup]:
        out: list[Cleanup] = []
        for reason, paths in self.by_reason.items():
            if len(paths) <= self.LIST_UP_TO:
                out.extend(Cleanup("skipped_file", f"{self._rel(f)}: {reason}; skipped", file=str(f)) for f in paths)
                continue
            examples = ", ".join(self._rel(f) for f in paths[:self.EXAMPLES])
            out.append(Cleanup("skipped_file", f"{len(paths)} files: {reason}; skipped (e.g. {examples}, ...)",
                               file=str(self.root), count=len(paths)))
        return out

    def _rel(self, f: Path) -> str:
        try:
            return str(f.relative_to(self.root))
        except ValueError:
            return str(f)


def walk_run(root: Path, history: History, skipped: SkippedFiles, *, skip_checkpoints: set[str] | None = None,
          found_checkpoint: set[str] | None = None) -> Iterator[Path]:
    """Regular files of a run folder, sorted, depth first; a checkpoint-N/ folder contributes only
    its trainer_state.json.

    For a follower that lists the folder again and again (`logsage.ingest.follow.run_files`):
    `skip_checkpoints` names top-level folders not to list again, and `found_checkpoint` is
    filled with the checkpoint folders whose trainer_state.json was listed.

    Iterative (a folder 1,200 levels deep is no RecursionError); symlinked folders are not
    followed (no loops); FIFOs, devices, sockets and broken or looping links are skipped and
    recorded (opening a FIFO would block forever); a folder that cannot be listed is a warning.
    """
    stack: list[tuple[Path, tuple[str, ...]]] = [(root, ())]
    while stack:
        here, parts = stack.pop()
        try:
            with os.scandir(here) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as e:
            if not parts:
                raise IngestError(f"{root}: cannot be listed ({e.strerror or e}); check its permissions") from None
            msg = (f"{root}: sub-folder {'/'.join(parts)} cannot be listed ({e.strerror or e}); "
                   "its logs (event files, checkpoints) are missing from this run - fix its permissions")
            history.warnings.append(msg)
            history.cleanups.append(Cleanup("skipped_file", msg, file=str(here)))
            continue
        in_checkpoint = bool(parts) and (checkpoint_step(parts[0]) is not None)
        subdirs = []
        for entry in entries:
            try:
                is_dir = entry.is_dir(follow_symlinks=False)
            except OSError:
                is_dir = False
            if is_dir:
                if not in_checkpoint and not entry.name.startswith(".") and entry.name != "__pycache__" \
                        and not (not parts and skip_checkpoints and entry.name in skip_checkpoints):
                    subdirs.append(entry.name)
                continue
            if in_checkpoint and (len(parts) > 1 or entry.name != "trainer_state.json"):
                continue  # weights, optimizer state...: the checkpoint inventory reads those
            path = here / entry.name
            try:
                st = os.stat(path)  # follows a link: what would be read
            except OSError as e:
                skipped.add(path, f"cannot be read ({e.strerror or e}: a broken or looping link?)")
                continue
            if stat.S_ISDIR(st.st_mode):
                continue  # a symlinked folder: not followed
            if not stat.S_ISREG(st.st_mode):
                skipped.add(path, f"{file_kind(st.st_mode)}, not a regular file")
                continue
            if in_checkpoint and found_checkpoint is not None:
                found_checkpoint.add(parts[0])
            yield path
        stack.extend((here / d, parts + (d,)) for d in reversed(subdirs))


def claiming_reader(path: Path, readers: list[ModuleType], choices: list[Cleanup] | None = None) -> ModuleType | None:
    """The first reader (in detection order, the most specific first) that claims `path`.

    When later readers claim it too (a YOLO results.csv also looks like a Keras log), the
    choice is appended to `choices` as a ``format_choice`` cleanup naming the others.
    """
    head = _head(path)
    claimants = []
    for r in readers:
        try:
            if r.claims(path, head):
                claimants.append(r)
        except Exception:  # a sniffing bug must not hide other formats
            continue
        if claimants and choices is None:
            break
    if not claimants:
        return None
    others = ", ".join(r.FORMAT for r in claimants[1:] if not getattr(r, "FALLBACK", False))
    if others and choices is not None:  # the fallback (wide) takes any csv with a step column: no news
        choices.append(Cleanup("format_choice", f"{path.name}: read as {claimants[0].FORMAT}, the more specific of "
                               f"the formats it matches (also: {others}); pass --format to force another",
                               file=str(path)))
    return claimants[0]


def load_history(
    path: str | os.PathLike,
    *,
    format: str | None = None,
    use_cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
    session: int | None = None,
) -> History:
    """Read one run (a log file or a run folder) into a `History`.

    Args:
        path: a log file or a run folder; echoed back unchanged in `History.path`.
        format: force a reader (one of `formats()`); default: detect per file.
        use_cache: reuse parsed event files from the cache when unchanged.
        cache_dir: where the cache lives (default: the user's cache folder).
        session: for a log holding several training sessions (a Keras CSVLogger with
            append=True whose epochs restart at 0), which one to read: 1-based, negative
            counts from the end; default the last (recorded as a ``sessions`` cleanup).
            `sessions_of(path)` says how many there are, to read each as its own run.

    Raises:
        IngestError: the path is missing, holds no log, or a log is broken.
        UsageError: `format` is not a supported format.
    """
    given = str(path)
    p = Path(path)
    readers = reader_modules()
    if format is not None:
        match = [r for r in readers if r.FORMAT == format]
        if not match:
            raise UsageError(f"unknown format {format!r}; choose one of: {', '.join(formats())}")
        readers = match
    if not p.exists():
        raise IngestError(f"{given}: no such file or folder; give a log file or a run folder")
    ctx = ReadContext(use_cache=use_cache, cache_dir=Path(cache_dir) if cache_dir else None,
                      run_root=p if p.is_dir() else None, session=session)
    history = History(path=given, format="")
    groups: dict[str, list[Path]] = {}
    by_name = {r.FORMAT: r for r in readers}

    if not p.is_dir():
        try:
            st = os.stat(p)
        except OSError as e:
            raise IngestError(f"{given}: cannot be read ({e.strerror or e}); check the path") from None
        if not stat.S_ISREG(st.st_mode):
            raise IngestError(f"{given}: is {file_kind(st.st_mode)}, not a regular file; logsage reads only "
                              "regular files - give the log file or its run folder")
    if p.is_file():
        r = readers[0] if format is not None else claiming_reader(p, readers, history.cleanups)
        if r is None:
            raise IngestError(
                f"{given}: not a log format logsage recognises; pass --format with one of: {', '.join(formats())}"
            )
        groups[r.FORMAT] = [p]
    else:
        skipped = SkippedFiles(p)
        for f in walk_run(p, history, skipped):
            if f.name in SUMMARY_FILES:
                _read_summary(f, history)
                continue
            if f.name == RUN_MANIFEST:
                history.meta.setdefault("manifest", str(f))
                continue
            r = claiming_reader(f, readers, history.cleanups)
            if r is None:
                if f.name not in KNOWN_NON_LOGS and f.suffix.lower() not in NOT_LOG_SUFFIXES:
                    skipped.add(f, "not a log format logsage reads")
                continue
            groups.setdefault(r.FORMAT, []).append(f)
        _drop_wandb_console(p, groups, history)
        history.cleanups.extend(skipped.cleanups())

    _warn_if_several_runs(p, groups, history)
    results: list[ReadResult] = []
    for fmt, files in groups.items():
        results.append(by_name[fmt].read(files, ctx=ctx))

    merge_sources(history, results)

    from logsage.ingest.checkpoints import scan  # local: only folders have checkpoints

    if p.is_dir():
        from logsage.ingest.per_example import read_per_example

        found = scan(p)
        history.checkpoints = found.checkpoints
        history.cleanups.extend(Cleanup("skipped_file", why, file=path) for path, why in found.skipped)
        try:  # written by `logsage train` at every evaluation; used by the significance rule
            history.per_example = read_per_example(p)
        except IngestError as e:
            history.warnings.append(str(e))
    if not history.series:
        if not results and format is not None:
            raise IngestError(f"{given}: no {format} log found; check the path, or drop --format to detect the format")
        if not results:
            raise IngestError(
                f"{given}: no training log found (looked for trainer_state.json, TensorBoard event files, "
                "logging.jsonl, trainer_log.jsonl, metrics.csv, ...); pass --format to force a reader"
            )
        history.warnings.append(f"{given}: the log holds no metric values")
    return history


def _drop_wandb_console(root: Path, groups: dict[str, list[Path]], history: History) -> None:
    """A W&B run folder's `files/output.log` repeats, with record ordinals for steps, what its
    `run-*.wandb` history holds with the real steps: read the history only (and say so)."""
    console, wandb_files = groups.get("hf-console"), groups.get("wandb-run")
    if not console or not wandb_files:
        return
    runs = {f.parent for f in wandb_files}
    echo = [f for f in console if f.name == "output.log" and f.parent.name == "files" and f.parent.parent in runs]
    for f in echo:
        console.remove(f)
        history.cleanups.append(Cleanup("source_choice", f"{f.relative_to(root)}: the W&B run's console output; "
                                        "its points are read from the run's .wandb history, which has the real "
                                        "steps", file=str(f)))
    if not console:
        del groups["hf-console"]


_VERSION_DIR = re.compile(r"^version_\d+$")  # Lightning's resumed versions of one run


def _warn_if_several_runs(root: Path, groups: dict[str, list[Path]], history: History) -> None:
    """A folder is one run; warn when its logs sit in sibling folders that look like separate runs.

    (trainer_state.json files outside checkpoint-N/, or text logs of one format, in two or
    more different folders; TensorBoard's add_scalars sub-folders and Lightning's
    version_N folders are parts of one run and do not count.)
    """
    if not root.is_dir():
        return
    for fmt, files in groups.items():
        if fmt in ("tensorboard", "dvclive"):  # one file per tag / per metric, in sub-folders by name
            continue
        dirs = {f.parent for f in files
                if not any(checkpoint_step(x) is not None for x in f.relative_to(root).parts[:-1])}
        if len(dirs) < 2 or all(_VERSION_DIR.match(d.name) for d in dirs):
            continue
        names = sorted(str(d.relative_to(root)) or "." for d in dirs)
        shown = ", ".join(names[:4]) + (f", ... ({len(names)} folders)" if len(names) > 4 else "")
        history.warnings.append(
            f"{root}: holds {fmt} logs in {len(dirs)} different folders ({shown}); a folder is read as ONE run - "
            "if these are separate runs, pass each folder as its own PATH")


def load_histories(
    paths: Iterable[str | os.PathLike],
    *,
    format: str | None = None,
    use_cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
    session: int | None = None,
) -> tuple[list[History], list[dict[str, str]]]:
    """Load several runs; one run's problem never aborts the others.

    Returns the histories that could be read, in order, and one
    ``{"run": path as given, "error": one-line message}`` per path that could not.
    A usage error (an unknown `format`) concerns every run and is raised.
    """
    from logsage.core.errors import LogsageError

    histories: list[History] = []
    errors: list[dict[str, str]] = []
    for p in paths:
        try:
            histories.append(load_history(p, format=format, use_cache=use_cache, cache_dir=cache_dir,
                                          session=session))
        except LogsageError as e:
            if e.exit_code == 2:
                raise
            errors.append({"run": str(p), "error": str(e)})
    return histories, errors


def load_sessions(path: str | os.PathLike, **kwargs) -> list[History]:
    """Each training session of a log as its own run (`load_history` with ``session=1, 2, ...``).

    A log with one session gives one history, as `load_history` would; with several (a
    Keras CSVLogger with append=True), each history's `path` is labelled
    ``"<path> (session k of n)"``.
    """
    first = load_history(path, session=1, **kwargs)
    n = int(first.meta.get("sessions", 1) or 1)
    out = [first] + [load_history(path, session=k, **kwargs) for k in range(2, n + 1)]
    if n > 1:
        for k, h in enumerate(out, 1):
            h.path = f"{path} (session {k} of {n})"
    return out


def _read_summary(f: Path, history: History) -> None:
    from logsage.ingest.readers.base import loads_lenient, read_json_text, to_float

    try:
        data = loads_lenient(read_json_text(f), file=str(f))
    except IngestError as e:
        history.warnings.append(str(e))
        return
    if isinstance(data, dict):
        for k, v in data.items():
            fv = to_float(v)
            if fv is not None:
                history.summary.setdefault(k, fv)
        history.files.append(str(f))


def merge_sources(history: History, results: list[ReadResult]) -> None:
    """Combine readers' results; for a metric held by several sources the most precise wins.

    Ties in precision go to the reader earlier in detection order (trainer_state
    first). Points that only a less precise source holds (a log that ran past the
    last checkpoint's trainer_state.json) are added, not dropped, and recorded.
    """
    order = {m: i for i, m in enumerate(formats())}
    for res in results:
        history.files.extend(res.files)
        history.cleanups.extend(res.cleanups)
        history.warnings.extend(res.warnings)
        for k, v in res.meta.items():
            history.meta.setdefault(k, v)
        for k, v in res.summary.items():
            history.summary.setdefault(k, v)
    ranked = sorted(results, key=lambda r: (-PRECISION_RANK.get(r.precision, 0), order.get(r.format, 99)))
    # Within one format, distinct source names all stay; across formats, one source per canonical name.
    owner: dict[str, tuple[str, str]] = {}  # canonical -> (format, kept series name)
    for res in ranked:
        for s in res.series:
            held = owner.get(s.canonical)
            if held is None or held[0] == res.format:
                owner.setdefault(s.canonical, (res.format, s.name))
                history.series[s.name] = s
                continue
            kept = history.series[held[1]]
            extra = ~np.isin(s.steps, kept.steps)
            note = f"{s.canonical}: kept {kept.name!r} from {held[0]} ({kept.precision}) over {s.name!r} from {res.format} ({s.precision})"
            if extra.any() and res.meta.get("step_unit") == "log_record":
                # a console log's steps are record ordinals, not global steps: never mixed into another source
                note += f"; its {int(extra.sum())} other point(s) were not added (its steps are log-record ordinals)"
            elif extra.any():
                n = int(extra.sum())
                merged, _ = Series.from_points(
                    kept.name, np.concatenate([kept.steps, s.steps[extra]]),
                    np.concatenate([kept.values, s.values[extra]]),
                    canonical=kept.canonical, kind=kept.kind, source=f"{kept.source}; {s.source}",
                    format=kept.format, precision=kept.precision)
                history.series[kept.name] = merged
                note += f"; {n} point(s) only {res.format} has were added"
            history.cleanups.append(Cleanup("source_choice", note, file=s.source, metric=s.name))
    history.format = "+".join(sorted((r.format for r in results), key=lambda f: order.get(f, 99)))


def stitch_histories(histories: list[History], *, path: str | None = None) -> History:
    """One run resumed into other folders: later segments win for the steps they rewrite.

    Each seam (where a segment starts, and how many earlier steps it overrode) is
    recorded as a `seam` cleanup.
    """
    if not histories:
        raise UsageError("nothing to stitch: give at least one path")
    out = History(path=path or " + ".join(h.path for h in histories),
                  format="+".join(dict.fromkeys(h.format for h in histories)))
    for i, h in enumerate(histories):
        out.files.extend(h.files)
        out.cleanups.extend(h.cleanups)
        out.warnings.extend(h.warnings)
        out.checkpoints.extend(h.checkpoints)
        for k, v in h.meta.items():
            out.meta[k] = v  # the later segment knows the final budget
        out.summary.update(h.summary)
        out.per_example.update(h.per_example)
        first = min((step for s in h.series.values() if (step := s.first_step) is not None), default=None)
        if i:
            overridden = 0
            for name, s in h.series.items():
                if name in out.series and len(s):
                    prev = out.series[name]
                    overridden += int((prev.steps >= s.first_step).sum())
            out.cleanups.append(Cleanup(
                "seam", f"segment {h.path} starts at step {first}; it overrides {overridden} earlier point(s)",
                file=h.path, count=overridden))
        for name, s in h.series.items():
            if name not in out.series or not len(s):
                out.series[name] = s
                continue
            prev = out.series[name]
            keep = prev.steps < s.first_step  # a resumed segment rewrites everything from its first step on
            merged = Series(name, np.concatenate([prev.steps[keep], s.steps]),
                            np.concatenate([prev.values[keep], s.values]),
                            canonical=s.canonical, kind=s.kind, source=f"{prev.source}; {s.source}",
                            format=s.format, precision=s.precision)
            out.series[name] = merged
    by_step = {}
    for c in out.checkpoints:
        by_step[c.step] = c  # later segment's checkpoint wins
    out.checkpoints = [by_step[k] for k in sorted(by_step)]
    return out


__all__ = ["FORMATS", "formats", "load_histories", "load_history", "load_sessions", "stitch_histories"]
