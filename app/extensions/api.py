"""The plugin API route group, `/api/plugins`: the plugins this installation has."""

from __future__ import annotations

from typing import Any

from litestar import Controller, get

from app.accounts.guards import roles
from app.core.runtime import AppRuntime
from app.extensions.services.manifest import discover_plugins


class PluginIndexController(Controller):
    path = "/"
    tags = ["plugins"]
    guards = [roles.public]

    @get("/", name="plugins:index")
    async def list_plugins(self, runtime: AppRuntime) -> dict[str, Any]:
        """Plugins found under plugins/; their own routes mount under /api/plugins/<name>/."""
        manifests, _ = discover_plugins(runtime.settings.app.plugins_dir)
        items = [
            {"name": m.name, "version": m.version, "description": m.description} for m in manifests
        ]
        return {"items": items, "total": len(items)}
