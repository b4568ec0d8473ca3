"""The HTTP side of game_npcs (see ../npcs): same id, kind route."""

from typing import Any

manifest = {
    "id": "game_npcs",
    "name": "Game NPCs API",
    "version": "1.0.0",
    "description": "Read-only NPC endpoints.",
    "kind": "route",
    "dependencies": ["stats_basic"],
    "enabled": True,
    "required": False,
    "permissions": ["world:read"],
    "requires_db": True,
    "requires_redis": False,
}

NPCS = [{"id": 1, "name": "Mara", "mood": 10}, {"id": 2, "name": "Tobin", "mood": -5}]


def list_npcs(request_info: dict[str, Any]) -> tuple[int, Any]:
    return 200, {"npcs": NPCS}


routes = {"/npcs": list_npcs}
