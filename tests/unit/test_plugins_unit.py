"""pixsim_host.plugins without an engine: dependency resolution, the static manifest reader,
and the safety of ``install_package`` against hostile packages.

Resolution runs on handmade catalogs shaped like the reference backend's built-ins
(stats_basic; game_stealth and romance need it; dialogue_extras needs romance). The rule
every plan must keep is PixSim7's: start-up aborts when any loaded plugin, enabled or not,
depends on a disabled or missing one.

Every hostile package must be refused with a HostError and leave the host exactly as it
was: the same entries in plugins/ (with the same bytes), and no staging directory left in
.pixsim-host/.
"""

from __future__ import annotations

import io
import itertools
import os
import shutil
import stat
import tarfile
import uuid
import zipfile
from pathlib import Path

import pytest
from unit_helpers import run_cli, snapshot

from pixsim_host import plugins
from pixsim_host.config import HostConfig
from pixsim_host.errors import HostError
from pixsim_host.hostdir import HostDir
from pixsim_host.plugins import (
    Catalog,
    PluginInfo,
    catalog_from_list,
    install_package,
    plan_disable,
    plan_enable,
    registration_problems,
    static_manifest,
    trap_problems,
    with_installed,
)

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "plugins"
# Names of members that would land outside the package if they were ever written.
ESCAPES = ("evil_escape*", "evil_up*", "evil_far*", "evil_abs*", "evil_win*", "evil_drive*",
           "evil_target*")
MANIFEST = b'manifest = {"id": "evil_pkg", "name": "Evil", "kind": "route", "dependencies": []}\n'


# ---- handmade catalogs ------------------------------------------------------------------------


def info(pid: str, *deps: str, enabled: bool = True, default: bool = True, error: str | None = None,
         source: str = "builtin") -> PluginInfo:
    return PluginInfo(id=pid, name=pid.title(), version="1.0.0", kind="feature",
                      dependencies=tuple(deps), source=source, enabled=enabled,
                      default_enabled=default, error=error)


def catalog(*extra: PluginInfo) -> Catalog:
    items = [info("stats_basic"), info("game_stealth", "stats_basic"), info("romance", "stats_basic"),
             info("dialogue_extras", "romance"), *extra]
    return Catalog({p.id: p for p in items}, taken_at=0.0, live=True)


def config(enabled: list[str] | None = None, disabled: list[str] | None = None) -> HostConfig:
    return HostConfig(host_id=str(uuid.uuid4()), name="unit-host",
                      plugins={"enabled": enabled or [], "disabled": disabled or []})


# ---- the catalog ------------------------------------------------------------------------------


def test_dependents_and_requirements_are_transitive() -> None:
    cat = catalog()
    assert cat.dependents("stats_basic") == {"game_stealth", "romance", "dialogue_extras"}
    assert cat.dependents("romance") == {"dialogue_extras"}
    assert cat.dependents("dialogue_extras") == set()
    assert cat.requirements("dialogue_extras") == {"romance", "stats_basic"}
    assert cat.requirements("stats_basic") == set()


def test_dependency_cycles_terminate() -> None:
    cat = Catalog({"a": info("a", "b"), "b": info("b", "a"), "c": info("c", "a")}, 0.0)
    assert cat.dependents("a") == {"a", "b", "c"}
    assert cat.requirements("c") == {"a", "b"}


def test_catalog_from_the_backends_list() -> None:
    answer = {
        "feature_plugins": [
            {"id": "stats_basic", "name": "Basic Stats", "version": "1.0.0", "kind": "feature",
             "enabled": True, "dependencies": []},
            {"id": "game_stealth", "kind": "feature", "enabled": False, "dependencies": ["stats_basic"]},
            {"id": "manifest_off", "kind": "feature", "enabled": False},
            {"name": "no id, ignored"},
        ],
        "route_plugins": [
            {"id": "broken_plugin", "enabled": False, "error": "RuntimeError: boom",
             "source": "external"},
        ],
        "total": 5,
    }
    cat = catalog_from_list(answer, denylist=["game_stealth"], taken_at=12.5)
    assert sorted(cat.plugins) == ["broken_plugin", "game_stealth", "manifest_off", "stats_basic"]
    assert cat.taken_at == 12.5 and cat.live is False
    # Disabled by the denylist: enabled by default. Disabled with no list: its manifest says so.
    assert cat.plugins["game_stealth"].default_enabled is True
    assert cat.plugins["game_stealth"].dependencies == ("stats_basic",)
    assert cat.plugins["manifest_off"].default_enabled is False
    assert cat.plugins["broken_plugin"].error == "RuntimeError: boom"
    assert cat.plugins["broken_plugin"].source == "external"
    assert cat.plugins["stats_basic"].name == "Basic Stats"


