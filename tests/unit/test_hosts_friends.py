"""Friend hosting: the URLs friends can use (this machine's reachable addresses, or the
public URL) and the exact client line, found without sending a packet."""

from __future__ import annotations

import ipaddress
import json
import socket
from pathlib import Path
from typing import Any

import pytest
from unit_helpers import run_cli

IP_ADDR = """\
1: lo    inet 127.0.0.1/8 scope host lo\\       valid_lft forever preferred_lft forever
1: lo    inet6 ::1/128 scope host \\       valid_lft forever preferred_lft forever
2: eth0    inet 81.2.69.142/24 brd 81.2.69.255 scope global eth0\\       valid_lft forever
2: eth0    inet6 fe80::1/64 scope link \\       valid_lft forever preferred_lft forever
3: wlan0    inet 192.168.1.20/24 brd 192.168.1.255 scope global dynamic wlan0\\       valid_lft 86000sec
3: wlan0    inet6 2001:db8::20/64 scope global \\       valid_lft forever preferred_lft forever
4: tailscale0    inet 100.101.102.103/32 scope global tailscale0\\       valid_lft forever
5: docker0    inet 172.17.0.1/16 brd 172.17.255.255 scope global docker0\\       valid_lft forever
6: br-0123abcd    inet 172.18.0.1/16 scope global br-0123abcd\\       valid_lft forever
7: veth1@if6    inet6 fe80::2/64 scope link \\       valid_lft forever preferred_lft forever
8: vpn0    inet6 fd12:3456::1/64 scope global \\       valid_lft forever preferred_lft forever
"""

IFCONFIG = """\
lo0: flags=8049<UP,LOOPBACK,RUNNING,MULTICAST> mtu 16384
\tinet 127.0.0.1 netmask 0xff000000
\tinet6 ::1 prefixlen 128
en0: flags=8863<UP,BROADCAST,SMART,RUNNING,SIMPLEX,MULTICAST> mtu 1500
\tinet6 fe80::1c2b:3%en0 prefixlen 64 secured scopeid 0x4
\tinet 10.0.0.5 netmask 0xffffff00 broadcast 10.0.0.255
bridge100: flags=8863<UP> mtu 1500
\tinet 192.168.64.1 netmask 0xffffff00
"""


def test_ip_addr_output_is_parsed() -> None:
    from pixsim_host.netaddr import parse_ip_addr

    found = {(str(a.address), a.interface) for a in parse_ip_addr(IP_ADDR)}
    assert ("192.168.1.20", "wlan0") in found and ("2001:db8::20", "wlan0") in found
    assert ("fe80::2", "veth1") in found
    assert len(found) == 11


def test_ifconfig_output_is_parsed() -> None:
    from pixsim_host.netaddr import parse_ifconfig

    found = {(str(a.address), a.interface) for a in parse_ifconfig(IFCONFIG)}
    assert found == {("127.0.0.1", "lo0"), ("::1", "lo0"), ("fe80::1c2b:3", "en0"),
                     ("10.0.0.5", "en0"), ("192.168.64.1", "bridge100")}


def test_reachable_addresses_leave_out_what_friends_cannot_use() -> None:
    from pixsim_host.netaddr import parse_ip_addr, reachable_addresses

    candidates = parse_ip_addr(IP_ADDR)
    # LAN first, then the VPN range, then public; no loopback, link-local or container bridge.
    assert reachable_addresses("0.0.0.0", candidates) == ["192.168.1.20", "100.101.102.103", "81.2.69.142"]
    assert reachable_addresses("::", candidates) == [
        "192.168.1.20", "100.101.102.103", "81.2.69.142", "fd12:3456::1", "2001:db8::20"]
    assert reachable_addresses("192.168.1.20", candidates) == ["192.168.1.20"]
    assert reachable_addresses("127.0.0.1", candidates) == []
    assert reachable_addresses("::1", candidates) == []


