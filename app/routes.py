"""Keel's route groups, assembled from the domains' controllers.

Four groups replace the seed's separate services: the public site `/`, the admin dashboard
`/admin`, the JSON API `/api/v1` and the plugin API `/api/plugins`; plus operator
endpoints (`/health...`, `/metrics`) and static files. Each is a `RouteGroup` owned by
Keel in the app's route group registry (`app.core.routing`), where a plugin adds its own.
"""

from __future__ import annotations

import errno
from typing import Any

from litestar import Router
from litestar.datastructures import CacheControlHeader
from litestar.file_system import BaseLocalFileSystem
from litestar.static_files import create_static_files_router
from litestar.types import PathType

from app.accounts.api.api_keys import ApiKeysController
from app.accounts.api.audit import AuditController
from app.accounts.api.auth import AuthController
from app.accounts.api.users import UsersController
from app.accounts.guards import roles
from app.accounts.pages.account import AccountController
from app.accounts.pages.api_keys import ApiKeysAdminController
from app.accounts.pages.audit import AuditAdminController
from app.accounts.pages.reset import ForgotPasswordController, PasswordResetController
from app.accounts.pages.sign_in import SignInController
from app.accounts.pages.users import UsersAdminController
from app.accounts.pages.verify import VerifyEmailController
from app.analytics.api import AnalyticsController, StatsController
from app.analytics.pages import AnalyticsAdminController
from app.content.api.entries import ContentController
from app.content.api.media import MediaController
from app.content.pages.admin import ContentAdminController
from app.content.pages.media import MediaAdminController, MediaFilesController
from app.content.pages.public import PublicPagesController, hold_site_zone
from app.core.routing import RouteGroup
from app.core.templating import STATIC_DIR, STATIC_PREFIX
from app.extensions.api import PluginIndexController, PluginsAdminController, plugin_mounts
from app.extensions.pages import PluginsAdminPages
from app.jobs.api import JobsController
from app.jobs.pages.admin import JobsAdminController
from app.notifications.pages import NotificationsController, OutboxAdminController
from app.system.api import (
    ApiIndexController,
    HealthController,
    MetricsController,
    SettingsController,
    SiteController,
)
from app.system.pages import (
    AdminDashboardController,
    SettingsAdminController,
    SystemAdminController,
)

ONE_YEAR = 365 * 24 * 3600
NO_SUCH_NAME = frozenset({errno.ENAMETOOLONG, errno.ENOTDIR, errno.ELOOP, errno.EINVAL})


class StaticFiles(BaseLocalFileSystem):
    """The static folder, where a name no file can have (too long, a NUL, a path below a
    file such as `css/app.css/x`) is not found, as any other missing file: Litestar turns
    every OSError but FileNotFoundError into a 500."""

    async def info(self, path: PathType, **kwargs: Any) -> Any:
        try:
            return await super().info(path, **kwargs)
        except ValueError as exc:  # os.stat: "embedded null byte"
            raise FileNotFoundError(str(path)) from exc
        except OSError as exc:
            if exc.errno in NO_SUCH_NAME:
                raise FileNotFoundError(str(path)) from exc
            raise


def public_site() -> Router:
    return Router(
        path="/",
        before_request=hold_site_zone,
        route_handlers=[
            PublicPagesController,
            SignInController,
            AccountController,
            PasswordResetController,
            ForgotPasswordController,
            VerifyEmailController,
            NotificationsController,
            MediaFilesController,
        ],
    )


def admin() -> Router:
    return Router(
        path="/admin",
        before_request=hold_site_zone,
        route_handlers=[
            AdminDashboardController,
            AnalyticsAdminController,
            UsersAdminController,
            ApiKeysAdminController,
            AuditAdminController,
            MediaAdminController,
            ContentAdminController,
            JobsAdminController,
            OutboxAdminController,
            PluginsAdminPages,
            SettingsAdminController,
            SystemAdminController,
        ],
    )


def api() -> Router:
    return Router(
        path="/api/v1",
        route_handlers=[
            ApiIndexController,
            PluginsAdminController,
            SettingsController,
            SiteController,
            AuthController,
            UsersController,
            ApiKeysController,
            AuditController,
            MediaController,
            ContentController,
            JobsController,
            StatsController,
            AnalyticsController,
        ],
    )


def plugin_api() -> Router:
    """The plugin index and the mounts each active plugin is served under (`/api/plugins/
    <name>/…`, `/p/<name>/…`, `/admin/plugins/<name>/…`)."""
    return Router(path="/", route_handlers=[PluginIndexController, *plugin_mounts()])


def operator_endpoints() -> Router:
    return Router(path="/", route_handlers=[HealthController, MetricsController])


def static_files() -> Router:
    return create_static_files_router(
        path=STATIC_PREFIX,
        directories=[STATIC_DIR],
        file_system=StaticFiles(),
        name="static",
        cache_control=CacheControlHeader(max_age=ONE_YEAR, public=True, immutable=True),
        include_in_schema=False,
        guards=[roles.public],
    )


def route_groups() -> list[RouteGroup]:
    """Keel's own route groups, in the order they are mounted."""
    return [
        RouteGroup("public", public_site),
        RouteGroup("admin", admin),
        RouteGroup("api", api),
        RouteGroup("plugin-api", plugin_api),
        RouteGroup("operator", operator_endpoints),
        RouteGroup("static", static_files),
    ]
