"""tls.*: validation, the rendered Caddyfile (checked by Caddy itself), compose.yaml's proxy,
and what changes for clients (URLs, CORS, registry ports, bundles' reach settings)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from unit_helpers import MakeHost, assert_clean_failure, run_cli

from pixsim_host import tls
from pixsim_host.backend_env import Endpoints, backend_environment
from pixsim_host.backup import REACH, UNTRUSTED_SETTINGS, distrust_settings
from pixsim_host.config import HostConfig, new_host_config
from pixsim_host.errors import ConfigError
from pixsim_host.hostdir import HostDir
from pixsim_host.hosts import HostEntry
from pixsim_host.render import render_host

ACME = {"mode": "acme", "domain": "pixsim.example.org", "acme_email": "ops@example.org", "port": 443}


def config(runtime: str = "docker", **tls_settings: Any) -> HostConfig:
    return new_host_config(name="TLS unit", runtime=runtime, model="friend",
                           backend={"bind": "0.0.0.0", "port": 8000}, tls=tls_settings)


def rendered(tmp_path: Path, host_config: HostConfig) -> dict[str, str]:
    return render_host(HostDir(tmp_path), host_config).files


def caddy_validate(tmp_path: Path, text: str) -> str | None:
    path = tmp_path / "Caddyfile"
    path.write_text(text, encoding="utf-8")
    return tls.validate_caddyfile(tls.caddy_binary(config(mode="internal")), path, tmp_path / "work")


# ---- validation ----------------------------------------------------------------------------


def test_off_is_the_default_and_changes_nothing(tmp_path: Path) -> None:
    plain = new_host_config(name="TLS unit", model="friend", backend={"bind": "0.0.0.0"})
    assert plain.tls.mode == "off" and plain.tls_url is None and plain.tls_ports == []
    assert plain.client_url == "http://127.0.0.1:8000" and plain.backend_listen_address == "0.0.0.0"
    files = rendered(tmp_path, plain)
    assert tls.CADDYFILE not in files
    services = yaml.safe_load(files["compose.yaml"])["services"]
    assert "proxy" not in services
    assert services["backend"]["ports"][0]["host_ip"] == "0.0.0.0"


@pytest.mark.parametrize(("settings", "problem"), [
    ({"mode": "acme"}, "tls.mode acme needs tls.domain"),
    ({"mode": "acme", "domain": "192.0.2.7"}, "tls.mode acme needs tls.domain"),
    ({"mode": "acme", "domain": "pixsim.example.org", "port": 80}, "tls.port 80"),
    ({"mode": "internal", "port": 8000}, "tls.port and backend.port are both 8000"),
    ({"mode": "internal", "domain": "not a name"}, "tls.domain: must be a DNS name"),
    ({"mode": "internal", "max_body_size": "lots"}, "tls.max_body_size: must be a size"),
    ({"mode": "acme", "domain": "pixsim.example.org", "acme_email": "nobody"}, "tls.acme_email"),
    ({"mode": "mutual"}, "tls.mode: must be one of"),
    ({"mode": "internal", "port": True}, "tls.port"),
])
def test_bad_tls_settings_are_refused(settings: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        config(**settings)
    assert problem in str(caught.value), str(caught.value)


def test_kubernetes_refuses_tls_mode_and_points_to_the_ingress() -> None:
    with pytest.raises(ConfigError) as caught:
        config("kubernetes", mode="internal")
    assert "kubernetes.ingress_host and kubernetes.tls_secret" in str(caught.value)
    assert config("kubernetes").tls.mode == "off"


def test_config_set_refuses_a_bad_value_in_one_line(make_host: MakeHost) -> None:
    host = make_host()
    before = (host / "pixsim-host.yaml").read_text()
    result = run_cli("config", "set", "tls.mode", "acme", "--dir", str(host))
    assert_clean_failure(result)
    assert "tls.mode acme needs tls.domain" in result.stderr
    assert (host / "pixsim-host.yaml").read_text() == before
    assert not (host / tls.CADDYFILE).exists()


# ---- what clients are given ------------------------------------------------------------------


def test_clients_get_https_and_the_backend_stays_on_loopback(tmp_path: Path) -> None:
    host_config = config(mode="internal", port=8443)
    assert host_config.client_url == "https://127.0.0.1:8443"
    assert host_config.local_url == "http://127.0.0.1:8000"  # pixsim-host's own probes
    assert host_config.backend_listen_address == "127.0.0.1"
    files = rendered(tmp_path, host_config)
    assert "VITE_BACKEND_URL='https://127.0.0.1:8443'" in files["frontend.env"]
    assert "VITE_WS_URL='wss://127.0.0.1:8443/api/v1/ws/generations'" in files["frontend.env"]
    named = config(mode="internal", domain="pixsim.lan", port=443)
    assert named.client_url == "https://pixsim.lan"
    where = Endpoints("postgresql://u:p@db/x", "redis://:p@redis/0", "k", "/data", "/plugins")
    origins = json.loads(backend_environment(named, where)["CORS_ORIGINS"])
    assert "https://pixsim.lan" in origins and "http://localhost:5173" in origins


def test_the_proxy_port_is_claimed_in_the_registry(tmp_path: Path) -> None:
    entry = HostEntry.of(HostDir(tmp_path), config(mode="internal", port=8443))
    assert 8443 in entry.all_ports and 8000 in entry.all_ports
    acme = HostEntry.of(HostDir(tmp_path), config(**ACME))
    assert {443, 80} <= set(acme.all_ports)


def test_tls_settings_are_reach_settings_a_bundle_cannot_bring(tmp_path: Path) -> None:
    for key in ("tls.mode", "tls.domain", "tls.port", "tls.acme_ca"):
        assert UNTRUSTED_SETTINGS[key] == REACH
    assert "tls.caddy_binary" in UNTRUSTED_SETTINGS and "tls.image" in UNTRUSTED_SETTINGS
    bundle = config(mode="internal", port=9443).model_dump(mode="json")
    safe = new_host_config(name="TLS unit").model_dump(mode="json")
    said: list[str] = []
    concerned = distrust_settings(bundle, safe, trust=False, progress=lambda _, line: said.append(line))
    assert {"tls.mode", "tls.port"} <= set(concerned)
    assert bundle["tls"]["mode"] == "off" and bundle["tls"]["port"] == 8443
    assert any("tls.mode" in line and "--trust-bundle-settings" in line for line in said)


# ---- the Caddyfile ---------------------------------------------------------------------------


def test_internal_caddyfile_on_docker(tmp_path: Path) -> None:
    host_config = config(mode="internal", port=8443, max_body_size="2GB")
    text = rendered(tmp_path, host_config)[tls.CADDYFILE]
    assert "https://localhost:8443, https://127.0.0.1:8443 {" in text
    assert "\ttls internal\n" in text and "admin off" in text and "skip_install_trust" in text
    assert "reverse_proxy backend:8000" in text
    assert "max_size 2GB" in text
    for header in ("X-Content-Type-Options nosniff", "Referrer-Policy", "X-Frame-Options DENY",
                   "frame-ancestors 'none'", "-Server"):
        assert header in text
    assert "Strict-Transport-Security" not in text and "default_bind" not in text
    assert caddy_validate(tmp_path, text) is None


def test_internal_caddyfile_on_native_binds_backend_bind(tmp_path: Path) -> None:
    text = rendered(tmp_path, config("native", mode="internal", port=8443, domain="192.0.2.7"))[tls.CADDYFILE]
    assert "default_bind tcp4/0.0.0.0" in text
    assert "reverse_proxy 127.0.0.1:8000" in text
    # A friend dials the address itself (no server name sent): its certificate by default.
    assert "default_sni 192.0.2.7" in text
    assert "https://192.0.2.7:8443, https://localhost:8443, https://127.0.0.1:8443 {" in text
    assert caddy_validate(tmp_path, text) is None


def test_acme_caddyfile_validates_with_caddy(tmp_path: Path) -> None:
    host_config = config(**ACME, acme_ca="https://acme-staging-v02.api.letsencrypt.org/directory")
    text = rendered(tmp_path, host_config)[tls.CADDYFILE]
    assert "https://pixsim.example.org:443 {" in text
    assert "email ops@example.org" in text
    assert "acme_ca https://acme-staging-v02.api.letsencrypt.org/directory" in text
    assert "tls internal" not in text and "localhost" not in text
    assert 'Strict-Transport-Security "max-age=31536000"' in text
    assert caddy_validate(tmp_path, text) is None
    # Caddy really checks: a broken file is refused, with its reason.
    assert caddy_validate(tmp_path, text.replace("reverse_proxy", "reverse_proxyy")) is not None


def test_no_secret_reaches_the_caddyfile(make_host: MakeHost) -> None:
    host = make_host("--model", "friend", "--bind", "0.0.0.0")
    assert run_cli("config", "set", "tls.mode", "internal", "--dir", str(host)).returncode == 0
    text = (host / tls.CADDYFILE).read_text()
    secrets = dict(line.split("=", 1) for line in (host / ".env").read_text().splitlines()
                   if "=" in line and not line.startswith("#"))
    assert secrets and not any(value.strip("'\"") in text for value in secrets.values() if value)
    assert run_cli("render", "--check", "--dir", str(host)).returncode == 0
    assert run_cli("config", "set", "tls.mode", "off", "--dir", str(host)).returncode == 0


# ---- compose.yaml --------------------------------------------------------------------------


def test_compose_proxy_service(tmp_path: Path) -> None:
    files = rendered(tmp_path, config(**ACME))
    data = yaml.safe_load(files["compose.yaml"])
    backend, proxy = data["services"]["backend"], data["services"]["proxy"]
    assert backend["ports"][0]["host_ip"] == "127.0.0.1"
    assert proxy["image"] == "caddy:2.11"
    assert proxy["depends_on"] == {"backend": {"condition": "service_healthy"}}
    assert {"type": "bind", "source": "./Caddyfile", "target": "/etc/caddy/Caddyfile",
            "read_only": True} in proxy["volumes"]
    assert "proxy-data:/data" in proxy["volumes"] and "proxy-data" in data["volumes"]
    assert [(p["published"], p["target"], p["host_ip"]) for p in proxy["ports"]] == \
        [("443", 443, "0.0.0.0"), ("80", 80, "0.0.0.0")]
    assert proxy["labels"]["org.pixsim-host.service"] == "proxy"
    assert proxy["labels"]["org.pixsim-host.host-id"] == backend["labels"]["org.pixsim-host.host-id"]
    assert ":01BB " in proxy["healthcheck"]["test"][1]  # port 443, as the kernel lists it
