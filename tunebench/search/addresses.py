"""Where a network address leads: this machine, a private network, or anyone on the internet.

A TVM RPC server runs whatever module a client sends it, and a tracker hands candidates to whoever
registered under a key: neither authenticates anyone. So the fleet binds loopback unless told
otherwise (``fleet``), and ``tune --rpc`` sends candidates only to a tracker on loopback or a
private network (``rpc``). A host name is judged by every address it resolves to, so that a typo
that resolves to a stranger's machine is caught.

Private here means the ranges one's own organisation assigns: RFC 1918 (10/8, 172.16/12,
192.168/16) and IPv6 unique local addresses (fc00::/7). Not private: carrier-grade NAT space
(100.64/10, RFC 6598), which a carrier shares among its customers, and link-local addresses
(169.254/16, fe80::/10), which anyone on the same link reaches (169.254.169.254 is a cloud
provider's metadata service).
"""

from __future__ import annotations

import ipaddress
import socket

from ..errors import TunebenchError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

LOOPBACK = "127.0.0.1"
PRIVATE_NETWORKS = tuple(ipaddress.ip_network(n) for n in ("127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "::1/128", "fc00::/7"))


def resolve(host: str) -> list[Address]:
    """Every address ``host`` names (an IP literal names itself); IPv4-mapped IPv6 as the IPv4 it maps."""
    try:
        found = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as e:
            raise TunebenchError(f"cannot resolve host {host!r} ({e})") from None
        found = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
    unmapped = [a.ipv4_mapped if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped else a for a in found]
    return list(dict.fromkeys(unmapped))


def is_loopback(host: str) -> bool:
    """True when every address of ``host`` is this machine's loopback (0.0.0.0, "all interfaces", is not)."""
    return all(a.is_loopback for a in resolve(host))


def public_addresses(host: str) -> list[Address]:
    """The addresses of ``host`` outside loopback and the private ranges (``PRIVATE_NETWORKS``)."""
    return [a for a in resolve(host) if not any(a in net for net in PRIVATE_NETWORKS)]
