"""Issue 7: candidates timed with flushed caches ("cold"), as inside a model; warm logs carry over."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import PATIENT, TINY
from tunebench import api
from tunebench.bench.plot import tuning_curve
from tunebench.errors import TunebenchError
from tunebench.logs.records import HistoryLog, LogWriter, Record, WorkloadEntry, read_log, tvm_version
from tunebench.logs.share import best_k
from tunebench.search import driver as search
from tunebench.search.settings import COLD_REPEAT, MeasureConfig, evaluator_config

TARGET = {"kind": "llvm", "mcpu": "core-avx2", "num-cores": 2}


def _record(key: str, secs: list[float], protocol: str) -> Record:
    return Record(key, [], [], secs, None, TARGET, {}, tvm_version(), protocol=protocol)


def test_cold_records_outrank_faster_warm_ones_and_round_trip(tmp_path: Path) -> None:
    warm = _record("k", [1e-3, 1e-3, 1e-3], "warm")
    cold = _record("k", [2e-3] * 14 + [5.0], "cold")  # one preempted call
    assert cold.latency == pytest.approx(2e-3), "a cold record ranks by its median"
    log = HistoryLog(records=[warm, cold])
    assert log.best()["k"] is cold, "a warm time is never compared with a cold one"
    assert "protocol" not in warm.to_json(), "warm records keep the shape of every older log"
    assert cold.ms_run_secs == [pytest.approx(2e-3)], "MetaSchedule ranks cold records by the median too"

    path = tmp_path / "p.jsonl"
    LogWriter(path).append([warm, cold], {"k": WorkloadEntry("k", "t", 1.0, "", 1)})
    with open(path, "a") as f:
        f.write(json.dumps({**cold.to_json(), "protocol": "lukewarm"}) + "\n")
    with pytest.warns(UserWarning, match="malformed 'record' line"):
        back = read_log(path)
    assert [r.protocol for r in back.records] == ["warm", "cold"]
    assert back.best()["k"].run_secs == cold.run_secs

    # the estimate over time follows the protocol switch, even when it goes up
    assert tuning_curve(HistoryLog(records=[warm, cold]), {"k": 1}).latency_s == pytest.approx([1e-3, 2e-3])


def test_prune_keeps_the_best_of_each_protocol() -> None:
    recs = [_record("k", [i * 1e-3], "warm") for i in (1, 2, 3)] + [_record("k", [i * 1e-3], "cold") for i in (4, 5, 6)]
    kept = best_k(recs, 2)
    assert sorted((r.protocol, round(r.latency * 1e3)) for r in kept) == [("cold", 4), ("cold", 5), ("warm", 1), ("warm", 2)]


def test_measure_config_protocols() -> None:
    cold, warm = evaluator_config(MeasureConfig()), evaluator_config(MeasureConfig(protocol="warm"))
    assert cold.enable_cpu_cache_flush and cold.number == 1 and cold.min_repeat_ms == 0 and cold.repeat == COLD_REPEAT
    assert not warm.enable_cpu_cache_flush and warm.min_repeat_ms > 0
    with pytest.raises(TunebenchError, match="unknown timing protocol 'hot'"):
        MeasureConfig(protocol="hot")


def test_a_warm_log_carries_its_best_schedules_into_cold_tuning(tiny_log: Path, tmp_path: Path) -> None:
    # an older log: the same records without the protocol field
    path = tmp_path / "old.jsonl"
    lines = [json.loads(x) for x in tiny_log.read_text().splitlines()]
    path.write_text("".join(json.dumps({k: v for k, v in x.items() if k != "protocol"}) + "\n" for x in lines))
    old = read_log(path)
    assert {r.protocol for r in old.records} == {"warm"}
    warm_traces = {k: {json.dumps(r.trace, sort_keys=True) for r in rs if r.ok} for k, rs in old.by_key().items()}
    carried = sum(min(len(t), search.CARRY_OVER) for t in warm_traces.values())

    state = api.tune(TINY, "avx2", log=path, more=carried, layout="nchw", measure=PATIENT)
    new = read_log(path).records[len(old.records) :]
    assert len(new) == carried and {r.protocol for r in new} == {"cold"}
    for key, traces in warm_traces.items():
        assert {json.dumps(r.trace, sort_keys=True) for r in new if r.key == key} == traces, "each task's warm winners, timed again"
    assert all(s.best_record is not None and s.best_record.protocol == "cold" for s in state.states)
    # done once: a resumed run searches instead
    lowered = api.lower_model(TINY, "avx2", layout="nchw")
    priors = search.load_priors(path, lowered.target, lowered.target.measurement_class())  # what a resumed run reads
    assert all(search._carry_over(t, priors, "cold") == [] for t in lowered.tasks)
