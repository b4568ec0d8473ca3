"""Bounded reading of every file and reply pixsim-host parses.

A hand-edited, damaged or hostile file (a deeply nested YAML config, a bundle manifest, a
registry that is not UTF-8, a server's reply) must end in a one-line HostError that names
what was read and what to do, never in a RecursionError or a codec traceback. So every
read is capped in size, decoded strictly as UTF-8, and YAML and JSON are checked for
nesting depth *before* the recursive parsers see them (PyYAML's composer and the json
module both recurse once per level).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pixsim_host.errors import HostError

MAX_FILE_BYTES = 4 * 1024 * 1024  # every file pixsim-host parses is a few kilobytes
MAX_DEPTH = 64  # the deepest real structure (a compose file) nests about 6 levels
MAX_ALIASES = 100  # YAML aliases: a config needs none; many are an expansion bomb

# JSON strings may contain brackets: remove them before counting nesting.
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_JSON_BRACKET = re.compile(rb"[\[\]{}]")


def read_bytes(path: Path, what: str, fix: str, *, limit: int = MAX_FILE_BYTES,
               missing_ok: bool = False) -> bytes | None:
    """At most ``limit`` bytes of ``path``; None when it is missing and ``missing_ok``."""
    try:
        with path.open("rb") as handle:
            data = handle.read(limit + 1)
    except FileNotFoundError:
        if missing_ok:
            return None
        raise HostError(f"{what} {path} does not exist; {fix}") from None
    except IsADirectoryError:
        raise HostError(f"cannot read {what} {path}: it is a directory, not a file; {fix}") from None
    except OSError as exc:
        raise HostError(f"cannot read {what} {path} ({exc.strerror or exc}); "
                        "check the file and its permissions") from None
    if len(data) > limit:
        raise HostError(f"{what} {path} is larger than {limit} bytes, far more than it should "
                        f"ever be; {fix}")
    return data


def decode(data: bytes, what: str, fix: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        # The position only: the bytes themselves may be a fragment of a secret.
        raise HostError(f"{what} is not UTF-8 text (byte {exc.start}); {fix}") from None


def read_text(path: Path, what: str, fix: str, *, limit: int = MAX_FILE_BYTES,
              missing_ok: bool = False) -> str | None:
    """``path`` as UTF-8 text of at most ``limit`` bytes (None: missing and ``missing_ok``)."""
    data = read_bytes(path, what, fix, limit=limit, missing_ok=missing_ok)
    if data is None:
        return None
    return decode(data, f"{what} {path}", fix)


def json_depth(data: bytes | str) -> int:
    """How deeply the JSON text ``data`` nests (without parsing it)."""
    raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
    depth = deepest = 0
    for match in _JSON_BRACKET.finditer(_JSON_STRING.sub(b"", raw)):
        if match.group() in (b"[", b"{"):
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def parse_json(data: bytes | str, what: str, fix: str, *, max_depth: int = MAX_DEPTH) -> Any:
    """The JSON value in ``data``, or a one-line HostError (``what`` names the source)."""
    import json

    if json_depth(data) > max_depth:
        raise HostError(f"{what} nests deeper than {max_depth} levels, which no real one does; {fix}")
    try:
        return json.loads(data)
    except UnicodeDecodeError as exc:
        raise HostError(f"{what} is not UTF-8 text (byte {exc.start}); {fix}") from None
    except (ValueError, RecursionError) as exc:
        # ValueError: bad JSON, or an integer of more digits than Python converts.
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise HostError(f"{what} is not valid JSON ({reason}); {fix}") from None


def load_json(path: Path, what: str, fix: str, *, limit: int = MAX_FILE_BYTES,
              max_depth: int = MAX_DEPTH, missing_ok: bool = False) -> Any:
    """The JSON value in the file ``path`` (None when missing and ``missing_ok``)."""
    data = read_bytes(path, what, fix, limit=limit, missing_ok=missing_ok)
    if data is None:
        return None
    return parse_json(decode(data, f"{what} {path}", fix), f"{what} {path}", fix, max_depth=max_depth)


def check_yaml_shape(text: str, what: str, fix: str, *, max_depth: int = MAX_DEPTH,
                     max_aliases: int = MAX_ALIASES) -> None:
    """Refuse YAML that nests too deeply, uses too many aliases or refers to itself.

    Runs on the event stream, which PyYAML produces without recursion; a syntax error
    propagates as the yaml.YAMLError the caller already reports.
    """
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        _check_events(yaml.parse(text, Loader=loader), what, fix, max_depth, max_aliases)
    except yaml.YAMLError as exc:
        # libyaml's scanner reads ahead and has a nesting limit of its own (1000).
        if "maximum nesting depth" in str(exc):
            raise HostError(f"{what} nests deeper than {max_depth} levels, which no real one "
                            f"does; {fix}") from None
        raise


def _check_events(events: Any, what: str, fix: str, max_depth: int, max_aliases: int) -> None:
    import yaml

    depth = aliases = 0
    open_anchors: list[str | None] = []
    for event in events:
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > max_depth:
                raise HostError(f"{what} nests deeper than {max_depth} levels, which no real one "
                                f"does; {fix}")
            open_anchors.append(event.anchor)
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
            open_anchors.pop()
        elif isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > max_aliases:
                raise HostError(f"{what} uses more than {max_aliases} YAML aliases; {fix}")
            if event.anchor in open_anchors:
                raise HostError(f"{what} has a YAML alias that contains itself (*{event.anchor}); {fix}")


def parse_yaml(text: str, what: str, fix: str, *, max_depth: int = MAX_DEPTH) -> Any:
    """The YAML document in ``text``; a syntax error propagates as yaml.YAMLError (callers
    report where it is), every other failure is a one-line HostError."""
    import yaml

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        try:
            check_yaml_shape(text, what, fix, max_depth=max_depth)
            return yaml.load(text, Loader=loader)  # noqa: S506 - a safe loader
        except yaml.YAMLError:
            # Reported with the words and position of PyYAML's own parser, which callers
            # (and their users) know; libyaml words the same mistakes differently.
            return yaml.load(text, Loader=yaml.SafeLoader)  # noqa: S506 - a safe loader
    except yaml.YAMLError:
        raise
    except (ValueError, TypeError, OverflowError, RecursionError) as exc:
        # The safe constructors raise these for values YAML accepts but Python cannot
        # build: a date like 2026-13-45, an integer of more than 4300 digits.
        reason = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        raise HostError(f"{what} holds a value that cannot be read ({reason}); {fix}") from None


def yaml_error_line(exc: Exception) -> str:
    """A yaml.YAMLError as one line: the problem and where."""
    import yaml

    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        return f"{exc.problem or exc.context or 'invalid YAML'}{where}"
    return " ".join(str(exc).split())[:200]


def load_yaml(path: Path, what: str, fix: str, *, limit: int = MAX_FILE_BYTES,
              max_depth: int = MAX_DEPTH, missing_ok: bool = False) -> Any:
    """The YAML document in the file ``path``, every failure a one-line HostError."""
    import yaml

    text = read_text(path, what, fix, limit=limit, missing_ok=missing_ok)
    if text is None:
        return None
    try:
        return parse_yaml(text, f"{what} {path}", fix, max_depth=max_depth)
    except yaml.YAMLError as exc:
        raise HostError(f"{what} {path} is not valid YAML ({yaml_error_line(exc)}); {fix}") from None
