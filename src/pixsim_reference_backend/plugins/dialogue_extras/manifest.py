"""Extra dialogue lines keyed on romance stages."""

from typing import Any

manifest = {
    "id": "dialogue_extras",
    "name": "Dialogue Extras",
    "version": "0.3.0",
    "description": "Stage-aware greetings built on top of the romance plugin.",
    "kind": "route",
    "dependencies": ["romance"],
    "enabled": True,
    "required": False,
    "permissions": ["world:read"],
    "requires_db": False,
    "requires_redis": False,
}

GREETINGS = {
    "stranger": "Hello.",
    "friend": "Good to see you!",
    "partner": "There you are.",
}


def greetings(request_info: dict[str, Any]) -> tuple[int, Any]:
    stage = request_info.get("query", {}).get("stage", [None])[0]
    if stage is None:
        return 200, {"greetings": GREETINGS}
    if stage not in GREETINGS:
        return 404, {"detail": f"no greeting for stage {stage!r}"}
    return 200, {"stage": stage, "greeting": GREETINGS[stage]}


routes = {"/greetings": greetings}