def test_unknown_id_suggests_the_closest() -> None:
    with pytest.raises(HostError, match="did you mean game_stealth"):
        catalog().get("game_stealh")
    with pytest.raises(HostError, match="plugins list"):
        catalog().get("zzzzzzzz")


# ---- the start-up rule ------------------------------------------------------------------------


def test_trap_problems_follow_pixsim7s_start_up_rule() -> None:
    cat = catalog()
    assert trap_problems(cat, set()) == []
    assert trap_problems(cat, {"dialogue_extras"}) == []
    # A disabled plugin is still loaded, so its dependencies still count.
    assert trap_problems(cat, {"romance", "dialogue_extras"}) == [
        "dialogue_extras depends on romance, which would be disabled"]
    assert trap_problems(cat, {"stats_basic"}) == [
        "game_stealth depends on stats_basic, which would be disabled",
        "romance depends on stats_basic, which would be disabled",
    ]
    missing = catalog(info("addon", "ghost"))
    assert trap_problems(missing, set()) == ["addon depends on ghost, which is not installed"]
    failed_dep = catalog(info("flaky", error="ImportError: x"), info("user", "flaky"))
    assert trap_problems(failed_dep, set()) == ["user depends on flaky, which is not installed"]
    # A plugin that failed to import is not loaded, so its own dependencies do not count.
    failed_user = catalog(info("gone", "nothing_here", error="SyntaxError"))
    assert trap_problems(failed_user, set()) == []
    # Disabled by its own manifest: as good as disabled.
    manifest_off = catalog(info("off", enabled=False, default=False), info("needs_off", "off"))
    assert trap_problems(manifest_off, set()) == ["needs_off depends on off, which would be disabled"]


def test_no_plan_can_render_lists_that_abort_start_up() -> None:
    """Every enable/disable plan on every reachable denylist is safe, or refused."""
    cat = catalog(info("stealth_addon", "game_stealth", source="external"), info("leaf"))
    ids = sorted(cat.plugins)
    safe = [set(c) for n in range(len(ids) + 1) for c in itertools.combinations(ids, n)
            if not trap_problems(cat, set(c))]
    assert {frozenset(s) for s in safe} == {frozenset(), frozenset({"dialogue_extras"}),
                                            frozenset({"leaf"}), frozenset({"stealth_addon"}),
                                            frozenset({"dialogue_extras", "leaf"}),
                                            frozenset({"dialogue_extras", "stealth_addon"}),
                                            frozenset({"leaf", "stealth_addon"}),
                                            frozenset({"dialogue_extras", "leaf", "stealth_addon"})}
    for disabled in safe:
        cfg = config(disabled=sorted(disabled))
        for n in (1, 2):
            for chosen in itertools.combinations(ids, n):
                for cascade in (False, True):
                    try:
                        change = plan_disable(cfg, cat, list(chosen), cascade)
                    except HostError:
                        continue
                    assert trap_problems(cat, set(change.disabled)) == [], (disabled, chosen)
                    assert not set(change.enabled) & set(change.disabled)
                change = plan_enable(cfg, cat, list(chosen))
                assert trap_problems(cat, set(change.disabled)) == [], (disabled, chosen)
                assert set(chosen) <= set(change.enabled)


# ---- enable -----------------------------------------------------------------------------------


def test_enable_adds_what_was_off_and_says_only_that() -> None:
    # A hand-edited config disabled romance and dialogue_extras (which `up` refuses).
    change = plan_enable(config(disabled=["romance", "dialogue_extras"]), catalog(), ["dialogue_extras"])
    assert change.also == ["romance"]
    assert change.disabled == []
    assert change.enabled == ["dialogue_extras", "romance", "stats_basic"]


