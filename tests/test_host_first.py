"""Host first: tuning defaults to the widest ISA the host runs, and a machine class no log holds is
served, and starts its search, from the nearest class's records, with a warning saying so."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import Host
from tunebench import target as tgt
from tunebench.logs.records import HistoryLog, Record, read_log
from tunebench.lowering.tasks import Task
from tunebench.search.driver import CARRY_OVER, Priors, _carry_over
from tunebench.serve.choose import ForeignTimingsWarning, best_records

WIDEST = [("zen3", "avx2", "core-avx2"), ("haswell", "avx2", "core-avx2"), ("zen4", "avx512", "znver4"), ("xeon", "avx512", "skylake-avx512")]


@pytest.mark.parametrize(("host", "preset", "mcpu"), WIDEST)
def test_host_preset_is_the_widest_isa_the_host_runs(fake_host: Callable[[str], Host], host: str, preset: str, mcpu: str) -> None:
    fake_host(host)
    name, why = tgt.host_preset()
    assert name == preset and f"fake {host}" in why
    spec = tgt.resolve_target("host")
    assert (spec.name, spec.mcpu) == (preset, mcpu)


def test_class_distance_orders_vendor_then_vector_width_then_threads() -> None:
    here = "znver3 x2"
    classes = ["rocketlake x2", "znver4 x4", "znver4 x2", "znver3 x2", "emeraldrapids x4"]
    assert sorted(classes, key=lambda c: tgt.class_distance(c, here)) == ["znver3 x2", "znver4 x2", "znver4 x4", "rocketlake x2", "emeraldrapids x4"]
    # on an Intel AVX-512 host the Intel class is nearest, whatever the AMD one measured
    assert tgt.class_distance("rocketlake x2", "emeraldrapids x2") < tgt.class_distance("znver4 x2", "emeraldrapids x2")


def _timed(records: list[Record], llvm_cpu: str, scale: float) -> list[Record]:
    """The records as if timed on ``llvm_cpu``, each latency multiplied by ``scale``."""
    return [dataclasses.replace(r, host={**r.host, "llvm_cpu": llvm_cpu}, run_secs=[s * scale for s in r.run_secs or []]) for r in records]


def _two_machines(tiny_log: Path) -> HistoryLog:
    """tiny_log's records as timed on an Intel machine, and 3x slower on a Zen 4."""
    log = read_log(tiny_log)
    ok = [r for r in log.records if r.ok]
    return HistoryLog(workloads=log.workloads, records=_timed(ok, "rocketlake", 1.0) + _timed(ok, "znver4", 3.0))


def test_nearest_class_serves_where_no_record_was_timed_here(tiny_log: Path, fake_host: Callable[[str], Host]) -> None:
    log = _two_machines(tiny_log)
    fake_host("zen3")
    spec = tgt.resolve_target("avx2")
    served_by = r"timed on this kind of machine \(znver3 x2\); served by the nearest machines' timings \(znver4 x2\).*tunebench tune"
    with pytest.warns(ForeignTimingsWarning, match=served_by):
        best = best_records(log, spec)
    assert best and {r.measured_class for r in best.values()} == {"znver4 x2"}, "the same vendor's timings, though the Intel ones look 3x faster"
    fake_host("xeon")  # rocketlake with 3 cores: a class neither machine is (threads differ), but Intel's is nearer
    with pytest.warns(ForeignTimingsWarning, match=r"\(rocketlake x3\)"):
        best = best_records(log, tgt.resolve_target("avx2"))
    assert {r.measured_class for r in best.values()} == {"rocketlake x2"}


def test_no_warning_once_a_record_was_timed_here(tiny_log: Path, fake_host: Callable[[str], Host]) -> None:
    log = _two_machines(tiny_log)
    fake_host("zen3")
    log.records += _timed(log.records[:1], "znver3", 10.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ForeignTimingsWarning)
        best = best_records(log, tgt.resolve_target("avx2"))
    assert best[log.records[0].key].measured_class == "znver3 x2", "this machine's own record, though slowest"


def test_carry_over_times_the_nearest_class_first(tiny_log: Path) -> None:
    log = _two_machines(tiny_log)
    key = log.records[0].key
    task = Task(name="t", workload_key=key, mod=None, weight=1, flop=1.0, anchor="conv2d")
    priors = Priors(counts={key: len(log.records)}, sources=list(log.records), workloads=log.workloads, here="znver3 x2")
    picked = _carry_over(task, priors, "cold")
    assert picked and len(picked) <= CARRY_OVER
    classes = [r.measured_class for r in picked]
    assert classes == sorted(classes, key=lambda c: tgt.class_distance(c, "znver3 x2")), classes
    assert classes[0] == "znver4 x2"


def test_the_other_vendors_avx512_records_serve_and_carry_over(tiny_log: Path, tmp_path: Path, fake_host: Callable[[str], Host]) -> None:
    """On a Zen 4 the avx512 preset is ``znver4``; the shipped avx512 logs are Intel's ``skylake-avx512``.
    Those records run here: they serve (ranked by where they were timed) and the search times them first."""
    from tests.conftest import rewritten
    from tunebench.logs.records import unusable_reason
    from tunebench.search.driver import load_priors

    intel = read_log(rewritten(tiny_log, tmp_path / "intel.jsonl", target={"mcpu": "skylake-avx512"}))
    fake_host("zen4")
    spec = tgt.resolve_target("avx512")
    assert spec.mcpu == "znver4"
    ok = [r for r in intel.records if r.ok]
    assert not any(unusable_reason(r, spec) for r in ok)
    assert all(unusable_reason(r, tgt.resolve_target("avx2")) for r in ok), "another vector width: not evidence"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tiny log was timed on this machine, not on the faked Zen 4
        assert set(best_records(intel, spec)) == {r.key for r in ok}
    priors = load_priors(tmp_path / "intel.jsonl", spec, spec.measurement_class())
    assert len(priors.sources) == len(ok) and not priors.local and not priors.counts, "transfer sources, never this target's trials"
    fake_host("zen3")  # no AVX-512: Intel's avx512 records cannot run, so they are neither
    assert all(unusable_reason(r, tgt.resolve_target("avx512", check=False)) for r in ok)
