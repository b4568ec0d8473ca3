"""The upgrade history of a host: ``.pixsim-host/upgrades.json``, one entry per upgrade or
rollback, and what of it travels (the registry entry, bundles): versions before and after."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pixsim_host import safeload
from pixsim_host.fsutil import atomic_write
from pixsim_host.hostdir import HostDir

HISTORY_FILE = "upgrades.json"


def history_path(host: HostDir) -> Path:
    return host.state_dir / HISTORY_FILE


def load_history(host: HostDir) -> list[dict[str, Any]]:
    path = history_path(host)
    data = safeload.load_json(path, "the upgrade history", "move it aside (the upgrade history "
                              "starts again) and retry", missing_ok=True)
    entries = data.get("upgrades") if isinstance(data, dict) else None
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


def save_history(host: HostDir, entries: list[dict[str, Any]]) -> None:
    host.state_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(history_path(host), json.dumps({"upgrades": entries}, indent=2) + "\n", mode=0o600)


def record(host: HostDir, entry: dict[str, Any]) -> None:
    """Add ``entry`` to the history, or replace the one with its id."""
    entries = [e for e in load_history(host) if e.get("id") != entry["id"]]
    save_history(host, [*entries, entry])


def versions_summary(entry: dict[str, Any]) -> dict[str, Any]:
    """What the host registry and bundles keep of a finished upgrade or rollback: the versions
    before and after it, without local paths (a safety backup's means nothing elsewhere)."""
    def versions_of(side: Any) -> dict[str, Any]:
        side = side if isinstance(side, dict) else {}
        images = side.get("images") if isinstance(side.get("images"), dict) else {}
        return {"images": {str(k): str(v) for k, v in images.items()},
                "code_revision": side.get("code_revision")}

    return {"kind": entry.get("kind"), "id": entry.get("id"), "finished_at": entry.get("finished_at"),
            "before": versions_of(entry.get("before")), "after": versions_of(entry.get("after"))}


def finished_changes(host: HostDir) -> list[dict[str, Any]]:
    """The versions summary of every upgrade and rollback that succeeded, oldest first."""
    return [versions_summary(e) for e in load_history(host) if e.get("outcome") == "succeeded"]
