"""Every domain's tables, imported in one place so Alembic (`migrations/env.py`) and the tests
see the whole schema. It sits beside `asgi.py` and `routes.py`, above the domains: `app.core`
knows no domain, so no table."""

from __future__ import annotations

from advanced_alchemy.base import metadata_registry

from app.accounts.models import (
    ApiKey,
    AuditEntry,
    RefreshToken,
    RevokedAccessToken,
    TokenFamily,
    User,
)
from app.analytics.models import RequestStat, ViewStat
from app.content.models import Entry, Media, Revision, Tag, entry_tags
from app.extensions.models import PluginMigration, PluginRecord
from app.jobs.models import ImportRun, Job, JobSchedule
from app.notifications.models import MailMessage, Notification
from app.site_settings.models import SystemSetting

metadata = metadata_registry.get(None)

__all__ = (
    "ApiKey",
    "AuditEntry",
    "Entry",
    "ImportRun",
    "Job",
    "JobSchedule",
    "MailMessage",
    "Media",
    "Notification",
    "PluginMigration",
    "PluginRecord",
    "RefreshToken",
    "RequestStat",
    "Revision",
    "RevokedAccessToken",
    "SystemSetting",
    "Tag",
    "TokenFamily",
    "User",
    "ViewStat",
    "entry_tags",
    "metadata",
)
