"""What bundles carry beside the database: PIXSIM_HOME as a checked tar, schema revisions
compared with the target's migrations, and the scan of a database dump for the host's secrets."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from urllib.parse import quote

import pytest

from pixsim_host.bundle_data import (
    VERSION_TABLES_SQL,
    IterReader,
    alembic_revisions,
    check_home_archive,
    extract_home_archive,
    parse_revisions,
    read_schema_revisions,
    reference_revisions,
    relative_home_archive,
    revisions_sql,
    schema_problem,
    secrets_in_file,
    write_home_archive,
)
from pixsim_host.errors import HostError

SECRETS = {"POSTGRES_PASSWORD": "pg-Secret_0123456789abcdef",
           "REDIS_PASSWORD": "redis_Secret-9876543210zyxw",
           "SECRET_KEY": "jwt.Key/with+url%chars=0123456789"}


# ---- the secret scan -------------------------------------------------------------------------


def dump_with(tmp_path: Path, text: bytes, size: int = 3 << 20, at: int | None = None) -> Path:
    """A fake dump of ``size`` bytes with ``text`` written at ``at`` (default: the middle)."""
    data = bytearray(b"x" * size)
    where = size // 2 if at is None else at
    data[where:where + len(text)] = text
    path = tmp_path / "database.dump"
    path.write_bytes(bytes(data))
    return path


def test_a_logged_redis_url_is_found_and_named(tmp_path: Path) -> None:
    # What PixSim7 writes into log_entries at start-up.
    line = f"redis_url=redis://:{SECRETS['REDIS_PASSWORD']}@127.0.0.1:6379/0".encode()
    assert secrets_in_file(dump_with(tmp_path, line), SECRETS) == ["REDIS_PASSWORD"]


def test_a_clean_dump_holds_no_secret(tmp_path: Path) -> None:
    assert secrets_in_file(dump_with(tmp_path, b"redis://:***@127.0.0.1:6379/0"), SECRETS) == []


@pytest.mark.parametrize("offset", [-5, -1, 0, 1, 7])
def test_a_secret_across_two_read_blocks_is_found(tmp_path: Path, offset: int) -> None:
    """The scan reads 1 MiB blocks: a value cut by a block boundary must still be seen."""
    boundary = 1 << 20
    secret = SECRETS["POSTGRES_PASSWORD"].encode()
    path = dump_with(tmp_path, secret, at=boundary - len(secret) // 2 + offset)
    assert secrets_in_file(path, SECRETS) == ["POSTGRES_PASSWORD"]


def test_the_url_encoded_form_is_found(tmp_path: Path) -> None:
    """A value with URL-special characters appears encoded inside a URL."""
    encoded = quote(SECRETS["SECRET_KEY"], safe="").encode()
    assert encoded != SECRETS["SECRET_KEY"].encode()
    assert secrets_in_file(dump_with(tmp_path, b"dsn=x://:" + encoded + b"@h"), SECRETS) == ["SECRET_KEY"]


def test_several_secrets_are_all_named(tmp_path: Path) -> None:
    text = (SECRETS["SECRET_KEY"] + " and " + SECRETS["REDIS_PASSWORD"]).encode()
    assert secrets_in_file(dump_with(tmp_path, text), SECRETS) == ["REDIS_PASSWORD", "SECRET_KEY"]


def test_short_values_are_not_searched(tmp_path: Path) -> None:
    assert secrets_in_file(dump_with(tmp_path, b"abc"), {"SHORT": "abc"}) == []


# ---- PIXSIM_HOME as a tar --------------------------------------------------------------------


def make_home(root: Path) -> dict[str, bytes]:
    files = {"media/a.txt": b"alpha", "media/deep/b.bin": bytes(range(256)) * 300,
             "uploads/empty": b"", "exports/ünïcode name.json": b"{}"}
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    (root / "cache").mkdir()
    (root / "media" / "latest").symlink_to("a.txt")  # inside the home: kept
    (root / "escape").symlink_to("/etc/passwd")  # out of it: left out
    return files


def read_tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


def test_home_round_trip(tmp_path: Path) -> None:
    home, archive, restored = tmp_path / "home", tmp_path / "home.tar", tmp_path / "restored"
    home.mkdir()
    files = make_home(home)
    assert write_home_archive(home, archive) == ["escape"]
    assert check_home_archive(archive) == len(files)
    (restored / "stale").mkdir(parents=True)  # what was there before is replaced
    extract_home_archive(archive, restored)
    assert read_tree(restored) == files
    assert (restored / "cache").is_dir() and not (restored / "stale").exists()
    assert (restored / "media" / "latest").is_symlink()
    assert (restored / "media" / "latest").read_bytes() == b"alpha"
    assert not (restored / "escape").exists()


def test_a_missing_home_is_an_empty_archive(tmp_path: Path) -> None:
    write_home_archive(tmp_path / "absent", tmp_path / "home.tar")
    assert check_home_archive(tmp_path / "home.tar") == 0


def hostile(tmp_path: Path, member: tarfile.TarInfo, data: bytes = b"") -> Path:
    path = tmp_path / "home.tar"
    with tarfile.open(path, "w") as archive:
        ok = tarfile.TarInfo("media/ok.txt")
        ok.size = 2
        archive.addfile(ok, io.BytesIO(b"ok"))
        member.size = len(data) if member.isfile() else 0
        archive.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return path


def entry(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


@pytest.mark.parametrize(("member", "why"), [
    (entry("/etc/cron.d/evil"), "outside PIXSIM_HOME"),
    (entry("../evil"), "outside PIXSIM_HOME"),
    (entry("media/../../evil"), "outside PIXSIM_HOME"),
    (entry("media/up", tarfile.SYMTYPE, "../../etc"), "link leaving"),
    (entry("media/abs", tarfile.SYMTYPE, "/etc/passwd"), "link leaving"),
    (entry("media/hard", tarfile.LNKTYPE, "media/ok.txt"), "hard link"),
    (entry("media/dev", tarfile.CHRTYPE), "device or special"),
    (entry("media/fifo", tarfile.FIFOTYPE), "device or special"),
])
def test_a_hostile_home_archive_is_refused_writing_nothing(tmp_path: Path, member: tarfile.TarInfo,
                                                           why: str) -> None:
    archive = hostile(tmp_path, member, b"evil")
    target = tmp_path / "home"
    target.mkdir()
    (target / "kept").write_text("the previous home")
    with pytest.raises(HostError, match=why):
        extract_home_archive(archive, target)
    assert (target / "kept").read_text() == "the previous home"
    assert not (tmp_path / "evil").exists()


def test_a_truncated_home_archive_is_refused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    make_home(home)
    write_home_archive(home, tmp_path / "home.tar")
    data = (tmp_path / "home.tar").read_bytes()
    (tmp_path / "cut.tar").write_bytes(data[: len(data) // 3])
    with pytest.raises(HostError, match="not a readable tar"):
        check_home_archive(tmp_path / "cut.tar")


def test_dockers_archive_of_data_becomes_relative(tmp_path: Path) -> None:
    """Docker's get_archive of /data yields data/...: the bundle holds names relative to it."""
    home = tmp_path / "data"
    home.mkdir()
    files = make_home(home)
    stream = io.BytesIO()
    with tarfile.open(fileobj=stream, mode="w") as archive:
        archive.add(home, arcname="data")
    raw = stream.getvalue()
    chunks = iter([raw[i:i + 1000] for i in range(0, len(raw), 1000)])
    skipped = relative_home_archive(IterReader(chunks), tmp_path / "home.tar", "data")
    assert skipped == ["escape"]
    extract_home_archive(tmp_path / "home.tar", tmp_path / "restored")
    assert read_tree(tmp_path / "restored") == files


