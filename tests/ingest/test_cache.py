"""The parse cache: generic get/put, invalidation by file identity, corrupt entries, sharing, and its use by
the TensorBoard reader (a second read of an unchanged file does not parse it again)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest

import logsage
from logsage.ingest.readers import tensorboard as tb
from logsage.ingest.cache import FileCache, default_cache_dir


def _arrays(n=1000, seed=0):
    rng = np.random.default_rng(seed)
    return {"steps": np.arange(n, dtype=np.int64), "values": rng.standard_normal(n),
            "flags": rng.random(7) < 0.5, "empty": np.zeros(0, np.float64)}


@pytest.fixture()
def log_file(tmp_path):
    f = tmp_path / "some.log"
    f.write_bytes(b"x" * 100)
    return f


@pytest.fixture()
def cache(tmp_path):
    return FileCache("unit", version=3, cache_dir=tmp_path / "cache")


# ----------------------------------------------------------------------------- generic cache
def test_put_then_get_round_trips_arrays_and_meta(cache, log_file):
    assert cache.get(log_file) is None
    arrays, meta = _arrays(), {"tags": ["a", "é/b"], "n": 3, "x": None}
    assert cache.put(log_file, arrays, meta)
    got_arrays, got_meta = cache.get(log_file)
    assert got_meta == meta
    assert list(got_arrays) == list(arrays)
    for k in arrays:
        assert got_arrays[k].dtype == arrays[k].dtype
        np.testing.assert_array_equal(got_arrays[k], arrays[k])


def test_changed_size_or_mtime_is_a_miss(cache, log_file):
    cache.put(log_file, _arrays(), {})
    st = log_file.stat()
    os.utime(log_file, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert cache.get(log_file) is None  # same size, new mtime
    cache.put(log_file, _arrays(), {})
    assert cache.get(log_file) is not None
    mtime = log_file.stat().st_mtime_ns
    log_file.write_bytes(b"y" * 101)
    os.utime(log_file, ns=(mtime, mtime))
    assert cache.get(log_file) is None  # same mtime, new size


def test_namespace_and_version_are_part_of_the_key(tmp_path, log_file):
    FileCache("unit", version=1, cache_dir=tmp_path).put(log_file, _arrays(), {"v": 1})
    assert FileCache("unit", version=2, cache_dir=tmp_path).get(log_file) is None
    assert FileCache("other", version=1, cache_dir=tmp_path).get(log_file) is None
    assert FileCache("unit", version=1, cache_dir=tmp_path).get(log_file)[1] == {"v": 1}


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_entry_is_ignored_and_removed(cache, log_file, damage):
    cache.put(log_file, _arrays(), {"k": 1})
    entry = cache.entry_path(log_file)
    data = entry.read_bytes()
    entry.write_bytes({"truncate": data[: len(data) // 2], "garbage": os.urandom(len(data)), "empty": b""}[damage])
    assert cache.get(log_file) is None
    assert not entry.exists()
    assert cache.put(log_file, _arrays(), {"k": 2}) and cache.get(log_file)[1] == {"k": 2}


def test_entry_for_another_file_is_not_trusted(cache, log_file, tmp_path):
    other = tmp_path / "other.log"
    other.write_bytes(b"z" * 5)
    cache.put(other, _arrays(), {"who": "other"})
    # Simulate a key collision: the other file's entry sits where log_file's would be.
    cache.entry_path(other).rename(cache.entry_path(log_file))
    assert cache.get(log_file) is None


def test_unwritable_cache_folder_only_means_no_caching(tmp_path, log_file):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    c = FileCache("unit", version=1, cache_dir=blocker)
    assert c.put(log_file, _arrays(), {}) is False
    assert c.get(log_file) is None


def test_pickled_arrays_are_never_stored_or_loaded(cache, log_file, tmp_path):
    assert cache.put(log_file, {"obj": np.array([{"a": 1}], dtype=object)}, {}) is False  # np.save refuses
    assert not list(cache.folder.glob(".tmp-*"))
    # An entry crafted with a pickle inside (a header naming one array, then a pickled array).
    cache.put(log_file, {"obj": np.zeros(1)}, {})
    entry = cache.entry_path(log_file)
    with open(entry, "rb") as f:
        header = np.load(f, allow_pickle=False)
    sentinel = tmp_path / "pwned"
    with open(entry, "wb") as f:
        np.save(f, header)
        np.save(f, np.array([_Boom(str(sentinel))], dtype=object), allow_pickle=True)
    assert cache.get(log_file) is None
    assert not sentinel.exists()


class _Boom:
    """Unpickling this would create a file."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_concurrent_writers_and_readers_see_whole_entries_only(cache, log_file):
    versions = [_arrays(n=20_000, seed=s) for s in range(4)]
    errors, misses = [], []

    def work(i):
        try:
            for _ in range(15):
                assert cache.put(log_file, versions[i], {"seed": i})
                hit = cache.get(log_file)
                # After a put there is always a whole entry (the replace is atomic): a miss here
                # means a torn file was read (and dropped as corrupt).
                if hit is None:
                    misses.append(i)
                    continue
                arrays, meta = hit  # any complete version, never a mix
                want = versions[meta["seed"]]
                for k in want:
                    np.testing.assert_array_equal(arrays[k], want[k])
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert misses == []
    assert cache.get(log_file) is not None
    assert not list(cache.folder.glob(".tmp-*"))  # no temporary file left behind


