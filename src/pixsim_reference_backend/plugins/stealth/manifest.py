"""Stealth mechanics; needs the basic stats for its detection meter."""

manifest = {
    "id": "game_stealth",
    "name": "Stealth",
    "version": "1.0.0",
    "description": "Detection and noise stats layered on the basic stat package.",
    "kind": "feature",
    "dependencies": ["stats_basic"],
    "enabled": True,
    "required": False,
    "permissions": ["world:read"],
    "requires_db": True,
    "requires_redis": False,
}
