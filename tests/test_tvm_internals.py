"""TVM (and torch) internals tunebench relies on: private names a TVM upgrade may remove or change without notice.

Each test names the TVM attribute and the tunebench code that uses it, so a failure after an upgrade says
what to port instead of surfacing as a broken search or fleet run minutes later.
"""

from __future__ import annotations

import inspect
import socket
import struct
import threading
from types import ModuleType
from typing import Any

import pytest
import torch
import tvm


def _private(module: ModuleType, name: str, used_by: str) -> Any:
    """``module.name``, or a failure naming it and its user."""
    value = getattr(module, name, None)
    if value is None:
        pytest.fail(f"TVM {tvm.__version__} has no {module.__name__}.{name} any more; {used_by} calls it")
    return value


def _parameters(func: Any, qualname: str, used_by: str, expected: list[str]) -> None:
    """``func``'s parameters must still be ``expected``, in order: tunebench passes them positionally."""
    got = list(inspect.signature(func).parameters)
    assert got == expected, f"TVM {tvm.__version__} changed {qualname}{tuple(got)} (was {tuple(expected)}); {used_by} calls it positionally"


def test_rpc_runner_worker_func() -> None:
    """``tunebench.search.rpc.measure_on_server`` runs MetaSchedule's RPC measurement with its own session factory."""
    from tvm.s_tir.meta_schedule.runner import rpc_runner

    func = _private(rpc_runner, "_worker_func", "tunebench.search.rpc.measure_on_server")
    expected = ["_f_create_session", "_f_upload_module", "_f_alloc_argument", "_f_run_evaluator", "_f_cleanup"]
    expected += ["rpc_config", "evaluator_config", "alloc_repeat", "artifact_path", "device_type", "args_info"]
    _parameters(func, "tvm.s_tir.meta_schedule.runner.rpc_runner._worker_func", "tunebench.search.rpc.measure_on_server", expected)
    # FleetRunner subclasses the undecorated class and reads what its __init__ stores
    cls = getattr(rpc_runner.RPCRunner, "_cls", None)
    assert cls is not None, "RPCRunner._cls (the class under derived_object) is gone; tunebench.search.rpc.FleetRunner subclasses it"
    source = inspect.getsource(cls.__init__)
    for attr in ("pool", "rpc_config", "evaluator_config", "alloc_repeat"):
        assert f"self.{attr} =" in source, f"RPCRunner.__init__ no longer sets self.{attr}; tunebench.search.rpc.FleetRunner reads it"


def test_local_builder_worker_func_and_serialize_params() -> None:
    """``tunebench.search.measure.PersistentBuilder`` does LocalBuilder's per-candidate work in its own pool."""
    import numpy as np
    from tvm.s_tir.meta_schedule.builder import local_builder as lb

    used_by = "tunebench.search.measure.PersistentBuilder.build"
    worker = _private(lb, "_worker_func", used_by)
    _parameters(worker, "tvm.s_tir.meta_schedule.builder.local_builder._worker_func", used_by, ["_f_build", "_f_export", "mod", "target", "params"])
    serialize = _private(lb, "_serialize_params", used_by)
    _parameters(serialize, "tvm.s_tir.meta_schedule.builder.local_builder._serialize_params", used_by, ["params"])
    assert serialize(None) is None, "_serialize_params(None) must stay None: tasks without bound params pass None"
    blob = serialize({"w": tvm.runtime.tensor(np.arange(4, dtype="float32"))})
    assert isinstance(blob, bytearray | bytes) and blob, "_serialize_params no longer returns the bytes _worker_func reads"
    for name in ("PyBuilder", "BuilderResult"):
        _private(lb, name, used_by)


def _fake_tracker(server: socket.socket, reply: list[Any], got: list[Any]) -> None:
    """The tracker's side of one session: the magic handshake, then one request answered with ``reply``."""
    from tvm.rpc import base

    assert struct.unpack("<i", base.recvall(server, 4))[0] == base.RPC_TRACKER_MAGIC
    server.sendall(struct.pack("<i", base.RPC_TRACKER_MAGIC))
    got.append(base.recvjson(server))
    base.sendjson(server, reply)


def test_tracker_session_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    """``tunebench.search.rpc.request_session`` asks the tracker for a server over ``TrackerSession._sock`` itself,
    to learn which server it got (``TrackerSession.request`` connects without saying)."""
    from tvm import rpc
    from tvm.rpc import base, client

    from tunebench.search import rpc as tb_rpc

    ours, theirs = socket.socketpair()
    monkeypatch.setattr(base, "connect_with_retry", lambda addr, *args, **kwargs: ours)
    got: list[Any] = []
    tracker = threading.Thread(target=_fake_tracker, args=(theirs, [base.TrackerCode.SUCCESS, ["10.0.0.7", 9091, "key:x"]], got))
    tracker.start()
    session = client.TrackerSession(("127.0.0.1", 1))
    assert getattr(session, "_sock", None) is ours, "tvm.rpc.client.TrackerSession._sock is gone; search.rpc.request_session talks to the tracker through it"

    class Config:
        tracker_host, tracker_port, tracker_key, session_priority, session_timeout_sec = "127.0.0.1", 1, "k", 1, 5

        def connect_tracker(self) -> Any:
            return session

    connected: list[tuple[Any, ...]] = []
    monkeypatch.setattr(rpc, "connect", lambda *args, **kwargs: connected.append(args))
    monkeypatch.setattr(tb_rpc, "server_fingerprint", lambda sess: {})
    _, where = tb_rpc.request_session(Config())
    tracker.join(timeout=10)
    assert got == [[base.TrackerCode.REQUEST, "k", "", 1]], "the tracker protocol's REQUEST message changed"
    assert connected == [("10.0.0.7", 9091, "key:x")] and where["server"] == "10.0.0.7:9091"
    theirs.close()


def test_dynamo_compile_lock() -> None:
    """``torch._dynamo.convert_frame.compile_lock``: ``backend._build_lock`` holds it while a subgraph is
    exported and built, so no other thread exports or dynamo-compiles meanwhile. It must be re-entrant:
    the build runs inside a dynamo-compiled call and torch.export may take it again."""
    import torch._dynamo.convert_frame as convert_frame

    lock = getattr(convert_frame, "compile_lock", None)
    if lock is None:
        pytest.fail(f"torch {torch.__version__} has no torch._dynamo.convert_frame.compile_lock; backend._build_lock uses it")
    assert _reenters(threading.RLock()) and not _reenters(threading.Lock(), timeout=0.1), "the check itself would hang"
    assert _reenters(lock), "compile_lock is not re-entrant: a build inside a dynamo-compiled call would deadlock"


def _reenters(lock: Any, timeout: float = 10.0) -> bool:
    """Whether the thread holding ``lock`` can take it again: False for a plain lock, after ``timeout``, not a hang."""
    assert lock.acquire(timeout=timeout), "the lock is held by another thread"
    try:
        again = lock.acquire(timeout=timeout)
        if again:
            lock.release()
        return again
    finally:
        lock.release()


def test_the_suite_has_a_per_test_timeout(pytestconfig: pytest.Config) -> None:
    """A hung test fails by name (pytest-timeout) instead of hanging CI until its job limit."""
    assert 0 < float(pytestconfig.getini("timeout")) <= 900
