"""What a bundle carries beside the database and Redis: PIXSIM_HOME, schema revisions, and
whether the database dump holds one of the host's secrets.

- ``PIXSIM_HOME`` (media, uploads, exports, cache) travels as one tar member whose names are
  relative to the home, whatever runtime made it, so a Docker host's bundle restores on the
  native runtime and back. It is untrusted on the way in: every member is checked (no
  absolute path, no ``..``, no link leaving the home, no device) before anything is written.
- Schema revisions are read the way alembic records them: one ``alembic_version*`` table
  per migration chain (PixSim7's five chains; the reference backend's two), column
  ``version_num``. Restore compares them with the revisions the target backend's code
  knows, read from its migrations without running anything.
- PixSim7 logs ``REDIS_URL`` with its password into its database (``log_entries``), so a
  dump can hold a secret even when the bundle leaves ``.env`` out.
"""

from __future__ import annotations

import configparser
import os
import re
import shutil
import stat
import tarfile
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from pixsim_host.errors import HostError

if TYPE_CHECKING:
    from pixsim_host.config import HostConfig
    from pixsim_host.hostdir import HostDir

HOME_MEMBER = "home.tar"

# ---- PIXSIM_HOME as a tar -----------------------------------------------------------------


def _inside(name: str, link: str) -> bool:
    """Whether a symlink at ``name`` pointing at ``link`` stays inside the archive's root."""
    if link.startswith("/"):
        return False
    depth = len(PurePosixPath(name).parts) - 1
    for part in PurePosixPath(link).parts:
        depth += -1 if part == ".." else 0 if part == "." else 1
        if depth < 0:
            return False
    return True


def _member_problem(member: tarfile.TarInfo) -> str | None:
    name = member.name
    parts = PurePosixPath(name).parts
    if not name or name.startswith("/") or "\\" in name or ".." in parts or (parts and ":" in parts[0]):
        return f"a member outside PIXSIM_HOME ({name!r})"
    if member.issym():
        return None if _inside(name, member.linkname) else \
            f"a link leaving PIXSIM_HOME ({name} -> {member.linkname})"
    if member.islnk():
        return f"a hard link ({name})"
    if not (member.isfile() or member.isdir()):
        return f"a device or special file ({name})"
    return None


def write_home_archive(root: Path, target: Path) -> list[str]:
    """Tar ``root`` into ``target`` (names relative to it); the links it left out."""
    skipped: list[str] = []
    with tarfile.open(target, "w", format=tarfile.PAX_FORMAT) as archive:
        if not root.is_dir():
            return skipped
        for directory, dirs, files in os.walk(root):
            dirs.sort()
            for entry in [*dirs, *sorted(files)]:
                path = Path(directory) / entry
                name = path.relative_to(root).as_posix()
                info = archive.gettarinfo(str(path), arcname=name)
                info.uname = info.gname = ""
                if _member_problem(info) is not None:
                    skipped.append(name)  # a link out of the home, a socket: not user data here
                    continue
                if info.isfile():
                    with path.open("rb") as handle:
                        archive.addfile(info, handle)
                else:
                    archive.addfile(info)
    return skipped


def relative_home_archive(source: Any, target: Path, prefix: str) -> list[str]:
    """Rewrite a stream of a tar of ``prefix/...`` (Docker's archive of /data) into ``target``
    with names relative to ``prefix``, member by member, never holding it whole.

    ``source`` is anything with ``read(size)`` (an :class:`IterReader` over Docker's stream).
    """
    skipped: list[str] = []
    with tarfile.open(fileobj=source, mode="r|") as incoming, \
            tarfile.open(target, "w", format=tarfile.PAX_FORMAT) as archive:
        for member in incoming:
            name = member.name.rstrip("/")
            if name == prefix:
                continue
            if not name.startswith(prefix + "/"):
                raise HostError(f"the archive of PIXSIM_HOME holds {member.name!r}, outside {prefix}")
            member.name = name[len(prefix) + 1:]
            member.uname = member.gname = ""
            # A PAX header's path would win over the new name when written back out.
            member.pax_headers = {k: v for k, v in member.pax_headers.items()
                                  if k not in ("path", "uname", "gname")}
            if _member_problem(member) is not None:
                skipped.append(member.name)
                continue
            archive.addfile(member, incoming.extractfile(member) if member.isfile() else None)
    return skipped


