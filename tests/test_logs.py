"""Log sharing: merge, prune, concurrent writers, and the messages bad input gets."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tunebench.errors import TunebenchError
from tunebench.logs import records as rec
from tunebench.logs.share import merge_logs, prune_log, summarize
from tunebench.search.settings import MeasureConfig

TINY = f"{Path(__file__).parent / 'fixtures' / 'tiny.py'}:tiny_conv"
# One short sample per candidate; generous timeouts, since a busy 2-core machine builds slowly.
FAST = MeasureConfig(workers=2, repeat=1, min_repeat_ms=1, build_timeout=300, run_timeout=60)


@pytest.fixture(scope="module")
def lowered():
    from tunebench.api import lower_model

    return lower_model(TINY, "avx2", layout="nchw")


@pytest.fixture(scope="module")
def two_logs(tiny_log, lowered, tmp_path_factory):
    """The tiny model tuned twice, independently (different searches, different files): two machines' logs.

    The first is the session's ``tiny_log`` (4 trials per task, NCHW, as ``lowered``), so only one more
    search runs here; tests never write to either file.
    """
    from tunebench.search.driver import tune_tasks

    path = tmp_path_factory.mktemp("tuned") / "tiny-random.jsonl"
    tune_tasks(lowered.tasks, lowered.target, path, trials_per_task=4, tuner="random", measure=FAST, seed=1)
    assert len(rec.read_log(path).best()) == 2, [r.error for r in rec.read_log(path).records]
    return [tiny_log, path]


def _best(log: rec.HistoryLog) -> dict[str, float]:
    return {k: r.latency for k, r in log.best().items()}


def test_merge_keeps_union_and_best_then_tune_resumes_and_apply_serves(two_logs, lowered, tmp_path):
    import torch

    from tunebench.search.driver import tune_tasks
    from tunebench.serve.build import compile_model

    a, b = (rec.read_log(p) for p in two_logs)
    assert len(a.records) == len(b.records) == 8

    union = tmp_path / "union.jsonl"
    result = merge_logs(two_logs, union)
    merged = rec.read_log(union)
    assert result.written == len(merged.records) == 16 and result.duplicates == 0
    assert {r.identity() for r in merged.records} == {r.identity() for r in a.records + b.records}
    assert _best(merged) == {k: min(_best(a).get(k, float("inf")), _best(b).get(k, float("inf"))) for k in set(_best(a)) | set(_best(b))}

    # Same inputs, any order, repeated inputs (duplicates): the same bytes.
    again = tmp_path / "again.jsonl"
    assert merge_logs([two_logs[1], two_logs[0], two_logs[1]], again).duplicates == 8
    assert again.read_bytes() == union.read_bytes()

    top2 = tmp_path / "top2.jsonl"
    merge_logs(two_logs, top2, top=2)
    kept = rec.read_log(top2)
    for key, recs in merged.by_key().items():
        fastest = sorted(r.latency for r in recs if r.ok)[:2]
        assert sorted(r.latency for r in kept.records if r.key == key) == fastest
    assert set(kept.workloads) == {t.workload_key for t in lowered.tasks}

    # tune resumes from the merged log: counts its records, appends to it, and the result still reads.
    state = tune_tasks(lowered.tasks, lowered.target, top2, trials_per_task=3, tuner="random", measure=FAST)
    assert [s.prior_trials for s in state.states] == [2, 2] and state.new_trials == 2
    resumed = rec.read_log(top2)
    assert len(resumed.records) == 6 and not resumed.problems
    assert top2.read_text().count('"type": "workload"') == 2  # the writer saw the merged workload lines

    compiled = compile_model(lowered.relax_mod, lowered.target, resumed)
    assert compiled.coverage.complete
    with torch.no_grad():
        expected = lowered.model(*lowered.example_inputs)
    torch.testing.assert_close(compiled(*lowered.example_inputs), expected, rtol=1e-4, atol=1e-4)


def test_prune_keeps_best_k_and_is_atomic_under_a_crash(two_logs, tmp_path, monkeypatch):
    log = tmp_path / "log.jsonl"
    shutil.copy(two_logs[0], log)
    before = log.read_bytes()
    original = rec.read_log(log)

    def crash(*args, **kwargs):
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(rec.os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        prune_log(log, top=1)
    assert log.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["log.jsonl"]  # no temp file left behind
    monkeypatch.undo()

    writer = rec.LogWriter(log)
    writer.append([original.records[0]], original.workloads)  # the writer now knows the old file
    result = prune_log(log, top=1)
    pruned = rec.read_log(log)
    assert result.written == len(pruned.records) == len(original.by_key())
    assert _best(pruned) == _best(original)

    # A writer that knew the old file appends to the new one, adding the workload line it needs.
    extra = rec.Record(**{**original.records[0].__dict__, "time": 1.0})
    writer.append([extra], original.workloads)
    after = rec.read_log(log)
    assert len(after.records) == len(pruned.records) + 1 and not after.problems


def _append_many(path: str, writer_id: int, batches: int, per_batch: int, barrier: Any) -> None:
    """Each batch brings a new workload that the other writer brings at the same moment (the barrier):
    without the lock both would see it missing and write its workload line."""
    writer = rec.LogWriter(path)
    workloads = {f"k{b}": rec.WorkloadEntry(f"k{b}", f"task{b}", 1e6, "QUJD" * 256, 1) for b in range(batches)}
    for b in range(batches):
        batch = [
            rec.Record(f"k{b}", ["t" * 20000, writer_id, b, j], [], [1e-3], None, {"kind": "llvm"}, {"cpu": "x"}, rec.tvm_version(), time=b * 100 + j)
            for j in range(per_batch)
        ]
        barrier.wait()
        writer.append(batch, workloads)


def test_concurrent_writers_never_interleave(tmp_path):
    path = tmp_path / "shared.jsonl"
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [ctx.Process(target=_append_many, args=(str(path), w, 100, 5, barrier)) for w in range(2)]
    for p in procs:
        p.start()
    while any(p.is_alive() for p in procs):  # a reader meanwhile never sees half a record as garbage
        if path.exists():
            assert rec.read_log(path, warn=False).problems == []
    for p in procs:
        p.join()
        assert p.exitcode == 0
    log = rec.read_log(path)
    assert not log.problems
    assert sorted(tuple(r.trace[1:]) for r in log.records) == sorted((w, b, j) for w in range(2) for b in range(100) for j in range(5))
    assert path.read_text().count('"type": "workload"') == 100  # each workload line written once, by whichever writer came first


def _append_one_by_one(path: str, first: int, batches: int) -> None:
    """A ``tune``'s writer: batch after batch of one record each, every record its own."""
    writer = rec.LogWriter(path)
    workloads = {"live": rec.WorkloadEntry("live", "live_task", 1e6, "QUJD", 1)}
    for b in range(first, first + batches):
        writer.append([rec.Record("live", ["live", b], [], [1e-3], None, {"kind": "llvm"}, {"cpu": "x"}, rec.tvm_version(), time=float(b))], workloads)


