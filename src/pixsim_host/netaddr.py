"""This machine's own network addresses, found without sending a single packet.

Used to tell a friend-hosting player which URLs their friends can use. On Linux the
addresses come from the kernel (an ioctl per interface for IPv4, /proc for IPv6); elsewhere
from ``ip -o addr`` or ``ifconfig`` output; only when none of those is available from
resolving the machine's own hostname. No UDP "connect to a public address" trick.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# Interfaces of container engines and hypervisors: their addresses exist only on this
# machine, so a friend can never use them.
_VIRTUAL_PREFIXES = ("docker", "br-", "veth", "virbr", "vnet", "cni", "flannel", "cali",
                     "vxlan", "podman", "lxcbr", "lxdbr", "kube", "weave", "tun-docker")
_SIOCGIFADDR = 0x8915
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class LocalAddress:
    address: Address
    interface: str | None  # None when the source does not say


def _linux_ipv4() -> list[LocalAddress]:
    import fcntl

    found = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:  # never sends: ioctl only
        for _, name in socket.if_nameindex():
            request = struct.pack("256s", name.encode()[:15])
            try:
                answer = fcntl.ioctl(sock.fileno(), _SIOCGIFADDR, request)
            except OSError:
                continue  # no IPv4 address on this interface
            found.append(LocalAddress(ipaddress.IPv4Address(answer[20:24]), name))
    return found


def _linux_ipv6() -> list[LocalAddress]:
    found: list[LocalAddress] = []
    try:
        lines = Path("/proc/net/if_inet6").read_text(encoding="ascii").splitlines()
    except OSError:
        return found
    for line in lines:
        parts = line.split()
        if len(parts) >= 6 and len(parts[0]) == 32:
            with contextlib.suppress(ValueError):
                found.append(LocalAddress(ipaddress.IPv6Address(bytes.fromhex(parts[0])), parts[5]))
    return found


_IP_LINE = re.compile(r"^\d+:\s+(\S+?)(?:@\S+)?\s+inet6?\s+([0-9a-fA-F.:]+)/\d+")
_IFCONFIG_IFACE = re.compile(r"^([A-Za-z0-9_.@-]+?):?\s")
_IFCONFIG_ADDR = re.compile(r"\binet6?\s+(?:addr:)?([0-9a-fA-F.:]+)")


def parse_ip_addr(text: str) -> list[LocalAddress]:
    """Addresses in ``ip -o addr show`` output."""
    found = []
    for line in text.splitlines():
        match = _IP_LINE.match(line.strip())
        if match:
            with contextlib.suppress(ValueError):
                found.append(LocalAddress(ipaddress.ip_address(match.group(2)), match.group(1)))
    return found


def parse_ifconfig(text: str) -> list[LocalAddress]:
    """Addresses in BSD/macOS or net-tools ``ifconfig`` output."""
    found = []
    interface: str | None = None
    for line in text.splitlines():
        if line and not line[0].isspace():
            match = _IFCONFIG_IFACE.match(line)
            interface = match.group(1) if match else None
        for match in _IFCONFIG_ADDR.finditer(line):
            with contextlib.suppress(ValueError):
                found.append(LocalAddress(ipaddress.ip_address(match.group(1).split("%")[0]),
                                          interface))
    return found


def _command_output(argv: list[str]) -> str | None:
    if shutil.which(argv[0]) is None:
        return None
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=2.0,
                              stdin=subprocess.DEVNULL, env={**os.environ, "LC_ALL": "C"})
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


def _from_hostname() -> list[LocalAddress]:
    found = []
    with contextlib.suppress(OSError, UnicodeError):
        for info in socket.getaddrinfo(socket.gethostname(), None, type=socket.SOCK_STREAM):
            with contextlib.suppress(ValueError):
                found.append(LocalAddress(ipaddress.ip_address(str(info[4][0]).split("%")[0]), None))
    return found


def local_addresses() -> list[LocalAddress]:
    """Every address of this machine's interfaces (loopback included), best source first."""
    found: list[LocalAddress] = []
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, ImportError):
            found = _linux_ipv4() + _linux_ipv6()
    if not found:
        text = _command_output(["ip", "-o", "addr", "show"])
        found = parse_ip_addr(text) if text else []
    if not found:
        text = _command_output(["ifconfig", "-a"])
        found = parse_ifconfig(text) if text else []
    if not found:
        found = _from_hostname()
    return found


def is_virtual_interface(name: str | None) -> bool:
    return name is not None and name.startswith(_VIRTUAL_PREFIXES)


_LAN = tuple(ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16"))


def _rank(address: Address) -> int:
    if address.version == 4:
        if any(address in network for network in _LAN):
            return 0  # LAN
        if address in ipaddress.IPv4Network("100.64.0.0/10"):
            return 1  # carrier-grade NAT range, used by VPNs such as Tailscale
        return 2
    return 3 if address in ipaddress.IPv6Network("fc00::/7") else 4


def reachable_addresses(bind: str, candidates: list[LocalAddress] | None = None) -> list[str]:
    """The addresses other machines can use to reach a service bound to ``bind``.

    Loopback, link-local and container-bridge addresses are left out; an address bound
    explicitly is returned as it is; ``0.0.0.0`` means every IPv4 address, ``::`` every one.
    """
    bound = ipaddress.ip_address(bind)
    if bound.is_loopback:
        return []
    if not bound.is_unspecified:
        return [str(bound)]
    usable: list[Address] = []
    for item in local_addresses() if candidates is None else candidates:
        address = item.address
        if bound.version == 4 and address.version != 4:
            continue
        if (address.is_loopback or address.is_link_local or address.is_multicast
                or address.is_unspecified or is_virtual_interface(item.interface)):
            continue
        if address not in usable:
            usable.append(address)
    usable.sort(key=lambda a: (_rank(a), a.version, int(a)))
    return [str(a) for a in usable]


def url_host(address: str) -> str:
    """``address`` as the host part of a URL (IPv6 in brackets)."""
    return f"[{address}]" if ":" in address else address
