"""Issue 25: TVM's own log stays off the terminal; what a user can act on is said in one line."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import PATIENT

from tunebench import api
from tunebench.search import tvmlog

ROOT = Path(__file__).resolve().parents[1]
TVM_LINE = re.compile(r"^\[\d\d:\d\d:\d\d\] \S+\.(cc|h):\d+: |\.cc:\d+: Warning:", re.M)
# as TVM 0.27's wheel printed them on AMD EPYC Zen 3 (TVM_NUM_THREADS=4 on 2 cores; mcpu znver99, mattr +foo)
AFFINITY = (
    "[14:09:55] /project/src/runtime/threading_backend.cc:224: Warning: The thread affinity cannot be set when the number"
    " of workersis larger than the number of available cores in the system."
)
BAD_MCPU = (
    "[14:09:16] /project/src/target/llvm/llvm_instance.cc:218: Error: Using LLVM 22.1.0 with `-mcpu=znver99` is not valid"
    " in `-mtriple=x86_64-conda-linux-gnu`, using default `-mcpu=generic`"
)
POOL_RULE = (
    '[14:13:13] /project/src/s_tir/meta_schedule/schedule_rule/apply_custom_rule.cc:64: Warning: Unknown schedule rule "meta_schedule.pool_max"'
    ' for target keys "("cpu",)". Checked ffi::Functions:\n  s_tir.meta_schedule.cpu.meta_schedule.pool_max'
)


def test_messages_are_translated_only_when_the_user_can_act() -> None:
    text = "\n".join([POOL_RULE, AFFINITY, BAD_MCPU, "'+foo' is not a recognized feature for this target (ignoring feature)"])
    found = tvmlog.messages("  continuation of a message read before\n" + text)
    assert found[0] == POOL_RULE, "a message keeps its indented lines; leading ones belong to an earlier read"
    assert len(found) == 4
    assert tvmlog.translate(found[0]) is None
    assert "--num-cores" in (tvmlog.translate(AFFINITY) or "")
    assert "'znver99'" in (tvmlog.translate(BAD_MCPU) or "") and "LLVM 22.1.0" in (tvmlog.translate(BAD_MCPU) or "")
    assert "'+foo'" in (tvmlog.translate(found[3]) or "")
    assert tvmlog.beside("tuning_logs/resnet18-avx2.jsonl.gz") == Path("tuning_logs/resnet18-avx2.tvm.txt")


def test_fd2_of_the_process_and_its_workers_goes_to_the_file_python_stderr_stays(tmp_path: Path) -> None:
    """In a real process (pytest replaces sys.stderr): C-level writes to fd 2 and a child process's (a popen
    worker inherits fd 2) land in the file; Python's stderr still reaches the terminal, and the actionable
    message comes out as one warning line."""
    log = tmp_path / "run.tvm.txt"
    script = f"""
import os, subprocess, sys
from tunebench.search import tvmlog
with tvmlog.captured({str(log)!r}) as capture:
    os.write(2, {(POOL_RULE + chr(10)).encode()!r})
    subprocess.run([sys.executable, "-c", "import sys; sys.stderr.write({AFFINITY!r} + chr(10))"], check=True)
    print("python's own line", file=sys.stderr)
print(capture.summary())
"""
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert not TVM_LINE.search(done.stdout + done.stderr), done.stderr
    assert "python's own line" in done.stderr
    assert done.stderr.count("TvmWarning") == 1 and "--num-cores" in done.stderr
    assert f"2 message(s) in {log}, 1 of them said above" in done.stdout
    kept = log.read_text()
    assert "apply_custom_rule.cc:64" in kept and "threading_backend.cc:224" in kept


def test_a_tuning_run_prints_no_tvm_log_line(tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The pool's 'Unknown schedule rule' warning (C++, during design-space generation) reached the terminal on every run.
    The same run checks that ``timeout`` counts from before the lowering (it counted from the search's start)."""
    lowering_started: list[float] = []
    lower_model = api.lower_model

    def noting_lower_model(*args: object, **kwargs: object) -> object:
        lowering_started.append(time.time())
        return lower_model(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(api, "lower_model", noting_lower_model)
    log = tmp_path / "pool.jsonl"
    state = api.tune("tests/fixtures/tiny.py:tiny_pool", "avx2", log=log, trials=1, timeout=3600, tuner="random", layout="nchw", measure=PATIENT)
    assert state.deadline == state.started + 3600 and state.started <= lowering_started[0]
    out, err = capfd.readouterr()
    assert not TVM_LINE.search(out + err), out + err
    kept = tvmlog.beside(log)
    assert 'Unknown schedule rule "meta_schedule.pool_max"' in kept.read_text()
    assert str(kept) in state.tvm_log
