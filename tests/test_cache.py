"""The compile cache on its own: LRU eviction under a size limit, one build per key across threads
and processes, the inspection API and ``tunebench cache``, a missing library rebuilt.

No TVM builds: entries are ``pytorch`` ones (JSON only) or carry a fake module whose
``export_library`` writes N bytes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tunebench.cli import app
from tunebench.serve import cache, plan
from tunebench.serve.cache import MB, STATS, CacheWarning, CompileCache, Entry, clear, list_entries, max_cache_bytes

ROOT = Path(__file__).resolve().parents[1]


class FakeModule:
    """Stands in for a built VM library: exports ``size`` bytes."""

    def __init__(self, size: int) -> None:
        self.size = size

    def export_library(self, path: str) -> None:
        Path(path).write_bytes(b"\0" * self.size)


def tvm_entry(size: int) -> Callable[[], Entry]:
    return lambda: Entry("tvm", 1, ["w"], module=FakeModule(size), lowering="nchw")


def no_build() -> Entry:
    raise AssertionError("built, but the entry was on disk")


@pytest.fixture(autouse=True)
def _fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TUNEBENCH_CACHE_DIR", str(tmp_path / "default"))
    monkeypatch.delenv("TUNEBENCH_CACHE_MAX_MB", raising=False)
    STATS.reset()


@pytest.fixture
def fake_loader(monkeypatch: pytest.MonkeyPatch) -> None:
    """``tvm.runtime.load_module`` reads a FakeModule back, and fails on a missing file as TVM's does."""
    import tvm

    def load(path: str) -> FakeModule:
        if not os.path.exists(path):
            raise ValueError(f"cannot find file {path}")
        return FakeModule(os.path.getsize(path))

    monkeypatch.setattr(tvm.runtime, "load_module", load)


def k(name: str) -> str:
    """A cache key (a SHA-256 hex digest, as the backend makes them) that a test can read: ``k("a")`` is 64 a's."""
    return (name * 64)[:64]


K = k("f")  # the key of tests that need one


def on_disk(folder: Path) -> set[str]:
    return {e.key[0] for e in list_entries(folder).entries}


def set_last_used(folder: Path, key: str, t: float) -> None:
    for path in folder.glob(f"*{k(key)}.*"):
        os.utime(path, (t, t))


def test_eviction_keeps_the_limit_least_recently_used_first(tmp_path: Path, fake_loader: None) -> None:
    limit = 35_000  # three 10 kB entries (+ JSON) fit, four do not
    now = time.time()
    for i, key in enumerate("abc"):
        CompileCache(max_bytes=limit).get(k(key), tmp_path, tvm_entry(10_000))
        set_last_used(tmp_path, key, now - 300 + 100 * i)  # a oldest, c newest
    assert on_disk(tmp_path) == {"a", "b", "c"}

    reader = CompileCache(max_bytes=limit)
    assert reader.get(k("a"), tmp_path, no_build).module.size == 10_000  # a disk hit: a is now the newest
    reader.get(k("d"), tmp_path, tvm_entry(10_000))
    assert on_disk(tmp_path) == {"a", "c", "d"}, "b, least recently used, should have gone"
    assert not list(tmp_path.glob(f"*{k('b')}*")), "b's lock file should go with it"
    assert list_entries(tmp_path).total <= limit

    CompileCache(max_bytes=5_000).get(k("e"), tmp_path, tvm_entry(10_000))  # alone over the limit: stored, the rest evicted
    assert on_disk(tmp_path) == {"e"}
    assert (STATS.compiles, STATS.disk_hits) == (5, 1)


def test_memory_keeps_the_limit_least_recently_used_first(tmp_path: Path) -> None:
    """A server meeting new logs or settings for weeks keeps to the cache's limit in memory too, and
    the per-key locks of settled keys go (they grew by one per key, forever)."""
    c = CompileCache(max_bytes=35_000)  # three 10 kB entries (+ JSON) fit, four do not
    for key in "abc":
        c.get(k(key), tmp_path, tvm_entry(10_000))
    c.get(k("a"), tmp_path, no_build)  # a memory hit: a is now the newest
    c.get(k("d"), tmp_path, tvm_entry(10_000))
    assert list(c.memory) == [k("c"), k("a"), k("d")] and [c.holds(k(key)) for key in "bd"] == [False, True]
    assert sum(e.size for e in c.memory.values()) <= 35_000 and c._key_locks == {}
    alone = CompileCache(max_bytes=1)
    alone.get(k("e"), tmp_path, tvm_entry(10_000))
    alone.get(k("f"), tmp_path, tvm_entry(10_000))
    assert list(alone.memory) == [k("f")]  # the entry just made stays, alone over the limit


def test_stats_is_a_snapshot(tmp_path: Path) -> None:
    before = cache.stats()
    CompileCache().get(K, tmp_path, lambda: Entry("pytorch", 1))
    after = cache.stats()
    assert (before.compiles, after.compiles) == (0, 1), "stats() handed out the live counters"