def test_local_addresses_send_no_packet(monkeypatch: pytest.MonkeyPatch) -> None:
    from pixsim_host import netaddr

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("netaddr tried to send a packet")

    for name in ("connect", "connect_ex", "sendto", "send", "sendall"):
        monkeypatch.setattr(socket.socket, name, refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    found = netaddr.local_addresses()
    assert any(a.address.is_loopback for a in found), found  # it did find this machine's addresses


def test_friend_urls_public_url_first_then_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    from pixsim_host import netaddr
    from pixsim_host.config import new_host_config
    from pixsim_host.hosts import client_line, friend_urls

    monkeypatch.setattr(netaddr, "local_addresses", lambda: netaddr.parse_ip_addr(IP_ADDR))
    config = new_host_config(name="f", model="friend", backend={"bind": "0.0.0.0", "port": 8123})
    assert friend_urls(config) == ["http://192.168.1.20:8123", "http://100.101.102.103:8123",
                                   "http://81.2.69.142:8123"]
    six = new_host_config(name="f", model="friend", backend={"bind": "::", "port": 8123})
    assert "http://[2001:db8::20]:8123" in friend_urls(six)
    public = new_host_config(name="f", model="friend", backend={
        "bind": "127.0.0.1", "port": 8123, "public_url": "https://pixsim.example.org/"})
    assert friend_urls(public) == ["https://pixsim.example.org"]
    alone = new_host_config(name="f", model="friend", backend={"bind": "127.0.0.1", "port": 8123})
    assert friend_urls(alone) == []
    # Behind the TLS proxy only names its certificate holds are given: tls.domain, none else
    # (an https:// URL on a LAN address would not verify).
    unnamed = new_host_config(name="f", model="friend", backend={"bind": "0.0.0.0", "port": 8123},
                              tls={"mode": "internal", "port": 8443})
    assert friend_urls(unnamed) == []
    named = new_host_config(name="f", model="friend", backend={"bind": "0.0.0.0", "port": 8123},
                            tls={"mode": "internal", "port": 8443, "domain": "192.168.1.20"})
    assert friend_urls(named) == ["https://192.168.1.20:8443"]
    assert client_line("http://192.168.1.20:8123") == "VITE_BACKEND_URL=http://192.168.1.20:8123"


def test_info_prints_friend_urls_and_the_client_line(tmp_path: Path) -> None:
    from pixsim_host.netaddr import reachable_addresses

    host = tmp_path / "f"
    made = run_cli("init", str(host), "--yes", "--name", "friends", "--model", "friend", "--port", "18990")
    assert made.returncode == 0, str(made)
    expected = [f"http://{a if ':' not in a else f'[{a}]'}:18990" for a in reachable_addresses("0.0.0.0")]
    data = json.loads(run_cli("info", "--dir", str(host), "--json").stdout)
    assert data["friend_urls"] == expected
    for url in expected:
        assert not ipaddress.ip_address(url.split("//")[1].rsplit(":", 1)[0].strip("[]")).is_loopback
    text = run_cli("info", "--dir", str(host))
    if expected:
        assert data["friend_frontend"] == f"VITE_BACKEND_URL={expected[0]}"
        assert f"VITE_BACKEND_URL={expected[0]}" in text.stdout
        assert all(url in text.stdout for url in expected)

    public = tmp_path / "p"
    run_cli("init", str(public), "--yes", "--name", "public", "--model", "friend", "--port", "18991",
            "--bind", "127.0.0.1", "--public-url", "https://games.example.org")
    data = json.loads(run_cli("info", "--dir", str(public), "--json").stdout)
    assert data["friend_urls"] == ["https://games.example.org"]
    assert data["friend_frontend"] == "VITE_BACKEND_URL=https://games.example.org"

    lonely = tmp_path / "l"
    run_cli("init", str(lonely), "--yes", "--name", "lonely", "--model", "friend", "--port", "18992",
            "--bind", "127.0.0.1")
    result = run_cli("info", "--dir", str(lonely))
    assert "friends cannot reach this host" in result.stderr and "backend.bind 0.0.0.0" in result.stderr
    for key, value in (("backend.bind", "0.0.0.0"), ("tls.mode", "internal"), ("tls.port", "18994")):
        assert run_cli("config", "set", key, value, "--dir", str(lonely)).returncode == 0
    result = run_cli("info", "--dir", str(lonely))
    assert "its certificate names only localhost and 127.0.0.1; set tls.domain" in result.stderr, \
        result.stderr
    assert json.loads(run_cli("info", "--dir", str(lonely), "--json").stdout)["friend_urls"] == []
    selfish = tmp_path / "s"
    run_cli("init", str(selfish), "--yes", "--name", "selfish", "--port", "18993")
    result = run_cli("info", "--dir", str(selfish))
    assert "friends" not in result.output
