"""NPC state, as a feature plugin. The route plugin in npcs_api shares its id, game_npcs:
one plugin that is both a feature and a route plugin, listed in both lists."""

manifest = {
    "id": "game_npcs",
    "name": "Game NPCs",
    "version": "1.0.0",
    "description": "NPC schedules and moods built on the basic stats.",
    "kind": "feature",
    "dependencies": ["stats_basic"],
    "enabled": True,
    "required": False,
    "permissions": ["world:read"],
    "requires_db": True,
    "requires_redis": False,
}