def test_default_folder_follows_env_then_user_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("LOGSAGE_CACHE_DIR", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("LOGSAGE_CACHE_DIR")
    from platformdirs import user_cache_dir

    assert default_cache_dir() == Path(user_cache_dir("logsage"))


# ----------------------------------------------------------------------------- the TensorBoard reader
@pytest.fixture()
def event_run(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    run = tmp_path / "run"
    w = SummaryWriter(str(run))
    for step in range(30):
        w.add_scalar("eval/loss", 1.0 / (step + 1), step)
        w.add_scalar("train/loss", 2.0 / (step + 1), step)
    w.close()
    return run, next(run.glob("*tfevents*"))


@pytest.fixture()
def parse_counter(monkeypatch):
    calls = []
    real = tb._parse

    def counting(path, size):
        calls.append(path)
        return real(path, size)

    monkeypatch.setattr(tb, "_parse", counting)
    return calls


def _same_history(a, b):
    assert list(a.series) == list(b.series)
    for name in a.series:
        sa, sb = a.series[name], b.series[name]
        np.testing.assert_array_equal(sa.steps, sb.steps)
        np.testing.assert_array_equal(sa.values, sb.values)
        np.testing.assert_array_equal(sa.wall_times, sb.wall_times)
        assert sa.precision == sb.precision
    assert [c.to_dict() for c in a.cleanups] == [c.to_dict() for c in b.cleanups]
    assert a.warnings == b.warnings and a.meta == b.meta


def test_second_read_of_an_unchanged_file_comes_from_the_cache(event_run, parse_counter, tmp_path):
    run, f = event_run
    cache_dir = tmp_path / "cache"
    first = logsage.load_history(run, cache_dir=cache_dir)
    assert len(parse_counter) == 1
    second = logsage.load_history(run, cache_dir=cache_dir)
    assert len(parse_counter) == 1  # not parsed again
    assert tb.scan_file(f, cache_dir=cache_dir).cached
    assert not tb.scan_file(f, cache_dir=tmp_path / "other-cache").cached  # a fresh parse says so
    _same_history(first, second)


def test_modified_event_file_is_parsed_again(event_run, parse_counter, tmp_path):
    run, f = event_run
    cache_dir = tmp_path / "cache"
    logsage.load_history(run, cache_dir=cache_dir)
    from torch.utils.tensorboard import SummaryWriter

    with open(f, "ab") as out:  # a writer appended more records
        extra = tmp_path / "extra"
        w = SummaryWriter(str(extra))
        w.add_scalar("eval/loss", 0.01, 99)
        w.close()
        out.write(next(extra.glob("*tfevents*")).read_bytes())
    h = logsage.load_history(run, cache_dir=cache_dir)
    assert len(parse_counter) == 2
    assert h.series["eval/loss"].last_step == 99


def test_corrupt_cache_entry_is_ignored_by_the_reader(event_run, parse_counter, tmp_path):
    run, f = event_run
    cache_dir = tmp_path / "cache"
    first = logsage.load_history(run, cache_dir=cache_dir)
    entries = list(cache_dir.rglob("*.npys"))
    assert len(entries) == 1
    entries[0].write_bytes(entries[0].read_bytes()[:200])
    again = logsage.load_history(run, cache_dir=cache_dir)
    assert len(parse_counter) == 2
    _same_history(first, again)


def test_use_cache_false_bypasses_the_cache(event_run, parse_counter, tmp_path, monkeypatch):
    run, _ = event_run
    monkeypatch.setenv("LOGSAGE_CACHE_DIR", str(tmp_path / "default-cache"))
    logsage.load_history(run, use_cache=False)
    logsage.load_history(run, use_cache=False)
    assert len(parse_counter) == 2
    assert not (tmp_path / "default-cache").exists()  # nothing written either
    logsage.load_history(run)  # default: the env/user cache folder
    logsage.load_history(run)
    assert len(parse_counter) == 3
    assert list((tmp_path / "default-cache").rglob("*.npys"))


def test_warnings_of_a_damaged_file_survive_the_cache(event_run, tmp_path):
    run, f = event_run
    f.write_bytes(f.read_bytes()[:-3])
    cache_dir = tmp_path / "cache"
    first = logsage.load_history(run, cache_dir=cache_dir)
    second = logsage.load_history(run, cache_dir=cache_dir)
    assert any(c.kind == "truncated" for c in second.cleanups)
    _same_history(first, second)