def test_eviction_removes_stale_temp_files_only(tmp_path: Path) -> None:
    stale, fresh = tmp_path / f".tunebench-{k('a')}.1.2.tmp.so", tmp_path / f".tunebench-{k('b')}.3.4.tmp.so"
    users = tmp_path / ".x.1.2.tmp.so"  # a temp-like name tunebench never writes
    for path in (stale, fresh, users):
        path.write_bytes(b"torn")
    for path in (stale, users):
        os.utime(path, (time.time() - 7200, time.time() - 7200))
    CompileCache().get(K, tmp_path, lambda: Entry("pytorch", 1))
    assert not stale.exists() and fresh.exists() and users.exists()


def test_limit_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert max_cache_bytes() == 2 * 1024 * MB
    monkeypatch.setenv("TUNEBENCH_CACHE_MAX_MB", "0.5")
    assert max_cache_bytes() == MB // 2
    monkeypatch.setenv("TUNEBENCH_CACHE_MAX_MB", "lots")
    with pytest.warns(CacheWarning, match="not a size"):
        assert max_cache_bytes() == 2 * 1024 * MB


def test_threads_build_a_key_once(tmp_path: Path) -> None:
    c, builds, start = CompileCache(), [], threading.Barrier(8)
    results: list[Entry] = []

    def build() -> Entry:
        builds.append(threading.get_ident())
        time.sleep(0.2)
        return Entry("pytorch", 1)

    def call() -> None:
        start.wait()
        results.append(c.get(K, tmp_path, build))

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(builds) == 1 and len(results) == 8
    assert all(r is results[0] for r in results)
    assert (STATS.compiles, STATS.memory_hits, STATS.disk_hits) == (1, 7, 0)


def test_threads_build_different_keys_at_once(tmp_path: Path) -> None:
    """The per-key lock is per key: a build of b can start while a's is still running."""
    c, b_started = CompileCache(), threading.Event()
    overlapped: list[bool] = []

    def build_a() -> Entry:
        overlapped.append(b_started.wait(timeout=10))
        return Entry("pytorch", 1)

    def build_b() -> Entry:
        b_started.set()
        return Entry("pytorch", 1)

    t = threading.Thread(target=c.get, args=(k("a"), tmp_path, build_a))
    t.start()
    c.get(k("b"), tmp_path, build_b)
    t.join()
    assert overlapped == [True]


CHILD = """
import json, os, sys, time
from collections.abc import Callable
from pathlib import Path
import tvm  # before the start line: both children reach get() together
from tunebench.serve.cache import STATS, CompileCache, Entry
folder, marks = Path(sys.argv[1]), Path(sys.argv[2])
def build():
    (marks / f"built-{os.getpid()}").touch()
    time.sleep(1.0)
    return Entry("pytorch", 1)
(marks / f"ready-{os.getpid()}").touch()
while not (marks / "go").exists():
    time.sleep(0.01)
CompileCache().get("f" * 64, folder, build)
print(json.dumps({"compiles": STATS.compiles, "disk_hits": STATS.disk_hits}))
"""


