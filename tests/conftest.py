"""Shared fixtures: one real tuning run of the two-conv model serves every test that needs a log.

Tuning is the slow part of the suite (process pools start, the evolutionary search runs), so the
log is made once per session; tests that change a log copy it first.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tunebench.measure import MeasureConfig

TINY = "tests/fixtures/tiny.py:tiny_conv"
# Generous timeouts: on a loaded 2-core machine a fresh build worker alone can take 30 s to import TVM,
# and a timed-out build leaves no usable record.
PATIENT = MeasureConfig(build_timeout=300, run_timeout=60)


@pytest.fixture(scope="session")
def tiny_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4 trials on each of tiny_conv's 2 tasks (NCHW layout), every task with at least one successful record."""
    from tunebench import api
    from tunebench.records import read_log

    path = tmp_path_factory.mktemp("tiny") / "tiny.jsonl"
    state = api.tune(TINY, "avx2", log=path, trials=8, trials_per_task=4, layout="nchw", measure=PATIENT)
    assert state.new_trials == 8
    tasks = {t.workload_key for t in api.lower_model(TINY, "avx2").tasks}
    assert set(read_log(path).best()) == tasks, "the tiny tuning run left a task without a successful record"
    return path