def test_merge_onto_a_live_log_loses_no_append(tmp_path):
    """``logs merge LIVE OTHER -o LIVE`` while a ``tune`` appends to LIVE: each batch lands either
    before the merge read the file (and is merged) or after its rename (in the new file), never
    in between, where the rename would drop it."""
    live, other = tmp_path / "live.jsonl", tmp_path / "other.jsonl"
    shared = {"shared": rec.WorkloadEntry("shared", "shared_task", 1e6, "QUJD", 1)}
    theirs = [rec.Record("shared", ["other", j], [], [2e-3], None, {"kind": "llvm"}, {}, rec.tvm_version(), time=j) for j in range(3)]
    rec.LogWriter(other).append(theirs, shared)
    _append_one_by_one(str(live), 0, 1)
    proc = multiprocessing.get_context("spawn").Process(target=_append_one_by_one, args=(str(live), 1, 300))
    proc.start()
    merges = 0
    while proc.is_alive() or merges == 0:
        merge_logs([live, other], live)
        merges += 1
    proc.join()
    assert proc.exitcode == 0 and merges > 1
    log = rec.read_log(live)
    assert not log.problems
    assert sorted(r.trace[1] for r in log.records if r.key == "live") == list(range(301))
    assert sum(r.key == "shared" for r in log.records) == 3


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "400"}  # rich wraps at 80 columns when not on a terminal
    return subprocess.run([sys.executable, "-m", "tunebench.cli", "logs", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


def _one_line_error(proc: subprocess.CompletedProcess[str], needle: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], proc.stderr


def test_bad_inputs_get_clear_messages(two_logs, tmp_path):
    _one_line_error(_cli("show", "missing.jsonl", cwd=tmp_path), "log 'missing.jsonl' does not exist")

    (tmp_path / "notes.txt").write_text("shopping list\nmilk\n")
    _one_line_error(_cli("show", "notes.txt", cwd=tmp_path), "is not a tunebench history log")

    good = two_logs[0].read_text().splitlines()
    newer = tmp_path / "newer.jsonl"
    newer.write_text("\n".join([*good[:3], json.dumps({**json.loads(good[2]), "v": rec.FORMAT_VERSION + 1})]) + "\n")
    _one_line_error(_cli("show", "newer.jsonl", cwd=tmp_path), f"log format version {rec.FORMAT_VERSION + 1} is newer than this tunebench reads")
    _one_line_error(_cli("merge", "newer.jsonl", "-o", "out.jsonl", cwd=tmp_path), "upgrade tunebench")
    assert not (tmp_path / "out.jsonl").exists()

    # Garbage lines, an old TVM's records and a torn tail: reported, and every valid record kept.
    old_tvm = [json.dumps({**json.loads(line), "tvm": "0.20.0"}) if '"type": "record"' in line else line for line in good]
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text("\n".join([*old_tvm[:4], "not json at all", *old_tvm[4:], "[1, 2]"]) + "\n" + good[-1][:40])
    shown = _cli("show", "mixed.jsonl", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert "mixed.jsonl:5: not a tunebench record, skipped" in shown.stdout
    assert "measured with TVM 0.20.0 (this is TVM" in shown.stdout and "no: measured with TVM 0.20.0" in shown.stdout
    assert "torn last line skipped" in shown.stdout
    merged = _cli("merge", "mixed.jsonl", "-o", "clean.jsonl", cwd=tmp_path)
    assert merged.returncode == 0, merged.stderr
    assert "8 record(s) written" in merged.stdout and "not a tunebench record" in merged.stdout
    assert len(rec.read_log(tmp_path / "clean.jsonl", warn=False).records) == 8

    _one_line_error(_cli("prune", "clean.jsonl", "--top", "0", cwd=tmp_path), "--top must be at least 1")


def test_older_and_torn_logs_read(two_logs, tmp_path):
    """An older log (records without measured_on, workloads without weight) reads; a file holding
    only a batch cut off by a crash is an empty log with a warning, not an error."""
    lines = [json.loads(line) for line in two_logs[0].read_text().splitlines()]
    for obj in lines:
        obj.pop("weight", None)
        obj["v"] = 0
        assert "measured_on" not in obj
    old = tmp_path / "old.jsonl"
    old.write_text("".join(json.dumps(o) + "\n" for o in lines))
    log = rec.read_log(old)
    assert len(log.records) == 8 and all(w.weight == 1 for w in log.workloads.values())
    assert all(r.measured_on is None for r in log.records)

    fresh = tmp_path / "fresh.jsonl"
    fresh.write_text(two_logs[0].read_text()[:100])
    with pytest.warns(rec.LogWarning, match="torn last line"):
        empty = rec.read_log(fresh)
    assert empty.records == [] and len(empty.problems) == 1
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_text("oops")  # unterminated too, but not a line of ours: garbage, not a torn record
    with pytest.raises(TunebenchError, match="not a tunebench history log"):
        rec.read_log(garbage)


def _retarget(log: Path, out: Path, target: str) -> Path:
    """``log`` with every record's target replaced: the same schedules, tuned for another CPU."""
    out.write_text(log.read_text().replace('"mcpu": "core-avx2"', target[1:-1]))
    return out


def test_show_marks_records_this_machine_cannot_use(two_logs, tmp_path, fake_host):
    skylake = _retarget(two_logs[0], tmp_path / "skylake.jsonl", '{"mcpu": "skylake-avx512"}')
    # mcpus the presets never name: the check asks LLVM what they enable
    sapphire = _retarget(two_logs[0], tmp_path / "spr.jsonl", '{"mcpu": "sapphirerapids"}')
    mattr = _retarget(two_logs[0], tmp_path / "mattr.jsonl", '{"mcpu": "x86-64", "mattr": ["+avx512f"]}')
    fake_host("zen3")  # AVX2 only
    summary = summarize(skylake)
    assert summary.rows and all(row.unusable == "CPU lacks avx512f, avx512cd, avx512bw, avx512dq, avx512vl" for row in summary.rows)
    assert all(row.unusable.startswith("CPU lacks avx512f, ") and "amx_tile" in row.unusable for row in summarize(sapphire).rows)
    assert all(row.unusable == "CPU lacks avx512f" for row in summarize(mattr).rows)
    local = summarize(two_logs[0])
    assert len(local.rows) == 2 and all(row.unusable == "" and row.target == "avx2" and row.trials == 4 for row in local.rows)
    fake_host("xeon")  # a host with every one of those flags can use them all
    assert all(row.unusable == "" for log in (skylake, sapphire, mattr) for row in summarize(log).rows)


def test_serving_reads_a_digest_that_follows_the_log(tiny_log: Path, tmp_path: Path) -> None:
    """Serving parses a log once per change: later processes read its digest (bests only), with the same bests."""
    from dataclasses import replace

    from tunebench.serve.choose import best_records
    from tunebench.serve.context import make_config

    log, cache_dir = tmp_path / "t.jsonl", tmp_path / "cache"
    shutil.copy(tiny_log, log)
    full = rec.read_log(log)
    first = make_config(log, cache_dir=cache_dir)
    digests = list((cache_dir / "digests").iterdir())
    assert len(digests) == 1 and len(first.log.records) <= len(full.records)
    assert {k: r.identity() for k, r in first.best.items()} == {k: r.identity() for k, r in best_records(full, first.target).items()}
    assert make_config(log, cache_dir=cache_dir).fingerprint == first.fingerprint  # read back from the digest
    key = next(iter(first.best))
    faster = replace(first.best[key], run_secs=[first.best[key].latency / 10] * 3, time=first.best[key].time + 1)
    rec.LogWriter(log).append([faster], full.workloads)
    again = make_config(log, cache_dir=cache_dir)
    assert again.best[key].identity() == faster.identity(), "a record appended to the log is not served"
    assert [p.name for p in (cache_dir / "digests").iterdir()] != [p.name for p in digests] and len(list((cache_dir / "digests").iterdir())) == 1


def test_show_fits_an_80_column_terminal(tiny_log: Path, tmp_path: Path, fake_host) -> None:
    """`logs show | cat` or an 80-column terminal: one line per workload, none wider than the terminal,
    long task names shortened, why a record is not usable said once. A wide terminal keeps every column."""
    from io import StringIO

    from conftest import rewritten
    from rich.console import Console

    from tunebench.logs.share import print_summary

    long_names = tmp_path / "long.jsonl"
    longer = '"task": "fused_conv2d_NCHWc_subtract1_divide1_multiply1_add2_add3_relu1_conv2d'
    long_names.write_text(tiny_log.read_text().replace('"task": "fused_conv2d', longer))
    foreign = rewritten(long_names, tmp_path / "foreign.jsonl", target={"mcpu": "skylake-avx512"})
    both = tmp_path / "both.jsonl"
    both.write_text(long_names.read_text() + foreign.read_text())
    fake_host("zen3")  # AVX2 only: the skylake-avx512 records are not usable here
    summary = summarize(both)
    assert len(summary.rows) == 4

    def shown(width: int) -> list[str]:
        out = StringIO()
        print_summary(summary, Console(file=out, width=width, force_terminal=False))
        return out.getvalue().splitlines()

    narrow = shown(80)
    assert max(map(len, narrow)) <= 80, "\n".join(narrow)
    rows = [line for line in narrow if "…" in line]
    assert len(rows) == 4 and all(" 4 " in row for row in rows), "\n".join(narrow)  # one line per row, trials column whole
    assert sum("not usable here (2 workload(s)): CPU lacks avx512f" in line for line in narrow) == 1
    wide = shown(400)
    assert any("usable here" in line for line in wide) and sum("no: CPU lacks avx512f" in line for line in wide) == 2


def test_show_model_totals_a_lowered_model(tiny_log: Path, lowered) -> None:
    """``logs show --model``: the API lowers the model, the log's records total its tasks."""
    from typer.testing import CliRunner

    from tunebench.api import log_summary
    from tunebench.cli import app

    best = rec.read_log(tiny_log).best()
    (total,) = [t for t in log_summary(tiny_log, [TINY]).totals if not t.from_log]  # NCHW only: one lowering
    assert (total.model, total.target, total.tasks, total.covered) == (TINY, "avx2", 2, 2)
    assert total.latency == pytest.approx(sum(t.weight * best[t.workload_key].latency for t in lowered.tasks))
    result = CliRunner().invoke(app, ["logs", "show", str(tiny_log), "--model", TINY])
    assert result.exit_code == 0, result.output
    assert f"{total.latency * 1e3:.3f} ms, 2/2 of its tasks in the log" in " ".join(result.output.split())
