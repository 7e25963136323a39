"""The plugin admin API's shapes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from app.extensions.services.lifecycle import PluginView


class PluginOut(msgspec.Struct):
    name: str
    version: str
    display_name: str
    description: str
    author: str
    status: str
    """`uploaded`, `installed`, `active`, `inactive`, `error`; `available` for a folder under
    PLUGINS_DIR not installed yet."""
    installed_at: datetime | None
    updated_at: datetime | None
    checksum: str | None
    signed: bool
    error: str | None
    files_changed: bool
    """The files on disk differ from those accepted at install: activation is refused."""
    settings: dict[str, Any]
    capabilities: list[str]

    @classmethod
    def of(cls, view: PluginView) -> PluginOut:
        """Not a plain copy: a row, a folder or both make one plugin."""
        row, found = view.record, view.found
        if row is not None:
            return cls(
                name=row.name,
                version=row.version,
                display_name=row.display_name,
                description=row.description,
                author=row.author,
                status=row.status,
                installed_at=row.installed_at,
                updated_at=row.updated_at,
                checksum=row.checksum,
                signed=row.signature is not None,
                error=row.error,
                files_changed=view.files_changed,
                settings=dict(row.settings or {}),
                capabilities=list(row.manifest.get("capabilities", [])),
            )
        return cls(
            name=view.name,
            version=found.version if found else "",
            display_name=found.display_name if found else view.name,
            description=found.description if found else "",
            author=found.author if found else "",
            status="available" if found else "error",
            installed_at=None,
            updated_at=None,
            checksum=None,
            signed=False,
            error=view.problem,
            files_changed=False,
            settings={},
            capabilities=list(found.capabilities) if found else [],
        )


class ConfirmIn(msgspec.Struct):
    confirm: bool = False
    """Uninstalling removes the plugin's data: `true` to go ahead."""


class PluginSettingsIn(msgspec.Struct):
    values: dict[str, Any]
    """The plugin's settings, checked against the schema in its manifest."""
