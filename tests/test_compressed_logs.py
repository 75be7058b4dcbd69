"""Compressed history logs (``.jsonl.gz``): what ships in a repo reads, appends and survives a crash as a plain log does."""

from __future__ import annotations

import warnings
from pathlib import Path

from tunebench.logs.records import LogWriter, read_log
from tunebench.logs.share import merge_logs


def test_a_compressed_log_holds_the_same_records_at_a_fraction_of_the_size(tiny_log: Path, tmp_path: Path) -> None:
    packed = tmp_path / "tiny.jsonl.gz"
    merge_logs([tiny_log], packed)
    plain, gz = read_log(tiny_log), read_log(packed)
    assert sorted(r.identity() for r in gz.records) == sorted(r.identity() for r in plain.records)
    assert set(gz.workloads) == set(plain.workloads)
    assert packed.stat().st_size * 5 < tiny_log.stat().st_size
    again = tmp_path / "again.jsonl.gz"
    merge_logs([packed], again)
    assert again.read_bytes() == packed.read_bytes()  # same records, same bytes


def test_appending_to_a_compressed_log_after_a_torn_batch(tiny_log: Path, tmp_path: Path) -> None:
    """A batch cut off by a crash is reported and skipped, and the next append cuts it off rather than
    writing behind it (a torn gzip member would swallow the next one)."""
    log = read_log(tiny_log)
    path = tmp_path / "live.jsonl.gz"
    LogWriter(path).append(log.records[:3], log.workloads)
    LogWriter(path).append(log.records[3:5], log.workloads)
    path.write_bytes(path.read_bytes()[:-6])  # the second batch's member loses its trailer
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torn = read_log(path)
    assert len(torn.records) == 3
    assert any("torn compressed batch" in str(w.message) for w in caught)
    LogWriter(path).append(log.records[5:7], log.workloads)
    again = read_log(path, warn=False)
    assert [r.identity() for r in again.records] == [r.identity() for r in log.records[:3] + log.records[5:7]]
    assert not again.problems


def test_plain_text_named_gz_is_one_clear_error(tmp_path: Path) -> None:
    import pytest

    from tunebench.errors import TunebenchError

    bad = tmp_path / "bad.jsonl.gz"
    bad.write_text('{"type": "record"}\n')
    with pytest.raises(TunebenchError, match="not gzip data"):
        read_log(bad)


def test_a_long_lived_writer_cuts_another_writers_torn_batch(tiny_log: Path, tmp_path: Path) -> None:
    """A writer checks only what was appended since its own last batch (not the whole file every batch):
    another writer's batch torn by a crash behind it is still cut off before it appends."""
    log = read_log(tiny_log)
    path = tmp_path / "live.jsonl.gz"
    mine = LogWriter(path)
    mine.append(log.records[:3], log.workloads)
    LogWriter(path).append(log.records[3:5], log.workloads)  # another process's batch...
    with open(path, "r+b") as f:  # ...killed before its gzip trailer reached the disk
        f.truncate(path.stat().st_size - 6)
    mine.append(log.records[5:7], log.workloads)
    again = read_log(path, warn=False)
    assert [r.identity() for r in again.records] == [r.identity() for r in log.records[:3] + log.records[5:7]]
    assert not again.problems
