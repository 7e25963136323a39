"""Every domain's tables, imported in one place so Alembic and tests see the whole schema."""

from __future__ import annotations

from advanced_alchemy.base import metadata_registry

from app.accounts.models import ApiKey, AuditEntry, User
from app.system.models import SystemSetting

metadata = metadata_registry.get(None)

__all__ = ("ApiKey", "AuditEntry", "SystemSetting", "User", "metadata")
