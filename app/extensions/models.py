"""Tables of the plugin host: the registry of installed plugins (the truth every process
follows) and the plugin migrations each one has run."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from advanced_alchemy.base import DefaultBase
from advanced_alchemy.types import DateTimeUTC, JsonB
from sqlalchemy import ForeignKey, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column


class PluginStatus(enum.StrEnum):
    uploaded = "uploaded"
    """An admin uploaded its zip (kept in `archive`); not installed yet."""
    installed = "installed"
    """Installed (storage made, migrations and `on_install` run), never activated yet."""
    active = "active"
    inactive = "inactive"
    error = "error"
    """A lifecycle step failed; `error` says which and why. Nothing of the plugin runs."""


class PluginRecord(DefaultBase):
    """One installed plugin. Every change bumps `generation`; each process compares it with
    the generation it loaded to follow activations made elsewhere."""

    __tablename__ = "plugin_registry"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    version: Mapped[str] = mapped_column(String(64))
    display_name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(Text, default="")
    author: Mapped[str] = mapped_column(String(200), default="")
    manifest: Mapped[dict[str, Any]] = mapped_column(JsonB)
    status: Mapped[str] = mapped_column(String(16))
    installed_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    checksum: Mapped[str] = mapped_column(String(64))
    """SHA-256 (hex) over the plugin's files, recorded at install and at `accept`."""
    signature: Mapped[str | None] = mapped_column(String(200))
    """Ed25519 over the checksum (base64), when the plugin came signed."""
    error: Mapped[str | None] = mapped_column(Text)
    archive: Mapped[bytes | None] = mapped_column(LargeBinary)
    """The uploaded zip, so every replica can unpack the same files without a shared disk."""
    generation: Mapped[int] = mapped_column(Integer, default=1)
    settings: Mapped[dict[str, Any]] = mapped_column(JsonB, default=dict)
    """The plugin's settings as an admin saved them (validated against its manifest's schema)."""


class PluginMigration(DefaultBase):
    """A plugin migration that ran (by file name, in the plugin's own storage)."""

    __tablename__ = "plugin_migrations"

    plugin: Mapped[str] = mapped_column(
        String(40), ForeignKey("plugin_registry.name", ondelete="CASCADE"), primary_key=True
    )
    migration: Mapped[str] = mapped_column(String(200), primary_key=True)
    applied_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
