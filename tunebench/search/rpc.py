"""Measuring on a fleet: MetaSchedule's RPC runner, one connection per server registered under a key.

Candidates are built locally and timed on whichever server the TVM tracker hands out, as many at
once as there are servers. MetaSchedule's ``RPCRunner`` only returns the timings, so a record could
not say where it was measured; ``FleetRunner`` is that runner with the tracker request done here,
which learns the server's address, and asks the server for its CPU, so each record carries a
``measured_on`` stamp. The stamp is kept on the runner by artifact path (``runner.measured_on``):
futures cross TVM's FFI and come back as plain objects, without Python attributes of their own.
Candidates go only to a tracker on loopback or a private network unless the user allows a public
one (``check_tracker``; ``addresses`` says which is which). How to stand up a fleet: ``docs/fleet.md``.
"""

from __future__ import annotations

import functools
from typing import Any

from ..errors import TunebenchError
from .addresses import public_addresses
from .settings import MeasureConfig, evaluator_config

# The tracker answers at once; a longer wait means a wrong address or a firewall.
TRACKER_TIMEOUT_S = 10


def parse_tracker(addr: str, flag: str = "--rpc") -> tuple[str, int]:
    """``HOST:PORT`` (``[IPV6]:PORT``) -> (host, port), refusing anything else with a one-line message."""
    host, sep, port = addr.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit():
        raise TunebenchError(f"{flag} {addr!r}: expected HOST:PORT of a TVM RPC tracker")
    return host, int(port)


def check_tracker(addr: str, allow_public: bool = False) -> tuple[str, int]:
    """``parse_tracker``, refusing a tracker with a public address unless ``allow_public``: the tracker
    decides who receives every candidate, and a mistyped host name must not make that a stranger."""
    host, port = parse_tracker(addr)
    public = [] if allow_public else [str(a) for a in public_addresses(host)]
    if public:
        what = f"{host} is" if public == [host] else f"{host} resolves to {', '.join(public)}, which is"
        raise TunebenchError(
            f"--rpc {addr}: {what} neither loopback nor a private network (10/8, 172.16/12, 192.168/16, fc00::/7); "
            "reach the tracker through SSH port forwarding (docs/fleet.md), or pass --rpc-allow-public if it is yours"
        )
    return host, port


def rpc_config(cfg: MeasureConfig) -> Any:
    """MetaSchedule's RPC settings for ``cfg``; a public tracker is refused here too, for callers of the Python API."""
    if not cfg.rpc or not cfg.rpc_key:
        raise TunebenchError("--rpc and --rpc-key go together")
    host, port = check_tracker(cfg.rpc, cfg.rpc_allow_public)
    from tvm.s_tir.meta_schedule.runner import RPCConfig

    # The server ends a session after this long: upload, allocation and every timing sample fit in it.
    return RPCConfig(tracker_host=host, tracker_port=port, tracker_key=cfg.rpc_key, session_timeout_sec=int(cfg.run_timeout) + TRACKER_TIMEOUT_S)


def count_servers(config: Any) -> int:
    """Servers registered under the key (free or busy), or a one-line error naming the problem."""
    probe = config._replace(session_timeout_sec=TRACKER_TIMEOUT_S)
    try:
        summary = probe.connect_tracker().summary()
    except (ValueError, OSError, RuntimeError) as e:
        raise TunebenchError(f"cannot reach the RPC tracker at {config.tracker_host}:{config.tracker_port} ({str(e).splitlines()[0]})") from None
    keys = [item["key"].split(":", 1)[-1] for item in summary["server_info"]]
    n = keys.count(config.tracker_key)
    if n == 0:
        known = ", ".join(sorted(set(keys))) or "none"
        raise TunebenchError(
            f"no RPC server is registered under key {config.tracker_key!r} at {config.tracker_host}:{config.tracker_port} (keys there: {known})"
        )
    return n


def make_rpc_runner(cfg: MeasureConfig) -> Any:
    """A runner timing candidates on every server under ``cfg.rpc_key``, one in flight per server."""
    config = rpc_config(cfg)
    return _fleet_runner_cls()(rpc_config=config, evaluator_config=evaluator_config(cfg), max_workers=count_servers(config))


