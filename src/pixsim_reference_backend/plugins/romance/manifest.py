"""Relationship tracking, exposed as a route plugin."""

from typing import Any

manifest = {
    "id": "romance",
    "name": "Romance",
    "version": "1.2.0",
    "description": "Affinity and relationship stages between NPCs and the player.",
    "kind": "route",
    "dependencies": ["stats_basic"],
    "enabled": True,
    "required": False,
    "permissions": ["world:read", "session:write"],
    "requires_db": True,
    "requires_redis": False,
}

STAGES = ["stranger", "acquaintance", "friend", "close", "partner"]


def status(request_info: dict[str, Any]) -> tuple[int, Any]:
    return 200, {"plugin": "romance", "status": "ok", "stages": STAGES}


routes = {"/status": status}
