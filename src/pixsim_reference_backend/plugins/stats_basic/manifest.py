"""Base stat package that other example plugins build on."""

manifest = {
    "id": "stats_basic",
    "name": "Basic Stats",
    "version": "1.0.0",
    "description": "Core stat definitions (health, energy, mood) shared by other plugins.",
    "kind": "feature",
    "dependencies": [],
    "enabled": True,
    "required": False,
    "permissions": [],
    "requires_db": False,
    "requires_redis": False,
}

STAT_DEFINITIONS = {
    "health": {"min": 0, "max": 100, "default": 100},
    "energy": {"min": 0, "max": 100, "default": 80},
    "mood": {"min": -100, "max": 100, "default": 0},
}