def check_home_archive(path: Path) -> int:
    """Refuse a home archive with anything that could land outside the home; its file count."""
    count = 0
    try:
        with tarfile.open(path, mode="r|") as archive:
            for member in archive:
                problem = _member_problem(member)
                if problem is not None:
                    raise HostError(f"the bundle's {HOME_MEMBER} has {problem}; refused")
                count += member.isfile()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise HostError(f"the bundle's {HOME_MEMBER} is not a readable tar ({exc}); use another "
                        "copy of the backup") from None
    return count


def extract_home_archive(path: Path, root: Path) -> None:
    """Extract a checked home archive into ``root`` (made empty first)."""
    check_home_archive(path)
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    links: list[tuple[Path, str]] = []
    with tarfile.open(path, mode="r|") as archive:
        for member in archive:
            target = root / member.name
            if member.isdir():
                target.mkdir(parents=True, exist_ok=True)
                # Private whatever the bundle says: what a host writes is its owner's alone.
                target.chmod(0o700)
            elif member.issym():
                links.append((target, member.linkname))  # made last: nothing is written through one
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                source = archive.extractfile(member)
                assert source is not None
                with target.open("xb") as handle:
                    shutil.copyfileobj(source, handle)
                target.chmod(0o600 | (stat.S_IMODE(member.mode) & 0o100))
    for target, link in links:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.symlink_to(link)