def test_enable_of_an_already_satisfied_plugin_enables_nothing_else() -> None:
    change = plan_enable(config(disabled=["game_stealth"]), catalog(), ["game_stealth"])
    assert change.also == []
    assert change.disabled == []
    assert "game_stealth" in change.enabled


def test_enable_keeps_unrelated_choices() -> None:
    change = plan_enable(config(enabled=["romance"], disabled=["dialogue_extras", "game_stealth"]),
                         catalog(), ["game_stealth"])
    assert change.disabled == ["dialogue_extras"]
    assert {"romance", "game_stealth"} <= set(change.enabled)


def test_enable_refuses_unknown_ids_and_missing_requirements() -> None:
    with pytest.raises(HostError, match="did you mean romance"):
        plan_enable(config(), catalog(), ["romanse"])
    with pytest.raises(HostError, match="needs ghost, which this backend does not have"):
        plan_enable(config(), catalog(info("addon", "ghost")), ["addon"])


# ---- disable ----------------------------------------------------------------------------------


def test_disable_of_a_leaf() -> None:
    change = plan_disable(config(enabled=["dialogue_extras"]), catalog(), ["dialogue_extras"], False)
    assert change.disabled == ["dialogue_extras"]
    assert "dialogue_extras" not in change.enabled
    assert change.also == []


def test_disable_with_enabled_dependents_is_refused_naming_them() -> None:
    with pytest.raises(HostError) as refused:
        plan_disable(config(), catalog(), ["stats_basic"], False)
    message = refused.value.message
    assert "dialogue_extras, game_stealth, romance" in message
    # --cascade would fail too (they stay installed), so it is not suggested: they are built in.
    assert "--cascade" not in message
    assert "built into the backend, so stats_basic must stay enabled" in message


def test_cascade_is_refused_while_dependents_stay_loaded() -> None:
    with pytest.raises(HostError) as refused:
        plan_disable(config(), catalog(), ["stats_basic"], True)
    message = refused.value.message
    assert "aborts start-up" in message and "even a disabled one" in message
    assert "romance depends on stats_basic" in message
    assert "plugins remove" in message
    # Already-disabled dependents still block: they are loaded all the same.
    with pytest.raises(HostError, match="dialogue_extras depends on romance"):
        plan_disable(config(disabled=["dialogue_extras"]), catalog(), ["romance"], False)


def test_a_dependent_that_failed_to_import_does_not_block() -> None:
    cat = catalog(info("leaf"), info("broken_user", "leaf", error="RuntimeError: x", enabled=False))
    change = plan_disable(config(), cat, ["leaf"], False)
    assert change.disabled == ["leaf"]


def test_disable_unknown_id_is_refused() -> None:
    with pytest.raises(HostError, match="did you mean dialogue_extras"):
        plan_disable(config(), catalog(), ["dialog_extras"], False)


# ---- verification -----------------------------------------------------------------------------


def test_registration_problems_name_each_mismatch() -> None:
    cat = catalog(
        info("off_by_manifest", enabled=False, default=False),
        info("refused_by_backend", enabled=False, default=True),
        info("failed", enabled=False, error="RuntimeError: boom"),
        info("stray_failure", enabled=False, error="ImportError: y"),
        info("tolerated_failure", enabled=False, error="ImportError: z"),
    )
    cfg = config(enabled=["off_by_manifest", "refused_by_backend", "failed", "ghost"],
                 disabled=["game_stealth", "tolerated_failure"])
    assert registration_problems(cfg, cat) == [
        "off_by_manifest is not enabled (its manifest disables it by default, which configuration "
        "cannot override)",
        "refused_by_backend is not enabled (the backend reports it disabled)",
        "failed failed to load: RuntimeError: boom",
        "ghost is not known to the backend",
        "game_stealth is still enabled although this host disables it",
        "stray_failure failed to load: ImportError: y",
    ]
    assert registration_problems(config(), catalog()) == []


# ---- the static manifest reader -----------------------------------------------------------------


def write_manifest(root: Path, text: str, name: str = "pkg") -> Path:
    folder = root / name
    (folder / "backend").mkdir(parents=True)
    (folder / "backend" / "manifest.py").write_text(text)
    return folder