def request_session(config: Any) -> tuple[Any, dict[str, Any]]:
    """What ``TrackerSession.request`` does, keeping the address of the server it was given."""
    from tvm import rpc
    from tvm.rpc import base

    tracker = config.connect_tracker()
    try:
        base.sendjson(tracker._sock, [base.TrackerCode.REQUEST, config.tracker_key, "", config.session_priority])
        code, answer = base.recvjson(tracker._sock)
    finally:
        tracker.close()
    if code != base.TrackerCode.SUCCESS:
        raise RuntimeError(f"tracker refused the request for key {config.tracker_key!r}: {answer}")
    host, port, matchkey = answer
    session = rpc.connect(host, port, matchkey, session_timeout=config.session_timeout_sec)
    where = {"tracker": f"{config.tracker_host}:{config.tracker_port}", "key": config.tracker_key, "server": f"{host}:{port}"}
    return session, where | server_fingerprint(session)


def server_fingerprint(session: Any) -> dict[str, Any]:
    """The server's LLVM CPU name and thread count; a runtime-only server may lack the LLVM query."""
    out: dict[str, Any] = {}
    for field, name in (("llvm_cpu", "target.llvm_get_system_cpu"), ("threads", "runtime.NumThreads")):
        try:
            value = session.get_function(name)()
        except (AttributeError, RuntimeError, ValueError):
            continue
        out[field] = value if isinstance(value, int) else str(value)
    return out


def measure_on_server(config: Any, evaluator: Any, alloc_repeat: int, artifact_path: str, device_type: str, args_info: tuple[Any, ...]) -> Any:
    """Runs in a runner worker process: MetaSchedule's RPC measurement, plus where it happened."""
    from tvm.s_tir.meta_schedule.runner import rpc_runner

    where: dict[str, Any] = {}

    def create_session(cfg: Any) -> Any:
        session, info = request_session(cfg)
        where.update(info)
        return session

    costs = rpc_runner._worker_func(create_session, None, None, None, None, config, evaluator, alloc_repeat, artifact_path, device_type, args_info)
    return costs, where


@functools.cache
def _fleet_future_cls() -> Any:
    """Define the future class on first use (TVM's ``derived_object`` needs TVM imported)."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.runner import RunnerResult
    from tvm.s_tir.meta_schedule.runner.runner import PyRunnerFuture

    @derived_object
    class FleetFuture(PyRunnerFuture):
        """A pending measurement; ``result()`` files the server that timed it under its artifact path."""

        def __init__(self, future: Any, timeout_sec: float, artifact_path: str, measured_on: dict[str, dict[str, Any]]) -> None:
            super().__init__()
            self.future, self.timeout_sec = future, timeout_sec
            self.artifact_path, self.measured_on = artifact_path, measured_on

        def done(self) -> bool:
            return self.future.done()

        def result(self) -> Any:
            try:
                costs, self.measured_on[self.artifact_path] = self.future.result()
            except TimeoutError:
                return RunnerResult(None, error_msg=f"RPC measurement timed out after {self.timeout_sec} s")
            except Exception as e:  # the worker's exception, re-raised here: a failed candidate, not a failed search
                return RunnerResult(None, error_msg=f"RPC measurement failed: {e}")
            return RunnerResult(costs, None)

    return FleetFuture


@functools.cache
def _fleet_runner_cls() -> Any:
    """Define the runner class on first use (TVM's ``derived_object`` needs TVM imported)."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.runner.rpc_runner import RPCRunner

    fleet_future = _fleet_future_cls()

    @derived_object
    class FleetRunner(RPCRunner._cls):
        """``RPCRunner`` that notes which server timed each artifact (``measured_on``; pop what you read)."""

        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.measured_on: dict[str, dict[str, Any]] = {}

        def run(self, runner_inputs: list[Any]) -> list[Any]:
            return [self._submit(ri) for ri in runner_inputs]

        def _submit(self, ri: Any) -> Any:
            """One candidate to the worker pool; its future reports into ``measured_on``."""
            path, args_info = str(ri.artifact_path), tuple(a.as_json() for a in ri.args_info)
            future = self.pool.submit(measure_on_server, self.rpc_config, self.evaluator_config, self.alloc_repeat, path, str(ri.device_type), args_info)
            return fleet_future(future, self.rpc_config.session_timeout_sec, path, self.measured_on)

    return FleetRunner
