"""Safe defaults for a fleet: a tracker or server asked to listen beyond loopback warns before it binds,
and ``tune --rpc`` sends candidates only to a tracker on loopback or a private network.

Nothing here listens beyond loopback: the exposed-address cases ask for 0.0.0.0 on a port this test
already holds, so the real bind fails after the warning (the loopback defaults are checked on a
running fleet in test_rpc.py)."""

from __future__ import annotations

import socket
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from tunebench.errors import TunebenchError
from tunebench.search.rpc import check_tracker, rpc_config
from tunebench.search.settings import MeasureConfig

ROOT = Path(__file__).resolve().parents[1]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tunebench.cli", *args], capture_output=True, text=True, cwd=ROOT, timeout=300)


@pytest.fixture
def held_port() -> Iterator[int]:
    """A port this test listens on at 127.0.0.1: binding it on 0.0.0.0 as well fails with EADDRINUSE."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@pytest.mark.parametrize(
    "addr",
    ["127.0.0.1:9190", "localhost:9190", "[::1]:9190", "10.0.0.5:9190", "172.31.255.254:9190", "192.168.1.20:9190", "[fd12:3456::7]:9190"],
)
def test_loopback_and_private_trackers_are_accepted(addr: str) -> None:
    assert check_tracker(addr)[1] == 9190


@pytest.mark.parametrize(
    "addr",
    ["8.8.8.8:9190", "172.32.0.1:9190", "100.64.0.1:9190", "169.254.169.254:9190", "[2001:4860:4860::8888]:9190", "[::ffff:8.8.8.8]:9190"],
)
def test_public_trackers_are_refused_unless_allowed(addr: str) -> None:
    with pytest.raises(TunebenchError, match=r"neither loopback nor a private network .*--rpc-allow-public"):
        check_tracker(addr)
    with pytest.raises(TunebenchError, match="neither loopback nor a private network"):  # the Python API path too
        rpc_config(MeasureConfig(rpc=addr, rpc_key="k"))
    assert check_tracker(addr, allow_public=True)[1] == 9190


def test_a_host_name_is_judged_by_every_address_it_resolves_to(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = {"fleet.lan": ["10.0.0.7"], "fleet.typo": ["10.0.0.7", "203.0.113.9"]}

    def getaddrinfo(host: str, port: object, *args: object, **kwargs: object) -> list[tuple[object, ...]]:
        if host not in answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, 0)) for ip in answers[host]]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    assert check_tracker("fleet.lan:9190") == ("fleet.lan", 9190)
    with pytest.raises(TunebenchError, match=r"fleet\.typo resolves to 203\.0\.113\.9, which is neither loopback"):
        check_tracker("fleet.typo:9190")
    with pytest.raises(TunebenchError, match=r"cannot resolve host 'nowhere\.invalid'"):
        check_tracker("nowhere.invalid:9190")


def test_tune_refuses_a_public_tracker_before_any_work() -> None:
    # The model does not exist: had tune looked at it before the tracker, this would be its error.
    refused = run_cli("tune", "no/such/file.py:f", "--rpc", "8.8.8.8:9190", "--rpc-key", "k", "--trials", "1")
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.startswith("error: --rpc 8.8.8.8:9190: 8.8.8.8 is neither loopback nor a private network"), refused.stderr
    assert refused.stderr.strip().count("\n") == 0 and "Traceback" not in refused.stderr + refused.stdout
    allowed = run_cli("tune", "no/such/file.py:f", "--rpc", "8.8.8.8:9190", "--rpc-key", "k", "--trials", "1", "--rpc-allow-public")
    assert allowed.returncode == 2 and "model file 'no/such/file.py' does not exist" in allowed.stderr, allowed.stderr


def test_fleet_server_on_every_interface_warns_before_it_binds(held_port: int) -> None:
    out = run_cli("fleet", "server", "--tracker", "127.0.0.1:9", "--key", "k", "--host", "0.0.0.0", "--port", str(held_port), "--threads", "1")
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in out.stderr, out.stderr
    assert lines[0].startswith(f"warning: the RPC server on 0.0.0.0:{held_port} runs any code sent to it"), lines[0]
    assert "not a password" in lines[0] and "SSH" in lines[0]
    assert lines[1] == f"error: the RPC server cannot listen on 0.0.0.0:{held_port}: the port is in use", lines[1]


def test_fleet_tracker_warns_for_every_interface_not_for_loopback(held_port: int) -> None:
    from tunebench.search.fleet import ExposedWarning, start_tracker

    with pytest.warns(ExposedWarning, match=rf"tracker on 0.0.0.0:{held_port} lets anyone who reaches it"), pytest.raises(TunebenchError):
        start_tracker("0.0.0.0", held_port)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # loopback must not warn: only the busy port stops it
        with pytest.raises(TunebenchError, match=rf"the RPC tracker cannot listen on 127.0.0.1:{held_port}"):
            start_tracker("127.0.0.1", held_port)


@pytest.mark.parametrize(
    ("host", "loopback"), [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("localhost", True), ("0.0.0.0", False), ("::", False)]
)
def test_only_loopback_counts_as_loopback(host: str, loopback: bool) -> None:
    from tunebench.search.addresses import is_loopback

    assert is_loopback(host) is loopback
