"""Measuring on a fleet: a real TVM RPC tracker and two servers started by ``tunebench fleet`` with its
defaults (loopback), the tiny model tuned through them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from tunebench.errors import TunebenchError
from tunebench.logs import records as rec
from tunebench.search.rpc import count_servers, parse_tracker, rpc_config
from tunebench.search.settings import MeasureConfig

ROOT = Path(__file__).resolve().parents[1]
TINY = f"{ROOT / 'tests' / 'fixtures' / 'tiny.py'}:tiny_conv"
KEY = f"tunebench-test-{os.getpid()}"


@dataclass
class Fleet:
    tracker: str  # host:port
    servers: list[str]  # host:port each
    threads: dict[str, int]  # server -> the --threads it was started with
    listeners: dict[int, int]  # pid of a `tunebench fleet` process -> the --port it was given


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    # Own process group: the tracker and server run in TVM worker processes and a server forks a child
    # per session; the finalizer must stop those too.
    with open(log, "wb") as out:
        cmd = [sys.executable, "-m", "tunebench.cli", "fleet", *args]
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory) -> Iterator[Fleet]:
    d = tmp_path_factory.mktemp("fleet")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        port = _free_port()
        procs.append(_start(["tracker", "--port", str(port)], d / "tracker.log"))
        listeners, threads = {procs[-1].pid: port}, {}
        for i in range(2):  # no --host: the default must be loopback
            sport = _free_port()
            args = ["server", "--tracker", f"127.0.0.1:{port}", "--key", KEY, "--port", str(sport), "--threads", str(i + 1)]
            procs.append(_start(args, d / f"server{i}.log"))
            listeners[procs[-1].pid] = sport
            threads[f"127.0.0.1:{sport}"] = i + 1
        cfg = rpc_config(MeasureConfig(rpc=f"127.0.0.1:{port}", rpc_key=KEY))
        deadline = time.time() + 120  # servers retry the tracker every 5 s; imports are slow on a busy machine
        while True:
            try:
                if count_servers(cfg) == 2:
                    break
            except TunebenchError:
                pass
            if time.time() > deadline or any(p.poll() is not None for p in procs):
                logs = "\n".join(f"{f.name}: {f.read_text()[-2000:]}" for f in sorted(d.iterdir()))
                pytest.fail(f"RPC fleet did not come up:\n{logs}")
            time.sleep(1)
        yield Fleet(f"127.0.0.1:{port}", list(threads), threads, listeners)
    finally:
        for p in procs:
            _stop(p)


def test_tune_measures_on_every_server_of_the_fleet(fleet, tmp_path):
    from tunebench.api import tune
    from tunebench.logs.share import measured_where, summarize

    log = tmp_path / "fleet.jsonl"
    measure = MeasureConfig(workers=2, repeat=1, min_repeat_ms=1, build_timeout=300, run_timeout=60, rpc=fleet.tracker, rpc_key=KEY)
    state = tune(TINY, "avx2", log=log, trials_per_task=4, tuner="random", layout="nchw", measure=measure)
    assert state.new_trials == 8

    records = rec.read_log(log).records
    ok = [r for r in records if r.ok]
    assert ok, [r.error for r in records]
    for r in records:  # every candidate that ran was timed by one of the fleet's servers
        if r.ok:
            assert r.measured_on is not None
            assert r.measured_on["server"] in fleet.servers and r.measured_on["key"] == KEY and r.measured_on["tracker"] == fleet.tracker
            assert r.measured_on["llvm_cpu"] and r.measured_on["threads"] == fleet.threads[r.measured_on["server"]]  # fleet server --threads
    assert {r.measured_on["server"] for r in ok} == set(fleet.servers)  # in parallel: both servers got work
    assert all(measured_where(row.best).startswith("rpc 127.0.0.1:") for row in summarize(log).rows if row.best)


def _listening(pid: int) -> set[tuple[str, int]]:
    """Addresses a process and its children (TVM runs the tracker and server in one) listen on."""
    proc = psutil.Process(pid)
    conns = [c for p in (proc, *proc.children(recursive=True)) for c in p.net_connections(kind="tcp")]
    return {(c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN}


def test_fleet_listens_on_loopback_only_by_default(fleet):
    for pid, port in fleet.listeners.items():
        assert _listening(pid) == {("127.0.0.1", port)}


def test_fleet_errors_are_one_line(fleet):
    with pytest.raises(TunebenchError, match=r"no RPC server is registered under key 'nobody' .* \(keys there: " + KEY):
        count_servers(rpc_config(MeasureConfig(rpc=fleet.tracker, rpc_key="nobody")))
    with pytest.raises(TunebenchError, match="expected HOST:PORT"):
        parse_tracker("localhost")