# ---- schema revisions ------------------------------------------------------------------------


def test_psql_output_is_parsed_by_version_table() -> None:
    output = "alembic_version|20260626_0001\nalembic_version_game|game_baseline\n" \
             "alembic_version_logs|\nnot_a_version_table|x\n"
    assert parse_revisions(output) == {"alembic_version": ["20260626_0001"],
                                       "alembic_version_game": ["game_baseline"],
                                       "alembic_version_logs": []}



def test_the_revisions_statement_uses_only_plain_names() -> None:
    tables = "public|alembic_version\ngame|alembic_version_game\n" \
             "public|alembic_version_x; DROP TABLE users\nEvil\"Schema|alembic_version_logs\n"
    statement = revisions_sql(tables)
    assert statement is not None
    assert "FROM public.alembic_version " in statement and "FROM game.alembic_version_game" in statement
    assert "DROP" not in statement and "Evil" not in statement
    assert revisions_sql("") is None
    seen: list[str] = []

    def run(sql: str) -> str:
        seen.append(sql)
        return "public|alembic_version\n" if sql == VERSION_TABLES_SQL else "alembic_version|0002_jobs\n"

    assert read_schema_revisions(run) == {"alembic_version": ["0002_jobs"]}
    assert len(seen) == 2


def write_chain(checkout: Path, ini: str, location: str, table: str | None,
                revisions: list[str]) -> None:
    (checkout / ini).write_text(f"[alembic]\n# an em dash — as upstream has\nscript_location = {location}\n",
                                encoding="utf-8")
    versions = checkout / location / "versions"
    versions.mkdir(parents=True)
    if table:
        (checkout / location / "env.py").write_text(f'VERSION_TABLE = "{table}"\n')
    previous = None
    for n, revision in enumerate(revisions):
        (versions / f"{n:04d}_step.py").write_text(
            f'"""step"""\nrevision = "{revision}"\ndown_revision = {previous!r}\n')
        previous = revision


def test_an_alembic_checkout_is_read_without_running_it(tmp_path: Path) -> None:
    write_chain(tmp_path, "alembic.ini", "app/migrations", None, ["20260101_0001", "20260626_0001"])
    write_chain(tmp_path, "alembic_game.ini", "app/game_migrations", "alembic_version_game",
                ["game_baseline"])
    assert alembic_revisions(tmp_path) == {
        "alembic_version": {"20260101_0001", "20260626_0001"},
        "alembic_version_game": {"game_baseline"},
    }


def test_a_newer_schema_is_refused_with_the_reason() -> None:
    known = {"alembic_version": {"a1", "a2"}, "alembic_version_game": {"g1"}}
    assert schema_problem({"alembic_version": ["a2"], "alembic_version_game": ["g1"]}, known, "x") is None
    problem = schema_problem({"alembic_version": ["a3"]}, known, "the checkout's migrations")
    assert problem is not None
    assert "revision a3 of chain alembic_version" in problem and "the checkout's migrations" in problem
    assert "newer backend" in problem


def test_chains_the_target_does_not_have_and_unknown_targets_are_not_refused() -> None:
    assert schema_problem({"alembic_version_blocks": ["b9"]}, {"alembic_version": {"a1"}}, "x") is None
    assert schema_problem({"alembic_version": ["a9"]}, None, "x") is None


def test_the_reference_backend_revisions_are_its_migration_files() -> None:
    chains = reference_revisions()
    assert chains, "the reference backend ships migrations"
    assert all(table.startswith("alembic_version") and revisions for table, revisions in chains.items())
    assert "alembic_version" in chains
