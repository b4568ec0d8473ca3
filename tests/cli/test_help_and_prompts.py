"""What a person meets first: init's questions re-ask after a wrong answer (an error line,
not a warning, and no traceback for an address), completion offers hosts, services,
plugin ids and the real choices, plugins show says yes/no, and waiting steps read as
progress, not as failures."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from cli_helpers import invoke


def test_init_asks_again_after_a_wrong_model_or_address(tmp_path: Path) -> None:
    host = tmp_path / "h"
    made = invoke("init", str(host), "--port", "18990",
                  answers="My Host\npublic\nfriend\nlocalhost\n\n127.0.0.1\n")
    assert made.code == 0, str(made)
    assert "Traceback" not in made.stderr
    assert "Error: 'public' is not a hosting model; answer self, friend, shared" in made.stderr
    assert "Error: 'localhost' is not an IP address" in made.stderr
    assert "Error: the address is empty" not in made.stderr  # Enter takes the default shown
    assert made.stderr.count("Hosting model") == 2 and made.stderr.count("Listen address") == 2
    config = (host / "pixsim-host.yaml").read_text(encoding="utf-8")
    assert "model: friend" in config and "bind: 0.0.0.0" in config


def _complete(words: str, tmp_path: Path) -> list[str]:
    outcome = invoke(env={"_PIXSIM_HOST_COMPLETE": "complete_bash", "COMP_WORDS": words,
                          "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1))},
                     cwd=tmp_path)
    return outcome.stdout.split()


def test_completion_offers_hosts_services_plugins_and_choices(tmp_path: Path) -> None:
    from pixsim_host.hostdir import HostDir
    from pixsim_host.plugins import catalog_from_list, save_catalog

    host = tmp_path / "h"
    assert invoke("init", str(host), "--yes", "--name", "complete-me", "--port", "18991",
                  "--runtime", "docker").code == 0
    save_catalog(HostDir(host), catalog_from_list(
        {"feature_plugins": [{"id": "romance", "enabled": True}, {"id": "stats_basic", "enabled": True}]},
        [], time.time()))
    assert _complete("pixsim-host up --host ", tmp_path) == ["complete-me"]
    assert _complete("pixsim-host up --pull ", tmp_path) == ["missing", "always", "never"]
    assert _complete("pixsim-host init --model ", tmp_path) == ["self", "friend", "shared"]
    assert set(_complete(f"pixsim-host logs --dir {host} ", tmp_path)) >= {"backend", "db", "redis"}
    assert _complete(f"pixsim-host plugins disable --dir {host} ro", tmp_path) == ["romance"]


def test_plugins_show_says_yes_and_no(tmp_path: Path) -> None:
    from pixsim_host.hostdir import HostDir
    from pixsim_host.plugins import catalog_from_list, save_catalog

    host = tmp_path / "h"
    assert invoke("init", str(host), "--yes", "--name", "show-me", "--port", "18992",
                  "--runtime", "docker").code == 0
    save_catalog(HostDir(host), catalog_from_list(
        {"feature_plugins": [{"id": "romance", "enabled": True, "name": "Romance"}]}, [], time.time()))
    shown = invoke("plugins", "show", "romance", "--dir", str(host))
    assert shown.code == 0, str(shown)
    lines = {line.split()[0]: line.split()[1:] for line in shown.stdout.splitlines() if line.strip()}
    assert lines["default_enabled"] == ["yes"] and lines["live"] == ["no"], shown.stdout
    assert lines["installed_in_host_dir"] == ["no"] and lines["enabled"][0] in ("yes", "no")
    assert "True" not in shown.stdout and "False" not in shown.stdout


def test_a_probe_that_does_not_answer_yet_reads_as_starting(capsys: pytest.CaptureFixture[str]) -> None:
    from pixsim_host.cli.output import Progress, progress_word

    assert progress_word("waiting: /api/v1/server/info: ConnectError (refused)") == "starting"
    assert progress_word("healthy, identity verified") == "healthy, identity verified"
    with Progress("Starting") as progress:  # piped: plain lines
        progress("backend", "waiting: /health: ConnectError (refused)")
        progress("backend", "healthy, identity verified")
    err = capsys.readouterr().err.splitlines()
    assert err == ["backend: starting (not answering yet: /health: ConnectError (refused))",
                   "backend: healthy, identity verified"]
