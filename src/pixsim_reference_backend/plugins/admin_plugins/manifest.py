"""The plugin diagnostics endpoints: /api/v1/admin/plugins/list and /{id}/details.

The server implements them; they exist only while this plugin is enabled, so denying
admin_plugins removes them (404), as upstream does.
"""

manifest = {
    "id": "admin_plugins",
    "name": "Admin Plugin Diagnostics",
    "version": "1.0.0",
    "description": "Admin endpoints listing the loaded plugins and their details.",
    "kind": "route",
    "dependencies": [],
    "enabled": True,
    "required": False,
    "permissions": ["admin:routes"],
    "requires_db": False,
    "requires_redis": False,
}
