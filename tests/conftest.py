"""Fixtures for every test: no test may read or write the user's real pixsim-host data.

``init`` registers each host in the registry under ``$PIXSIM_HOST_HOME`` (default: the
user's data directory), and ``connect`` pins identities there. Tests get a data directory
of their own: one for the whole session (module-scoped fixtures create hosts too), and a
fresh one per test, so hosts of different tests never claim each other's names or ports.
Subprocesses inherit it through the environment.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

HOME_ENV_VAR = "PIXSIM_HOST_HOME"


@pytest.fixture(scope="session", autouse=True)
def _session_pixsim_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(HOME_ENV_VAR, str(tmp_path_factory.mktemp("pixsim-home-session")))
        yield


@pytest.fixture(autouse=True)
def _pixsim_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(HOME_ENV_VAR, str(tmp_path_factory.mktemp("pixsim-home")))
