"""Unit tests that need no server: SCRAM, URL parsing, settings, plugin rules."""

from __future__ import annotations

import base64
import textwrap
from pathlib import Path

import pytest
import rb_support  # noqa: F401  (puts src/ on sys.path)

from pixsim_reference_backend.pg import (
    PgAuthError,
    PgError,
    ScramClient,
    mask_url,
    parse_pg_url,
    saslprep,
)
from pixsim_reference_backend.plugins import (
    PluginDependencyError,
    load_plugins,
    valid_folder_name,
)
from pixsim_reference_backend.redis_client import _encode, parse_redis_url
from pixsim_reference_backend.schema import MigrationFailed, MigrationsDirError, read_chains
from pixsim_reference_backend.settings import (
    PACKAGE_MIGRATIONS_DIR,
    PACKAGE_PLUGINS_DIR,
    SettingsError,
    dotenv_additions,
    load_settings,
    parse_dotenv,
)

# --- SCRAM-SHA-256: the exchange from RFC 7677 section 3 ----------------------------------

RFC_NONCE = "rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_FIRST = (b"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                    b"s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
RFC_CLIENT_FINAL = (b"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
                    b"p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
RFC_SERVER_FINAL = b"v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="


def test_scram_rfc7677_vector() -> None:
    client = ScramClient("pencil", username="user", nonce=RFC_NONCE)
    assert client.client_first() == b"n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
    assert client.client_final(RFC_SERVER_FIRST) == RFC_CLIENT_FINAL
    client.verify_server_final(RFC_SERVER_FINAL)


def test_scram_rejects_forged_server_signature() -> None:
    client = ScramClient("pencil", username="user", nonce=RFC_NONCE)
    client.client_final(RFC_SERVER_FIRST)
    forged = b"v=" + base64.b64encode(b"\x00" * 32)
    with pytest.raises(PgAuthError, match="signature"):
        client.verify_server_final(forged)


def test_scram_rejects_nonce_not_extending_ours() -> None:
    client = ScramClient("pencil", nonce="abc")
    with pytest.raises(PgAuthError, match="nonce"):
        client.client_final(b"r=xyz123,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096")
    with pytest.raises(PgAuthError, match="server"):
        ScramClient("p", nonce="abc").client_final(b"e=invalid-proof")


def test_saslprep() -> None:
    assert saslprep("I\u00adX") == "IX"  # soft hyphen is mapped to nothing
    assert saslprep("user") == "user"
    assert saslprep("\u00aa") == "a"  # NFKC
    assert saslprep("a\u2003b") == "a b"  # non-ASCII space becomes a space
    with pytest.raises(ValueError):
        saslprep("\u0007")


# --- URLs -------------------------------------------------------------------------------


def test_parse_pg_url_percent_decodes() -> None:
    url = parse_pg_url("postgresql://pix%40sim:p%3Ass%2Fw%40rd@db.internal:6543/my%20db")
    assert (url.user, url.password, url.host, url.port, url.database) == (
        "pix@sim", "p:ss/w@rd", "db.internal", 6543, "my db")
    default = parse_pg_url("postgresql://me@localhost")
    assert (default.port, default.database, default.password) == (5432, "me", None)
    with pytest.raises(ValueError):
        parse_pg_url("mysql://u:p@h/d")
    with pytest.raises(ValueError):
        parse_pg_url("postgresql://u:p@h:99999/d")


def test_parse_redis_url_forms() -> None:
    a = parse_redis_url("redis://:s%40cret@cache:6380/2")
    assert (a.host, a.port, a.db, a.username, a.password) == ("cache", 6380, 2, None, "s@cret")
    b = parse_redis_url("redis://alice:pw@cache/0")
    assert (b.port, b.username, b.password) == (6379, "alice", "pw")
    c = parse_redis_url("redis://127.0.0.1:6379")
    assert (c.db, c.password) == (0, None)
    with pytest.raises(ValueError):
        parse_redis_url("redis://h:1/notanumber")
    with pytest.raises(ValueError):
        parse_redis_url("http://h:1/0")


def test_mask_url() -> None:
    assert mask_url("postgresql://u:hunter2@h:5432/d") == "postgresql://u:***@h:5432/d"
    assert mask_url("redis://:hunter2@h:6379/0") == "redis://:***@h:6379/0"
    assert mask_url("redis://h:6379/0") == "redis://h:6379/0"


def test_resp_encoding() -> None:
    assert _encode(("SET", "k", "v")) == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n"
    assert _encode(("SELECT", 2)) == b"*2\r\n$6\r\nSELECT\r\n$1\r\n2\r\n"


# --- settings -----------------------------------------------------------------------------


def base_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {
        "DATABASE_URL": "postgresql://u:p@localhost:5432/d",
        "REDIS_URL": "redis://localhost:6379/0",
        "SECRET_KEY": "x" * 32,
        "PIXSIM_HOME": str(tmp_path / "home"),
    }
    env.update(extra)
    return env


def test_settings_defaults(tmp_path: Path) -> None:
    s = load_settings(base_env(tmp_path))
    assert (s.server_id, s.server_name, s.debug, s.host, s.port) == (
        "local", "Local Server", False, "0.0.0.0", 8000)
    assert s.plugin_allowlist is None and s.plugin_denylist is None
    assert s.feature_plugins_dir == PACKAGE_PLUGINS_DIR
    assert str(s.external_plugins_dir) == "/srv/pixsim/external-plugins"
    assert (tmp_path / "home" / "media").is_dir()
    assert "http://localhost:5173" in s.cors_origins
    assert "x" * 32 not in repr(s)


def test_settings_case_insensitive_and_lists(tmp_path: Path) -> None:
    env = base_env(tmp_path, plugin_allowlist='["romance", "stats_basic"]',
                   Plugin_Denylist="[]", debug="TRUE", cors_origins="http://a, http://b",
                   port="9001")
    s = load_settings(env)
    assert s.plugin_allowlist == ["romance", "stats_basic"]
    assert s.plugin_denylist is None
    assert s.debug is True and s.port == 9001
    assert s.cors_origins == ["http://a", "http://b"]
    assert load_settings(base_env(tmp_path, CORS_ORIGINS='["http://c"]')).cors_origins == [
        "http://c"]
    assert load_settings(base_env(tmp_path, CORS_ORIGINS="*")).cors_origins == ["*"]


@pytest.mark.parametrize("value", ["romance,stats_basic", "", "romance", '{"a": 1}', "[1]"])
def test_settings_reject_non_json_lists(tmp_path: Path, value: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(base_env(tmp_path, PLUGIN_DENYLIST=value))
    assert any(p.startswith("PLUGIN_DENYLIST") for p in info.value.problems)


def test_settings_collect_every_problem(tmp_path: Path) -> None:
    env = {"DATABASE_URL": "postgres+asyncpg://u:p@h/d", "SECRET_KEY": "tooshort",
           "PORT": "http", "PIXSIM_HOME": str(tmp_path)}
    with pytest.raises(SettingsError) as info:
        load_settings(env)
    fields = sorted(p.split(":")[0] for p in info.value.problems)
    assert fields == ["DATABASE_URL", "PORT", "REDIS_URL", "SECRET_KEY"]
    assert "tooshort" not in str(info.value)


def test_parse_dotenv_like_python_dotenv() -> None:
    text = textwrap.dedent("""\
        # a comment
        export SERVER_NAME=From Env File
        SERVER_DESCRIPTION='single # kept'
        DEBUG="tr\\"ue"
        PORT=9000 # trailing comment
        not a line
        EMPTY=
    """)
    assert parse_dotenv(text) == {"SERVER_NAME": "From Env File",
                                  "SERVER_DESCRIPTION": "single # kept", "DEBUG": 'tr"ue',
                                  "PORT": "9000", "EMPTY": ""}


def test_dotenv_never_overrides_the_environment(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("server_name=from-file\nSERVER_ID=from-file\nX=1\n")
    added = dotenv_additions({"SERVER_NAME": "from-env"}, tmp_path)
    assert added == {"SERVER_ID": "from-file", "X": "1"}
    assert dotenv_additions({}, tmp_path / "nowhere") == {}


# --- plugins ------------------------------------------------------------------------------


def write_plugin(root: Path, folder: str, body: str, external: bool = False) -> None:
    target = root / folder / ("backend" if external else "")
    target.mkdir(parents=True, exist_ok=True)
    (target / "manifest.py").write_text(textwrap.dedent(body))


def simple(pid: str, deps: list[str] | None = None, kind: str = "feature") -> str:
    return f"manifest = {{'id': {pid!r}, 'kind': {kind!r}, 'dependencies': {deps or []!r}}}\n"


def test_folder_name_rules() -> None:
    assert valid_folder_name("romance") and valid_folder_name("a-b_2")
    for bad in ("Romance", "1abc", "_x", "core", "tests", "plugins", "a.b"):
        assert not valid_folder_name(bad)


def test_builtin_plugins_load_with_their_graph() -> None:
    ps = load_plugins(PACKAGE_PLUGINS_DIR, Path("/nonexistent-external"))
    deps = {(p.id, p.kind): p.dependencies for p in ps.plugins}
    assert deps == {("admin_plugins", "route"): [], ("dialogue_extras", "route"): ["romance"],
                    ("game_npcs", "feature"): ["stats_basic"],
                    ("game_npcs", "route"): ["stats_basic"],
                    ("game_stealth", "feature"): ["stats_basic"],
                    ("romance", "route"): ["stats_basic"], ("stats_basic", "feature"): []}
    assert all(p.enabled for p in ps.plugins)
    # The id is the manifest's: the folder differs for two of them.
    folders = {p.folder: p.id for p in ps.plugins if p.folder != p.id}
    assert folders == {"stealth": "game_stealth", "npcs": "game_npcs", "npcs_api": "game_npcs"}


def test_invalid_folders_are_skipped(tmp_path: Path) -> None:
    builtin, external = tmp_path / "b", tmp_path / "e"
    write_plugin(builtin, "good", simple("good"))
    write_plugin(builtin, "core", simple("core_plugin"))
    write_plugin(builtin, "Bad", simple("bad"))
    write_plugin(external, "ext", simple("ext"), external=True)
    write_plugin(external, "flat", simple("flat"))  # missing the backend/ level
    ps = load_plugins(builtin, external)
    assert sorted(p.id for p in ps.plugins) == ["ext", "good"]


def test_dependency_on_missing_or_disabled_plugin_aborts(tmp_path: Path) -> None:
    write_plugin(tmp_path, "base", simple("base"))
    write_plugin(tmp_path, "top", simple("top", ["base"]))
    write_plugin(tmp_path, "orphan", simple("orphan", ["ghost"]))
    with pytest.raises(PluginDependencyError) as info:
        load_plugins(tmp_path, tmp_path / "none")
    assert info.value.problems == ["ValueError: Missing dependency: ghost (needed by orphan)"]

    (tmp_path / "orphan" / "manifest.py").unlink()
    with pytest.raises(PluginDependencyError, match="'top' depends on 'base' which is disabled"):
        load_plugins(tmp_path, tmp_path / "none", denylist=["base", "top"])
    ok = load_plugins(tmp_path, tmp_path / "none", allowlist=["base"])
    assert {p.id: p.enabled for p in ok.plugins} == {"base": True, "top": False}


def test_manifest_disabled_and_errors(tmp_path: Path) -> None:
    write_plugin(tmp_path, "off", "manifest = {'id': 'off', 'enabled': False}\n")
    write_plugin(tmp_path, "nodict", "manifest = 3\n")
    write_plugin(tmp_path, "badkind", "manifest = {'id': 'bk', 'kind': 'widget'}\n")
    write_plugin(tmp_path, "raises", "raise ValueError('nope')\n")
    ps = load_plugins(tmp_path, tmp_path / "none")
    assert [p.id for p in ps.plugins] == ["off"] and ps.plugins[0].enabled is False
    errors = {f.folder: f.error for f in ps.failed}
    assert set(errors) == {"nodict", "badkind", "raises"}
    assert errors["nodict"].startswith("ManifestError:")
    assert errors["badkind"].startswith("ManifestError:")
    assert errors["raises"] == "ValueError: nope"


def test_failed_manifest_counts_as_missing(tmp_path: Path) -> None:
    write_plugin(tmp_path, "auth", "raise ImportError('No module named jose')\n")
    write_plugin(tmp_path, "users", simple("users", ["auth"]))
    with pytest.raises(PluginDependencyError) as info:
        load_plugins(tmp_path, tmp_path / "none")
    assert info.value.problems == ["ValueError: Missing dependency: auth (needed by users)"]


def test_feature_and_route_plugins_may_share_an_id(tmp_path: Path) -> None:
    write_plugin(tmp_path, "npcs", simple("game_npcs"))
    write_plugin(tmp_path, "npcs_api", simple("game_npcs", kind="route"))
    write_plugin(tmp_path, "npcs_again", simple("game_npcs", kind="route"))
    ps = load_plugins(tmp_path, tmp_path / "none")
    listing = ps.listing()
    assert [p["id"] for p in listing["feature_plugins"]] == ["game_npcs"]
    assert [p["id"] for p in listing["route_plugins"]] == ["game_npcs"]
    assert listing["total"] == 2
    assert ps.warnings and "route plugin id 'game_npcs'" in ps.warnings[0]
    off = load_plugins(tmp_path, tmp_path / "none", denylist=["game_npcs"])
    assert [p.enabled for p in off.plugins] == [False, False]


def test_relative_imports_inside_a_plugin(tmp_path: Path) -> None:
    write_plugin(tmp_path, "withhelper", """
        from .helper import VALUE
        manifest = {'id': 'withhelper', 'kind': 'route'}
        routes = {'/v': lambda info: (200, {'v': VALUE})}
    """)
    (tmp_path / "withhelper" / "helper.py").write_text("VALUE = 42\n")
    ps = load_plugins(tmp_path, tmp_path / "none")
    fn = ps.find_route("withhelper", "/v")
    assert fn is not None and fn({}) == (200, {"v": 42})


def test_duplicate_ids_keep_the_first(tmp_path: Path) -> None:
    write_plugin(tmp_path / "b", "one", simple("same"))
    write_plugin(tmp_path / "e", "two", simple("same"), external=True)
    ps = load_plugins(tmp_path / "b", tmp_path / "e")
    assert [(p.id, p.source) for p in ps.plugins] == [("same", "builtin")]
    assert ps.warnings and "already provided" in ps.warnings[0]


# --- migrations ---------------------------------------------------------------------------


def test_chains_are_read_main_first_in_file_order(tmp_path: Path) -> None:
    for rel in ("zeta/0001_z.sql", "main/0002_b.sql", "main/0001_a.sql", "game/0001_g.sql",
                "main/notes.txt", ".hidden/0001_x.sql", "empty/README"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("SELECT 1;\n")
    chains = read_chains(tmp_path)
    assert [(c.name, c.revisions, c.version_table) for c in chains] == [
        ("main", ("0001_a", "0002_b"), "alembic_version"),
        ("game", ("0001_g",), "alembic_version_game"),
        ("zeta", ("0001_z",), "alembic_version_zeta")]
    assert [c.head for c in chains] == ["0002_b", "0001_g", "0001_z"]
    assert [c.name for c in read_chains(PACKAGE_MIGRATIONS_DIR)] == ["main", "game"]


@pytest.mark.parametrize("rel", ["Main/0001_a.sql", "main/0001-a.sql",
                                 f"main/{'x' * 33}.sql", "main-chain/0001.sql"])
def test_bad_migration_names_are_refused(tmp_path: Path, rel: str) -> None:
    (tmp_path / rel).parent.mkdir(parents=True)
    (tmp_path / rel).write_text("SELECT 1;\n")
    with pytest.raises(MigrationsDirError, match="must match"):
        read_chains(tmp_path)


def test_no_migrations_at_all_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MigrationsDirError, match="holds no migrations"):
        read_chains(tmp_path)


def test_failure_report_points_at_the_line() -> None:
    sql = "CREATE TABLE a (id int);\n\n  SELECT nope FROM a;\n"
    error = PgError("42703", 'column "nope" does not exist',
                    {"P": str(sql.index("nope") + 1), "H": "Perhaps you meant id."})
    assert MigrationFailed("main", "0003_x", error, sql).report() == [
        "migrate: main/0003_x failed; nothing was changed (the whole run was rolled back)",
        'ERROR:  column "nope" does not exist (SQLSTATE 42703)',
        "LINE 3: SELECT nope FROM a;",
        "HINT:  Perhaps you meant id.",
    ]