def test_static_manifest_reads_a_dict(tmp_path: Path) -> None:
    folder = write_manifest(tmp_path, (
        "BASE = {'x': 1}\n"
        "manifest = {\n"
        "    'id': 'pkg', 'name': 'Pkg', 'version': '0.2.0', 'kind': 'route',\n"
        "    'dependencies': ['game_stealth', 'romance'], 'enabled': False,\n"
        "    'extra': BASE, **BASE,\n"
        "}\n"
    ))
    assert static_manifest(folder) == {
        "id": "pkg", "name": "Pkg", "version": "0.2.0", "kind": "route",
        "dependencies": ["game_stealth", "romance"], "enabled": False,
    }


def test_static_manifest_reads_a_call_like_upstreams(tmp_path: Path) -> None:
    folder = write_manifest(tmp_path, (
        "from somewhere_unimportable import PluginManifest, SCHEMA\n"
        "manifest = PluginManifest(\n"
        "    id='pkg', kind='feature', dependencies=['stats_basic'], requires_db=True,\n"
        "    frontend_manifest=SCHEMA, permissions=['session:read'],\n"
        ")\n"
    ))
    assert static_manifest(folder) == {"id": "pkg", "kind": "feature", "dependencies": ["stats_basic"],
                                       "requires_db": True, "permissions": ["session:read"]}