class IterReader:
    """A read-only file over an iterator of byte chunks (Docker's archive stream)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buffer = b""

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self._buffer) < size:
            chunk = next(self._chunks, None)
            if chunk is None:
                break
            self._buffer += chunk
        if size < 0:
            size = len(self._buffer)
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data


# ---- schema revisions ------------------------------------------------------------------------

# Every alembic-style version table, in any schema: "schema|table" lines. (Their contents
# come from a second statement built from these names: a single statement would need
# query_to_xml, and not every PostgreSQL build has libxml.)
VERSION_TABLES_SQL = (
    "SELECT table_schema || '|' || table_name FROM information_schema.tables "
    "WHERE table_name ~ '^alembic_version(_[a-z0-9_]+)?$' AND table_type = 'BASE TABLE' "
    "ORDER BY table_name, table_schema;"
)
_SQL_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def revisions_sql(tables_output: str) -> str | None:
    """The statement that reads every version table ``VERSION_TABLES_SQL`` listed, as
    "table|rev1,rev2" lines; None when there is none. Only plain lower-case names are
    used (nothing a database could smuggle into the statement)."""
    parts = []
    for line in tables_output.splitlines():
        schema, sep, table = line.strip().partition("|")
        if sep and _SQL_NAME.match(schema) and re.fullmatch(r"alembic_version(_[a-z0-9_]+)?", table):
            parts.append(f"SELECT '{table}|' || coalesce(string_agg(version_num::text, ',' "
                         f"ORDER BY version_num), '') FROM {schema}.{table}")
    return " UNION ALL ".join(parts) + ";" if parts else None


def read_schema_revisions(run_sql: Callable[[str], str]) -> dict[str, list[str]]:
    """{version table: [revisions]}, through ``run_sql`` (psql -At in the host's database)."""
    statement = revisions_sql(run_sql(VERSION_TABLES_SQL))
    return parse_revisions(run_sql(statement)) if statement else {}


def parse_revisions(output: str) -> dict[str, list[str]]:
    """``psql -At`` output of SCHEMA_REVISIONS_SQL -> {version table: [revisions]}."""
    found: dict[str, list[str]] = {}
    for line in output.splitlines():
        table, sep, revisions = line.strip().partition("|")
        if sep and re.fullmatch(r"alembic_version(_[a-z0-9_]+)?", table):
            found[table] = sorted(r for r in revisions.split(",") if r)
    return found


_REVISION = re.compile(r"""^revision\s*(?::[^=]+)?=\s*["']([^"']+)["']""", re.MULTILINE)
_VERSION_TABLE = re.compile(r"""^VERSION_TABLE\s*(?::[^=]+)?=\s*["']([^"']+)["']""", re.MULTILINE)


def alembic_revisions(checkout: Path) -> dict[str, set[str]]:
    """Every revision each alembic chain of a checkout defines, by version table.

    Read from ``alembic*.ini`` (``script_location``) and the chain's ``env.py``
    (``VERSION_TABLE``, PixSim7's way of keeping chains apart) and ``versions/*.py``
    (``revision = "..."``), as text: nothing of the checkout runs.
    """
    chains: dict[str, set[str]] = {}
    for ini in sorted(checkout.glob("alembic*.ini")):
        parser = configparser.ConfigParser(interpolation=None)
        try:
            parser.read(ini, encoding="utf-8")
            location = parser.get("alembic", "script_location", fallback="")
        except (configparser.Error, UnicodeDecodeError, OSError):
            continue
        if not location:
            continue
        scripts = checkout / location
        table = parser.get("alembic", "version_table", fallback="alembic_version")
        env = scripts / "env.py"
        try:
            found = _VERSION_TABLE.search(env.read_text(encoding="utf-8")) if env.is_file() else None
        except (OSError, UnicodeDecodeError):
            found = None
        table = found.group(1) if found else table
        revisions = chains.setdefault(table, set())
        for script in sorted((scripts / "versions").glob("*.py")):
            try:
                match = _REVISION.search(script.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError):
                continue
            if match:
                revisions.add(match.group(1))
    return {table: revisions for table, revisions in chains.items() if revisions}


def reference_revisions() -> dict[str, set[str]]:
    """The reference backend's chains: ``migrations/<chain>/<revision>.sql`` in its package."""
    from importlib import resources

    root = Path(str(resources.files("pixsim_reference_backend"))) / "migrations"
    chains: dict[str, set[str]] = {}
    if root.is_dir():
        for chain in sorted(p for p in root.iterdir() if p.is_dir()):
            table = "alembic_version" if chain.name == "main" else f"alembic_version_{chain.name}"
            chains[table] = {p.stem for p in chain.glob("*.sql")}
    return chains


def known_revisions(host: HostDir, config: HostConfig) -> tuple[dict[str, set[str]] | None, str]:
    """The schema revisions the target host's backend code knows, and where that was read.

    None when it cannot be known (an image pixsim-host did not build, with no checkout).
    """
    from pixsim_host.plugins import checkout_dir, reference_backend_in_use

    checkout = checkout_dir(host, config)
    if checkout is not None and any(checkout.glob("alembic*.ini")):
        return alembic_revisions(checkout), f"the migrations of the checkout {checkout}"
    if reference_backend_in_use(host, config):
        return reference_revisions(), "the reference backend's migrations"
    return None, ""


def schema_problem(recorded: Any, known: dict[str, set[str]] | None, where: str) -> str | None:
    """Why a bundle's schema is newer than the target backend handles, or None.

    A revision is too new when the target's migrations do not define it: alembic cannot
    step from a revision it does not know (upstream: "Can't locate revision"). A chain the
    target has no migrations for at all is left alone: nothing of the target reads it.
    """
    if not isinstance(recorded, dict) or known is None:
        return None
    for table, revisions in sorted(recorded.items()):
        if table not in known or not isinstance(revisions, list):
            continue
        unknown = sorted(str(r) for r in revisions if str(r) not in known[table])
        if unknown:
            return (f"the bundle's database is at revision {', '.join(unknown)} of chain {table}, "
                    f"which {where} do not define: it was made by a newer backend than this host "
                    "runs")
    return None


# ---- secrets in the database dump --------------------------------------------------------------


def secrets_in_file(path: Path, secrets: dict[str, str]) -> list[str]:
    """The names of ``secrets`` whose value (or its URL-encoded form) occurs in ``path``.

    Streamed in blocks that overlap by the longest needle, so a value split across two
    blocks is still found. Values shorter than 8 characters are not searched (they would
    match by chance; pixsim-host's own secrets are far longer).
    """
    from urllib.parse import quote

    needles: dict[bytes, str] = {}
    for name, value in secrets.items():
        if len(value) >= 8:
            for form in {value, quote(value, safe="")}:
                needles[form.encode()] = name
    if not needles:
        return []
    overlap = max(len(n) for n in needles) - 1
    found: set[str] = set()
    tail = b""
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            window = tail + block
            for needle, name in needles.items():
                if name not in found and needle in window:
                    found.add(name)
            tail = window[-overlap:] if overlap else b""
    return sorted(found)
