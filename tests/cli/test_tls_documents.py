"""The ``tls`` part of the identity documents (info, config set ... then info) under --json,
valid against the shipped schemas, and what `info` tells a person about pinning the CA."""

from __future__ import annotations

from pathlib import Path

from cli_helpers import invoke, one_document


def test_info_documents_the_proxy_and_the_pin_line(tmp_path: Path) -> None:
    host = tmp_path / "h"
    one_document(invoke("init", str(host), "--yes", "--name", "tls-doc", "--port", "18960",
                        "--runtime", "docker", "--model", "friend", "--bind", "0.0.0.0", "--json"),
                 "init")
    before = one_document(invoke("info", "--dir", str(host), "--json"), "info")
    assert "tls" not in before  # tls.mode off: the documents are as they always were
    one_document(invoke("config", "set", "tls.mode", "internal", "--dir", str(host), "--json"),
                 "config-set")
    one_document(invoke("config", "set", "tls.port", "18961", "--dir", str(host), "--json"),
                 "config-set")
    info = one_document(invoke("info", "--dir", str(host), "--json"), "info")
    url = "https://127.0.0.1:18961"
    assert (info["backend_url"], info["frontend"]) == (url, f"VITE_BACKEND_URL={url}")
    assert info["local_url"] == "http://127.0.0.1:18960"
    # No CA until the first up exports it.
    assert info["tls"] == {"mode": "internal", "url": url, "ca_cert": None, "connect": None}
    (host / "tls-ca.crt").write_text("-----BEGIN CERTIFICATE-----\n", encoding="utf-8")
    info = one_document(invoke("info", "--dir", str(host), "--json"), "info")
    line = f"pixsim-host connect {url} --ca-cert {host / 'tls-ca.crt'}"
    assert info["tls"]["connect"] == line
    said = invoke("info", "--dir", str(host))
    assert said.code == 0 and line in said.stdout, said.stdout
    # Friends dial another address than 127.0.0.1: the certificate must name it.
    assert "config set tls.domain ADDRESS" in said.stdout
    one_document(invoke("config", "set", "tls.domain", "192.0.2.20", "--dir", str(host), "--json"),
                 "config-set")
    info = one_document(invoke("info", "--dir", str(host), "--json"), "info")
    assert info["backend_url"] == "https://192.0.2.20:18961"
    said = invoke("info", "--dir", str(host))
    assert "config set tls.domain" not in said.stdout
    assert "https://192.0.2.20:18961" in said.stdout