def test_static_manifest_never_runs_the_code(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    folder = write_manifest(tmp_path, (
        f"open({str(marker)!r}, 'w').write('x')\n"
        "manifest = {'id': 'pkg', 'dependencies': []}\n"
    ))
    assert static_manifest(folder) == {"id": "pkg", "dependencies": []}
    assert not marker.exists()
    # The fixture that raises at import is read without raising (its manifest is a literal).
    assert static_manifest(FIXTURES / "broken_plugin")["id"] == "broken_plugin"  # type: ignore[index]
    assert static_manifest(FIXTURES / "hello_external")["id"] == "hello_external"  # type: ignore[index]


@pytest.mark.parametrize("text", ["manifest = {'id': \n", "other = {'id': 'x'}\n", "", "\0bad"])
def test_static_manifest_without_a_readable_manifest(tmp_path: Path, text: str) -> None:
    assert static_manifest(write_manifest(tmp_path, text)) is None


def test_static_manifest_of_a_folder_without_one(tmp_path: Path) -> None:
    assert static_manifest(tmp_path) is None


def test_with_installed_adds_packages_the_backend_has_not_loaded(tmp_path: Path) -> None:
    host = HostDir(tmp_path)
    shutil.copytree(FIXTURES / "stealth_addon", host.plugins_dir / "stealth_addon")
    cat = with_installed(catalog(), host)
    added = cat.plugins["stealth_addon"]
    assert added.dependencies == ("game_stealth",) and added.source == "external"
    assert added.enabled is False and added.default_enabled is True
    assert cat.requirements("stealth_addon") == {"game_stealth", "stats_basic"}
    # With it installed, game_stealth can no longer be disabled.
    with pytest.raises(HostError, match="stealth_addon"):
        plan_disable(config(), cat, ["game_stealth"], True)


# ---- the rendered lists ------------------------------------------------------------------------


def test_only_a_denylist_is_ever_rendered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A registry of the test's own: init registers every host it creates.
    monkeypatch.setenv("PIXSIM_HOST_HOME", str(tmp_path / "registry"))
    host = tmp_path / "host"
    created = run_cli("init", str(host), "--yes", "--name", "denylist-only", "--port", "18790")
    assert created.returncode == 0, str(created)
    for key, value in (("plugins.enabled", '["romance", "game_stealth"]'),
                       ("plugins.disabled", '["dialogue_extras"]')):
        result = run_cli("config", "set", key, value, "--dir", str(host))
        assert result.returncode == 0, str(result)
    compose = (host / "compose.yaml").read_text()
    assert 'PLUGIN_ALLOWLIST: "[]"' in compose
    assert 'PLUGIN_DENYLIST: "[\\"dialogue_extras\\"]"' in compose


# ---- install_package: hostile packages -----------------------------------------------------------


@pytest.fixture
def host(tmp_path: Path) -> HostDir:
    """A host directory with one plugin already installed, as a bystander."""
    root = tmp_path / "host"
    (root / ".pixsim-host").mkdir(parents=True)
    (root / ".pixsim-host" / "plugins.json").write_text('{"plugins": []}\n')
    shutil.copytree(FIXTURES / "hello_external", root / "plugins" / "hello_external",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return HostDir(root)


@pytest.fixture
def src(tmp_path: Path) -> Path:
    path = tmp_path / "sources"
    path.mkdir()
    return path


def refused(host: HostDir, source: Path, match: str) -> HostError:
    """Install must fail with ``match`` and write nothing anywhere in the host."""
    before = snapshot(host.root)
    listing = sorted(os.listdir(host.plugins_dir))
    state = sorted(os.listdir(host.state_dir))
    with pytest.raises(HostError, match=match) as caught:
        install_package(host, source)
    assert sorted(os.listdir(host.plugins_dir)) == listing
    assert sorted(os.listdir(host.state_dir)) == state, "a staging directory was left behind"
    assert snapshot(host.root) == before
    for escape in ESCAPES:
        assert not list(host.root.parent.rglob(escape)), f"{escape} was written"
    assert not Path("/evil_pkg").exists() and not Path("/tmp/evil_abs.py").exists()
    return caught.value


def tar_member(name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE,
               linkname: str = "") -> tuple[tarfile.TarInfo, bytes]:
    member = tarfile.TarInfo(name)
    member.type = kind
    member.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    member.linkname = linkname
    member.size = len(data) if kind == tarfile.REGTYPE else 0
    return member, data


def make_tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for member, data in members:
            archive.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return path


def good_tar_members(top: str = "evil_pkg") -> list[tuple[tarfile.TarInfo, bytes]]:
    return [tar_member(top, kind=tarfile.DIRTYPE), tar_member(f"{top}/backend", kind=tarfile.DIRTYPE),
            tar_member(f"{top}/backend/manifest.py", MANIFEST)]


def make_zip(path: Path, members: list[tuple[str | zipfile.ZipInfo, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members:
            archive.writestr(name, data)
    return path


def test_a_clean_archive_installs(host: HostDir, src: Path) -> None:
    """The baseline the hostile cases differ from: the same archive, minus the hostile member."""
    name = install_package(host, make_tar(src / "ok.tar.gz", good_tar_members())).id
    assert name == "evil_pkg"
    assert (host.plugins_dir / "evil_pkg" / "backend" / "manifest.py").read_bytes() == MANIFEST
    assert not [p for p in os.listdir(host.state_dir) if p.startswith("install-")]
    zipped = make_zip(src / "ok2.zip", [("evil_two/backend/manifest.py",
                                         MANIFEST.replace(b"evil_pkg", b"evil_two"))])
    assert install_package(host, zipped).folder.name == "evil_two"
    mode = stat.S_IMODE((host.plugins_dir / "evil_two" / "backend" / "manifest.py").stat().st_mode)
    assert mode == 0o644


@pytest.mark.parametrize("name", ["/evil_pkg/backend/x.py", "/tmp/evil_abs.py"])
def test_tar_with_an_absolute_path(host: HostDir, src: Path, name: str) -> None:
    archive = make_tar(src / "a.tar.gz", [*good_tar_members(), tar_member(name, b"x")])
    refused(host, archive, "outside its folder")


@pytest.mark.parametrize("name", ["evil_pkg/../evil_escape.py", "../evil_up/backend/manifest.py",
                                  "evil_pkg/backend/../../../evil_far.py"])
def test_tar_with_dotdot(host: HostDir, src: Path, name: str) -> None:
    archive = make_tar(src / "d.tar.gz", [*good_tar_members(), tar_member(name, b"x")])
    refused(host, archive, "outside its folder")


@pytest.mark.parametrize("linkname", ["/etc/passwd", "../../evil_target", "manifest.py"])
def test_tar_with_a_symlink(host: HostDir, src: Path, linkname: str) -> None:
    archive = make_tar(src / "s.tar.gz", [
        *good_tar_members(), tar_member("evil_pkg/backend/evil_link", kind=tarfile.SYMTYPE,
                                        linkname=linkname)])
    refused(host, archive, "contains a link")


def test_tar_with_a_hardlink(host: HostDir, src: Path) -> None:
    archive = make_tar(src / "h.tar.gz", [
        *good_tar_members(), tar_member("evil_pkg/backend/evil_hard", kind=tarfile.LNKTYPE,
                                        linkname="evil_pkg/backend/manifest.py")])
    refused(host, archive, "contains a link")


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE])
def test_tar_with_a_device_or_fifo(host: HostDir, src: Path, kind: bytes) -> None:
    member, _ = tar_member("evil_pkg/backend/evil_dev", kind=kind)
    member.devmajor, member.devminor = 1, 3
    archive = make_tar(src / "c.tar.gz", [*good_tar_members(), (member, b"")])
    refused(host, archive, "special file")


def test_zip_with_a_symlink(host: HostDir, src: Path) -> None:
    link = zipfile.ZipInfo("evil_pkg/backend/evil_link")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    archive = make_zip(src / "s.zip", [("evil_pkg/backend/manifest.py", MANIFEST), (link, b"/etc/passwd")])
    refused(host, archive, "contains a link")


@pytest.mark.parametrize("name", ["/evil_pkg/backend/x.py", "evil_pkg/../evil_escape.py",
                                  "../evil_up.py", "evil_pkg\\..\\evil_win.py", "C:/evil_drive.py"])
def test_zip_with_a_path_leaving_the_folder(host: HostDir, src: Path, name: str) -> None:
    archive = make_zip(src / "p.zip", [("evil_pkg/backend/manifest.py", MANIFEST), (name, b"x")])
    refused(host, archive, "outside its folder")


@pytest.mark.parametrize("kind", ["tar.gz", "zip", "folder"])
def test_oversized_package(host: HostDir, src: Path, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plugins, "MAX_PLUGIN_BYTES", 4096)
    big = b"x" * 5000
    if kind == "tar.gz":
        source = make_tar(src / "big.tar.gz", [*good_tar_members(),
                                               tar_member("evil_pkg/backend/blob.bin", big)])
        match = "size limit"
    elif kind == "zip":
        source = make_zip(src / "big.zip", [("evil_pkg/backend/manifest.py", MANIFEST),
                                            ("evil_pkg/backend/blob.bin", big)])
        match = "size limit"
    else:
        source = write_manifest(src, MANIFEST.decode(), name="evil_pkg")
        (source / "backend" / "blob.bin").write_bytes(big)
        match = "larger than the limit"
    refused(host, source, match)


@pytest.mark.parametrize("kind", ["tar.gz", "zip", "folder"])
def test_too_many_files(host: HostDir, src: Path, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(plugins, "MAX_PLUGIN_FILES", 10)
    extra = [f"evil_pkg/backend/f{i}.py" for i in range(12)]
    if kind == "tar.gz":
        source = make_tar(src / "many.tar.gz", [*good_tar_members(), *(tar_member(n, b"") for n in extra)])
        match = "limit"
    elif kind == "zip":
        source = make_zip(src / "many.zip", [("evil_pkg/backend/manifest.py", MANIFEST),
                                             *((n, b"") for n in extra)])
        match = "more than 10 files"
    else:
        source = write_manifest(src, MANIFEST.decode(), name="evil_pkg")
        for n in extra:
            (src / n).write_bytes(b"")
        match = "larger than the limit"
    refused(host, source, match)


@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_two_top_level_folders(host: HostDir, src: Path, kind: str) -> None:
    if kind == "tar.gz":
        source = make_tar(src / "two.tar.gz", [*good_tar_members("evil_one"), *good_tar_members("evil_two")])
    else:
        source = make_zip(src / "two.zip", [("evil_one/backend/manifest.py", MANIFEST),
                                            ("evil_two/backend/manifest.py", MANIFEST)])
    refused(host, source, "exactly one folder")


@pytest.mark.parametrize("kind", ["tar.gz", "zip"])
def test_a_lone_file_instead_of_a_folder(host: HostDir, src: Path, kind: str) -> None:
    if kind == "tar.gz":
        source = make_tar(src / "file.tar.gz", [tar_member("evil_file.py", MANIFEST)])
    else:
        source = make_zip(src / "file.zip", [("evil_file.py", MANIFEST)])
    refused(host, source, "exactly one folder")


@pytest.mark.parametrize("name", ["core", "tests", "plugins", "Bad_Name", "9lives", "has space",
                                  "dotted.name"])
@pytest.mark.parametrize("kind", ["tar.gz", "zip", "folder"])
def test_bad_folder_names(host: HostDir, src: Path, kind: str, name: str) -> None:
    if kind == "tar.gz":
        source = make_tar(src / "bad.tar.gz", good_tar_members(name))
    elif kind == "zip":
        source = make_zip(src / "bad.zip", [(f"{name}/backend/manifest.py", MANIFEST)])
    else:
        source = write_manifest(src, MANIFEST.decode(), name=name)
    refused(host, source, "folder name")


@pytest.mark.parametrize("kind", ["tar.gz", "zip", "folder"])
def test_missing_backend_manifest(host: HostDir, src: Path, kind: str) -> None:
    # manifest.py at the top, as a built-in plugin has it, is not an external package.
    if kind == "tar.gz":
        source = make_tar(src / "nomf.tar.gz", [tar_member("evil_pkg", kind=tarfile.DIRTYPE),
                                                tar_member("evil_pkg/manifest.py", MANIFEST)])
    elif kind == "zip":
        source = make_zip(src / "nomf.zip", [("evil_pkg/manifest.py", MANIFEST)])
    else:
        source = src / "evil_pkg"
        source.mkdir()
        (source / "manifest.py").write_bytes(MANIFEST)
    refused(host, source, "backend/manifest.py is missing")


def test_truncated_tar_gz(host: HostDir, src: Path) -> None:
    whole = make_tar(src / "whole.tar.gz", [*good_tar_members(),
                                            tar_member("evil_pkg/backend/data.bin", os.urandom(20000))])
    cut = src / "cut.tar.gz"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    refused(host, cut, "not a readable .tar.gz")


def test_garbage_archives(host: HostDir, src: Path) -> None:
    (src / "junk.zip").write_bytes(b"PK\x03\x04 not really a zip")
    refused(host, src / "junk.zip", "not a readable .zip")
    (src / "junk.tar.gz").write_bytes(b"\x1f\x8b\x08 not really gzip")
    refused(host, src / "junk.tar.gz", "not a readable .tar.gz")
    (src / "pkg.rar").write_bytes(b"Rar!")
    refused(host, src / "pkg.rar", "a folder, a .tar.gz or a .zip")
    refused(host, src / "does_not_exist", "does not exist")


def test_folder_with_a_symlink(host: HostDir, src: Path) -> None:
    folder = write_manifest(src, MANIFEST.decode(), name="evil_pkg")
    (folder / "backend" / "evil_link").symlink_to("/etc/passwd")
    refused(host, folder, "contains a link")


def test_folder_with_a_symlinked_directory(host: HostDir, src: Path) -> None:
    folder = write_manifest(src, MANIFEST.decode(), name="evil_pkg")
    (folder / "evil_dir").symlink_to(src, target_is_directory=True)
    refused(host, folder, "contains a link")


def test_folder_that_is_a_symlink(host: HostDir, src: Path) -> None:
    real = write_manifest(src, MANIFEST.decode(), name="real_pkg")
    link = src / "evil_pkg"
    link.symlink_to(real, target_is_directory=True)
    refused(host, link, "is a link")


def test_folder_with_a_fifo(host: HostDir, src: Path) -> None:
    folder = write_manifest(src, MANIFEST.decode(), name="evil_pkg")
    os.mkfifo(folder / "backend" / "evil_fifo")
    refused(host, folder, "special file")


def test_already_installed_is_not_overwritten(host: HostDir, src: Path) -> None:
    folder = write_manifest(src, "manifest = {'id': 'hello_external'}\n", name="hello_external")
    refused(host, folder, "already installed")
    # Another id in a folder of the same name: the backend sees one folder per name.
    archive = make_tar(src / "hello_external.tar.gz", good_tar_members("hello_external"))
    refused(host, archive, "folder named hello_external is already in use")
