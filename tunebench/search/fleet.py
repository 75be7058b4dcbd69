"""Standing up a measuring fleet: TVM's RPC tracker and servers, listening on loopback unless told otherwise.

A TVM RPC server links and runs whatever shared library a client uploads, and nobody is asked who
they are: the key only matches servers to requests, it is not a secret. TVM's own
``tvm.exec.rpc_tracker`` and ``rpc_server`` listen on every interface (0.0.0.0) by default, which on
a machine with a routable address hands the network a shell. These wrappers start the same
``tvm.rpc`` objects on 127.0.0.1; another machine reaches them through SSH port forwarding
(``docs/fleet.md``). Asked for any other address, they warn once, before they bind, saying what
becomes reachable. A server's thread count is the one setting of its own that timings depend on, so
it is set here (``TVM_NUM_THREADS``) rather than left to TVM's default of half the hardware threads.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable
from typing import Any

from ..errors import TunebenchError
from .addresses import LOOPBACK, is_loopback

TRACKER_PORT = 9190
SERVER_PORT = 9090
SAFER = "keep it on 127.0.0.1 and forward the port over SSH (docs/fleet.md)"


class ExposedWarning(UserWarning):
    """A tracker or server was asked to listen where other machines can reach it."""


def start_tracker(host: str = LOOPBACK, port: int = TRACKER_PORT) -> Any:
    """A ``tvm.rpc.tracker.Tracker`` listening on exactly ``host:port`` (its process: ``.proc``)."""
    if not is_loopback(host):
        warnings.warn(
            f"the RPC tracker on {host}:{port} lets anyone who reaches it list your servers and register their own under your keys "
            f"(to receive your candidates and report any timing they like); {SAFER}",
            ExposedWarning,
            stacklevel=2,
        )
    return _listening("RPC tracker", host, port, lambda: _tracker_cls()(host, port=port, port_end=port + 1))


def start_server(tracker: str, key: str, host: str = LOOPBACK, port: int = SERVER_PORT, threads: int | None = None, custom_addr: str | None = None) -> Any:
    """A ``tvm.rpc.Server`` on exactly ``host:port``, registered with ``tracker`` (HOST:PORT) under ``key``.

    ``threads`` (default: physical cores) becomes ``TVM_NUM_THREADS`` of this process, which the
    server's session processes inherit: the server, not the tuning machine, sizes a candidate's
    thread pool. ``custom_addr`` is the address the tracker tells clients to connect to (default:
    the one the tracker sees the server connect from).
    """
    from ..target import physical_cores
    from .rpc import parse_tracker

    tracker_addr = parse_tracker(tracker, "--tracker")
    if not is_loopback(host):
        warnings.warn(
            f"the RPC server on {host}:{port} runs any code sent to it, with no authentication (the key is a label, not a password), "
            f"for anyone who reaches that address; {SAFER}",
            ExposedWarning,
            stacklevel=2,
        )
    os.environ["TVM_NUM_THREADS"] = str(threads or physical_cores())
    from tvm import rpc

    def server() -> Any:
        return rpc.Server(host, port, port + 1, key=key, tracker_addr=tracker_addr, custom_addr=custom_addr)

    return _listening("RPC server", host, port, server)


def _listening(what: str, host: str, port: int, start: Callable[[], Any]) -> Any:
    """``start()``, with a port that is taken or an address that is not this machine's as one line.

    TVM binds in a worker process and re-raises its exception here, the worker's traceback as the message."""
    try:
        return start()
    except ValueError:  # TVM's "cannot bind to any port in [port, port + 1)"
        raise TunebenchError(f"the {what} cannot listen on {host}:{port}: the port is in use") from None
    except OSError as e:  # an address this machine does not have, a privileged port
        raise TunebenchError(f"the {what} cannot listen on {host}:{port} ({str(e).strip().splitlines()[-1]})") from None


@functools.cache
def _tracker_cls() -> Any:
    """TVM's ``Tracker``, able to clean up after a failed bind (TVM's own ``__del__`` then raises: no ``host``)."""
    from tvm.rpc.tracker import Tracker

    class FleetTracker(Tracker):
        def terminate(self) -> None:
            if self.proc and not hasattr(self, "stop_key"):  # never listened: there is only the worker to stop
                self.proc.kill()
                self.proc = None
            super().terminate()

    return FleetTracker
