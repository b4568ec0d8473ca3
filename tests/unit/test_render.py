"""`render` and `render --check`: deterministic output, drift detection, template overrides."""

from __future__ import annotations

import shutil
from pathlib import Path

from unit_helpers import MakeHost, assert_clean_failure, read_config, run_cli


def test_render_check_catches_an_edited_file_and_passes_after_render(make_host: MakeHost) -> None:
    host = make_host()
    ok = run_cli("render", "--check", "--dir", str(host))
    assert ok.returncode == 0, str(ok)

    compose = host / "compose.yaml"
    original = compose.read_text(encoding="utf-8")
    compose.write_text(original.replace("restart: unless-stopped", "restart: always", 1),
                       encoding="utf-8")
    result = run_cli("render", "--check", "--dir", str(host))
    assert_clean_failure(result)
    assert result.stderr.splitlines()[0].startswith("Error: compose.yaml differ"), str(result)
    # A unified diff: both sides of the edited line.
    assert "--- compose.yaml (on disk)" in result.stderr
    assert "+++ compose.yaml (rendered)" in result.stderr
    assert "-    restart: always\n" in result.stderr
    assert "+    restart: unless-stopped\n" in result.stderr
    assert compose.read_text(encoding="utf-8") != original  # --check writes nothing

    fixed = run_cli("render", "--dir", str(host))
    assert fixed.returncode == 0, str(fixed)
    assert "compose.yaml" in fixed.stdout
    assert compose.read_text(encoding="utf-8") == original
    again = run_cli("render", "--check", "--dir", str(host))
    assert again.returncode == 0, str(again)


def test_render_check_catches_a_deleted_file(make_host: MakeHost) -> None:
    host = make_host()
    (host / "frontend.env").unlink()
    result = run_cli("render", "--check", "--dir", str(host))
    assert_clean_failure(result)
    assert "frontend.env" in result.stderr
    assert not (host / "frontend.env").exists()


def test_render_check_catches_a_config_change_not_yet_rendered(make_host: MakeHost) -> None:
    host = make_host()
    path = host / "pixsim-host.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace("port: 18700", "port: 18720"),
                    encoding="utf-8")
    result = run_cli("render", "--check", "--dir", str(host))
    assert_clean_failure(result)
    assert '+        published: "18720"' in result.stderr, str(result)


def test_rendering_is_deterministic(make_host: MakeHost, tmp_path: Path) -> None:
    host = make_host()
    first = {name: (host / name).read_bytes() for name in ("compose.yaml", "frontend.env")}
    for name in first:
        (host / name).unlink()
    assert run_cli("render", "--dir", str(host)).returncode == 0
    assert {name: (host / name).read_bytes() for name in first} == first

    # A copy of the host, rendered by another process, gives the same bytes too.
    copy = tmp_path / "copy"
    shutil.copytree(host, copy)
    for name in first:
        (copy / name).unlink()
    assert run_cli("render", "--dir", str(copy)).returncode == 0
    assert {name: (copy / name).read_bytes() for name in first} == first


def test_render_reports_when_nothing_changed(make_host: MakeHost) -> None:
    host = make_host()
    before = {name: (host / name).stat().st_mtime_ns for name in ("compose.yaml", "frontend.env")}
    result = run_cli("render", "--dir", str(host))
    assert result.returncode == 0, str(result)
    assert "up to date" in result.stdout
    after = {name: (host / name).stat().st_mtime_ns for name in before}
    assert after == before  # unchanged files are not rewritten


def test_a_template_override_is_used(make_host: MakeHost) -> None:
    host = make_host()
    templates = host / "templates"
    templates.mkdir()
    (templates / "frontend.env.j2").write_text(
        "# custom for {{ host.host_id }}\nVITE_BACKEND_URL={{ host.client_url | dotenv }}\n"
        "VITE_HOST_NAME={{ host.name | dotenv }}\n",
        encoding="utf-8",
    )
    result = run_cli("render", "--dir", str(host))
    assert result.returncode == 0, str(result)
    host_id = read_config(host)["host_id"]
    assert (host / "frontend.env").read_text(encoding="utf-8") == (
        f"# custom for {host_id}\nVITE_BACKEND_URL='http://127.0.0.1:18700'\n"
        "VITE_HOST_NAME='test-host'\n"
    )
    # Templates that are not overridden still come from the package.
    assert "services:" in (host / "compose.yaml").read_text(encoding="utf-8")
    assert run_cli("render", "--check", "--dir", str(host)).returncode == 0


def test_a_broken_template_override_fails_clearly(make_host: MakeHost) -> None:
    host = make_host()
    (host / "templates").mkdir()
    (host / "templates" / "frontend.env.j2").write_text(
        "VITE_BACKEND_URL={{ host.no_such_field }}\n", encoding="utf-8"
    )
    before = (host / "frontend.env").read_bytes()
    result = run_cli("render", "--dir", str(host))
    assert_clean_failure(result)
    assert "template frontend.env.j2" in result.stderr and "no_such_field" in result.stderr
    assert (host / "frontend.env").read_bytes() == before


def test_an_override_that_breaks_the_compose_yaml_is_refused(make_host: MakeHost) -> None:
    host = make_host()
    (host / "templates").mkdir()
    (host / "templates" / "compose.yaml.j2").write_text("services: [unclosed\n", encoding="utf-8")
    before = (host / "compose.yaml").read_bytes()
    result = run_cli("render", "--dir", str(host))
    assert_clean_failure(result)
    assert "not valid YAML" in result.stderr
    assert (host / "compose.yaml").read_bytes() == before