def test_processes_build_a_key_once(tmp_path: Path) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    cmd = [sys.executable, "-c", CHILD, str(tmp_path / "c"), str(marks)]
    children = [subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        deadline = time.time() + 180
        while len(list(marks.glob("ready-*"))) < 2 and time.time() < deadline and all(p.poll() is None for p in children):
            time.sleep(0.05)
        (marks / "go").touch()
        outs = [p.communicate(timeout=120) for p in children]
    finally:
        for p in children:
            p.kill()
    for p, (_, err) in zip(children, outs, strict=True):
        assert p.returncode == 0, err[-3000:]
    counts = sorted((d["compiles"], d["disk_hits"]) for d in (json.loads(out.strip().splitlines()[-1]) for out, _ in outs))
    assert counts == [(0, 1), (1, 0)], "the second process should wait for the first's build and load it"
    assert len(list(marks.glob("built-*"))) == 1


def test_missing_library_is_rebuilt_with_a_warning(tmp_path: Path) -> None:
    CompileCache().get(K, tmp_path, tvm_entry(100))
    cache.library_file(K, tmp_path).unlink()  # as if evicted between a reader's JSON and its load
    with pytest.warns(CacheWarning, match="unusable"):
        entry = CompileCache().get(K, tmp_path, tvm_entry(100))  # TVM's own loader meets the missing file
    assert entry.runner == "tvm" and cache.library_file(K, tmp_path).stat().st_size == 100
    assert (STATS.compiles, STATS.disk_hits) == (2, 0)


def test_unwritable_directory_serves_from_memory(tmp_path: Path) -> None:
    folder = tmp_path / "file-not-dir" / "cache"
    folder.parent.write_text("")  # neither a lock file nor entries can be created below it
    with pytest.warns(CacheWarning, match="kept in memory only"):
        entry = CompileCache().get(K, folder, lambda: Entry("pytorch", 1))
    assert entry.runner == "pytorch" and STATS.compiles == 1


def test_cli_show_and_clear(tmp_path: Path) -> None:
    c, a, b = CompileCache(), "a" * 64, "b" * 64
    c.get(a, tmp_path, lambda: Entry("pytorch", 1, ["w1", "w2"], lowering="nchw"))
    c.get(b, tmp_path, tvm_entry(2 * MB))
    (tmp_path / f".tunebench-{b}.1.2.tmp.so").write_bytes(b"x" * 1000)  # a crashed writer's
    plan.store(k("c"), tmp_path, plan.Plan("tvm_0", a, [0], [0]))  # a remembered split: derived, cleared too

    listing = list_entries(tmp_path)
    assert [(e.key, e.runner, e.applied) for e in listing.entries] == [(b, "tvm", 1), (a, "pytorch", 2)]
    assert listing.total > 2 * MB and listing.limit == 2048 * MB

    runner = CliRunner()
    shown = runner.invoke(app, ["cache", "show", "--dir", str(tmp_path)])
    assert shown.exit_code == 0, shown.output
    assert "a" * 12 in shown.output and "b" * 12 in shown.output and "pytorch" in shown.output and "nchw" in shown.output
    assert "total 2.0 MB of 2048 MB" in shown.output and str(tmp_path) in shown.output

    cleared = runner.invoke(app, ["cache", "clear", "--dir", str(tmp_path)])
    assert cleared.exit_code == 0, cleared.output
    assert "freed 2.0 MB (2 entries)" in cleared.output
    assert os.listdir(tmp_path) == ["plans"] and os.listdir(tmp_path / "plans") == []
    assert clear(tmp_path) == cache.Cleared(0, 0, 0)
    assert "0 entries" in runner.invoke(app, ["cache", "show", "--dir", str(tmp_path / "none")]).output


def users_files(folder: Path) -> dict[Path, bytes]:
    """A project folder's own files, some with the extensions and shapes of cache files, written to ``folder``."""
    files = {
        folder / "package.json": b'{"name": "app"}',
        folder / "libfast.so": b"\x7fELF" + b"\0" * 5000,
        folder / "yarn.lock": b"# lock",
        folder / f"{k('a')}.json": b"{}",  # a content-addressed store's name, the shape of an old cache entry
        folder / ".x.1.2.tmp.so": b"mine",
        folder / "plans" / "roadmap.json": b"[]",
        folder / "digests" / "weekly.jsonl.gz": b"news",
    }
    for path, data in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, (time.time() - 7200, time.time() - 7200))  # older than any entry, and than a stale temp
    return files


def test_clear_and_eviction_delete_only_what_tunebench_wrote(tmp_path: Path) -> None:
    mine = users_files(tmp_path)
    limit = 1_000  # every entry is over it: each store evicts all the others
    for key in "abc":
        CompileCache(max_bytes=limit).get(k(key), tmp_path, tvm_entry(2_000))
    assert on_disk(tmp_path) == {"c"} and list_entries(tmp_path).total < 3_000
    assert all(path.read_bytes() == data for path, data in mine.items()), "eviction deleted a user's file"

    cleared = CliRunner().invoke(app, ["cache", "clear", "--dir", str(tmp_path)])
    assert cleared.exit_code == 0, cleared.output
    assert "(1 entries)" in cleared.output
    assert all(path.read_bytes() == data for path, data in mine.items()), "cache clear deleted a user's file"
    left = {p for p in tmp_path.rglob("*") if p.is_file()}
    assert left == set(mine), f"cache clear left tunebench files: {sorted(map(str, left - set(mine)))}"


def test_every_file_the_cache_writes_is_one_clear_recognises(tmp_path: Path) -> None:
    """The writers (entries, temps, plans, digests) and ``clear`` agree on names: nothing tunebench writes outlives a clear."""
    from tunebench.serve import digest

    log = tmp_path / "t.jsonl"
    log.write_text(json.dumps({"type": "workload", "v": 1, "key": "w", "task": "t", "flop": 1.0, "mod": ""}) + "\n")
    folder = tmp_path / "cache"
    CompileCache().get(K, folder, tvm_entry(100))
    plan.store(k("c"), folder, plan.Plan("tvm_0", K, [0], [0]))
    digest.read_for_serving(log, folder)
    (folder / f".tunebench-{K}.1.2.tmp.json").write_text("{")
    written = [p for p in folder.rglob("*") if p.is_file()]
    assert len(written) == 6 and all(p.name.lstrip(".").startswith("tunebench-") for p in written), written
    clear(folder)
    assert [p for p in folder.rglob("*") if p.is_file()] == []


def test_a_key_that_is_not_a_digest_is_refused(tmp_path: Path) -> None:
    """A file named by any other key would be one ``clear`` cannot tell from a user's."""
    with pytest.raises(ValueError, match="SHA-256 hex digest"):
        CompileCache().get("package", tmp_path, lambda: Entry("pytorch", 1))
    assert not tmp_path.exists() or os.listdir(tmp_path) == []


def test_the_code_version_covers_every_stage() -> None:
    """A build depends on how every stage lowers and schedules, not only on serving's own files."""
    from tunebench.serve.cache import source_files

    names = {name for name, _ in source_files()}
    assert {"lowering/frontend.py", "logs/records.py", "search/driver.py", "serve/cache.py", "target.py", "__init__.py"} <= names
