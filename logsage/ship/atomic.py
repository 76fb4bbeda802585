"""Publishing an export safely: a temporary folder renamed into place, stale temporaries of dead
processes cleaned up, and the guard on what `--force` may replace (only logsage's own exports, never
the run, a checkpoint, the base, the working directory or a root)."""

from __future__ import annotations
import json
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Sequence
from logsage.core.errors import ExportError, UsageError
from logsage.core.runfolder import SELECTION_FILE

_STRAY = re.compile(r"^\.(?P<name>.+)\.logsage-(?P<kind>tmp|old)-(?P<pid>\d+)-[0-9a-f]+$")


# ====================================================================== atomic folders
def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def clean_stale(out: Path) -> list[str]:
    """Remove the temporary folders that dead logsage processes left beside `out` (ours only, by name and pid).

    A leftover old copy from an interrupted --force replace is put back when `out` is gone.
    Returns what was done, in words.
    """
    done: list[str] = []
    parent = out.parent
    if not parent.is_dir():
        return done
    for p in sorted(parent.iterdir()):
        m = _STRAY.match(p.name)
        if not m or m["name"] != out.name or not p.is_dir() or _pid_alive(int(m["pid"])):
            continue
        if m["kind"] == "old" and not out.exists():
            os.rename(p, out)
            done.append(f"restored {out} from {p.name}, left by an interrupted --force export")
        else:
            shutil.rmtree(p, ignore_errors=True)
            done.append(f"removed {p.name}, left by an interrupted export (process {m['pid']})")
    return done


def side_name(out: Path, kind: str) -> Path:
    return out.parent / f".{out.name}.logsage-{kind}-{os.getpid()}-{secrets.token_hex(4)}"


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(folder: Path) -> None:
    for p in folder.rglob("*"):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    _fsync_dir(folder)


def publish(tmp: Path, out: Path, *, force: bool, force_any: bool = False,
             protect: Sequence[str | os.PathLike] = ()) -> None:
    """Move the finished temporary folder to `out` (replacing it only as `check_export_target` allows)."""
    if out.exists() or out.is_symlink():
        if not force:
            raise ExportError(f"{out} appeared during the export; left untouched (pass --force to replace it)")
        check_export_target(out, protect=protect, force=force, force_any=force_any)  # it may have changed since
        old = side_name(out, "old")
        os.rename(out, old)
        try:
            os.rename(tmp, out)
        except OSError:
            os.rename(old, out)  # put the previous export back before reporting the failure
            raise
        _fsync_dir(out.parent)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.rename(tmp, out)
        _fsync_dir(out.parent)


# ====================================================================== what --force may replace
def _forms(path: Path) -> set[Path]:
    """`path` as written (absolute, normalised) and with every symbolic link resolved."""
    absolute = Path(os.path.abspath(path))
    try:
        resolved = absolute.resolve()
    except (OSError, RuntimeError):  # a symlink loop: compare as written
        resolved = absolute
    return {absolute, resolved}


def _within(a: Path, b: Path) -> bool:
    """a == b or a lies inside b."""
    return a == b or b in a.parents


def exported_by_logsage(folder: Path) -> bool:
    """True when `folder` holds the provenance file of a logsage export (a JSON object with an "export" record)."""
    prov = folder / SELECTION_FILE
    try:
        if prov.is_symlink() or not prov.is_file():
            return False
        doc = json.loads(prov.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(doc, dict) and isinstance(doc.get("export"), dict)


def check_export_target(out: str | os.PathLike, *, protect: Sequence[str | os.PathLike] = (),
                        force: bool = False, force_any: bool = False) -> None:
    """Refuse an export folder that would destroy what is being read, or replace what logsage did not write.

    `protect`: the run, checkpoint and base folders being read. Never written into or
    replaced, nor any folder around them; nor the current directory, the home
    directory or a filesystem root. An existing OUT is replaced only with `force`,
    and only when logsage exported it (its `logsage_selection.json`), unless
    `force_any`. Called before any model is loaded.

    Raises:
        UsageError: OUT is one of the folders that are never replaced.
        ExportError: OUT exists without `force`, is not a folder, or was not written by logsage (without
            `force_any`).
    """
    out = Path(out)
    out_forms = _forms(out)
    special = [(Path.cwd(), "the current directory")]
    try:
        special.append((Path.home(), "your home directory"))
    except (RuntimeError, KeyError):
        pass
    for o in out_forms:
        if o == Path(o.anchor) or os.path.ismount(o):
            raise UsageError(f"--export {out}: is a filesystem root; it is never replaced (choose a new folder)")
        for place, name in special:
            for q in _forms(place):
                if _within(q, o):
                    what = "is" if q == o else "contains"
                    raise UsageError(f"--export {out}: {what} {name}; it is never replaced (choose a new folder)")
    for raw in protect:
        if raw is None:
            continue
        p = Path(raw)
        for o in out_forms:
            for q in _forms(p):
                if _within(q, o):
                    what = "is" if q == o else "contains"
                    raise UsageError(f"--export {out}: {what} {p}, which this export reads; it is never replaced "
                                     "(choose a folder outside the run, e.g. beside it)")
                if _within(o, q):
                    raise UsageError(f"--export {out}: lies inside {p}, which this export reads; write the "
                                     "export outside it (e.g. beside the run)")
    if not (out.exists() or out.is_symlink()):
        return
    if not force:
        raise ExportError(f"{out} already exists; left untouched - pass --force to replace an earlier logsage export "
                         "(the old folder is removed only after the new export is complete and verified)")
    if out.is_symlink():
        raise ExportError(f"{out} is a symbolic link; left untouched (remove the link or choose another --export)")
    if not out.is_dir():
        raise ExportError(f"{out} exists and is not a folder; remove it or choose another --export path")
    if not force_any and not exported_by_logsage(out):
        raise ExportError(f"{out} was not written by logsage (no {SELECTION_FILE} in it); left untouched - choose "
                          "another --export, or pass --force-any to replace it anyway")


def write_failure(out: Path, err: OSError) -> ExportError:
    """One line for an OSError during an export: the path, what happened, what to do; nothing was published."""
    import errno

    hint = {errno.ENOSPC: "free some space or choose another disk",
            errno.EDQUOT: "free some space or choose another disk",
            errno.EROFS: "choose an --export folder on a writable filesystem",
            errno.EACCES: "choose an --export folder you may write to",
            errno.EPERM: "choose an --export folder you may write to"}.get(err.errno or 0, "check the disk and retry")
    where = Path(err.filename) if err.filename else out
    parent = Path(os.path.abspath(out)).parent
    writing = Path(os.path.abspath(where)) == parent or parent in Path(os.path.abspath(where)).parents
    what = "could not write" if writing else "could not read"
    return ExportError(f"{where}: {what} it ({err.strerror or err}); {hint if writing else 'check the file'}; "
                       f"nothing was exported to {out}")
