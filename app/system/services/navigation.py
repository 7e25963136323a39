"""The admin menu: the sections the admin pages link to, in `ADMIN_MENU` (an
`app.core.registry.Registry`) so a plugin adds its own section while Keel runs."""

from __future__ import annotations

from dataclasses import dataclass

from litestar import Request

from app.accounts.models import Role
from app.core.registry import KEEL, Registry


@dataclass(frozen=True)
class AdminLink:
    """One menu entry: `key` is what a page sets as `active` to be marked current."""

    key: str
    label: str
    route: str
    """The route name the link points to."""
    role: Role = Role.guest
    """Who sees it (anyone who reaches an admin page when `guest`)."""
    parameters: tuple[tuple[str, str], ...] = ()
    """The route's path parameters, when it has any (a plugin's admin mount: its name)."""

    @property
    def path_parameters(self) -> dict[str, str]:
        return dict(self.parameters)


ADMIN_MENU: Registry[str, AdminLink] = Registry("admin menu entry", key=lambda link: link.key)

for _link in (
    AdminLink("dashboard", "Dashboard", "admin:dashboard"),
    AdminLink("analytics", "Analytics", "admin:analytics", Role.viewer),
    AdminLink("content", "Content", "admin:content"),
    AdminLink("media", "Media", "admin:media"),
    AdminLink("users", "Users", "admin:users"),
    AdminLink("jobs", "Jobs", "admin:jobs"),
    AdminLink("api_keys", "API keys", "admin:api_keys", Role.admin),
    AdminLink("audit", "Audit log", "admin:audit", Role.admin),
    AdminLink("outbox", "Outbox", "admin:outbox", Role.admin),
    AdminLink("plugins", "Plugins", "admin:plugins", Role.admin),
    AdminLink("settings", "Settings", "admin:settings", Role.admin),
    AdminLink("system", "System", "admin:system", Role.admin),
):
    ADMIN_MENU.add(KEEL, _link)


def admin_menu(request: Request) -> list[AdminLink]:
    """The entries the caller may see whose page the app serves now (a plugin's entry whose
    routes are gone is left out rather than breaking every admin page)."""
    user = request.scope.get("user")
    role = user.role if user is not None else Role.guest
    served = request.app.asgi_router.route_handler_index
    return [link for link in ADMIN_MENU if role >= link.role and link.route in served]


PLUGIN_ADMIN_ROUTE = "plugins:mount:admin"
"""The one route of every plugin's admin pages (`/admin/plugins/<plugin>/…`)."""


class PluginMenuEntries:
    """An active plugin's entry in `ADMIN_MENU`, added by the plugin host when it loads the
    plugin (its `admin_menu_label`) and dropped when it unloads it."""

    def show(self, owner: str, plugin: str, label: str) -> None:
        link = AdminLink(
            f"plugin:{plugin}",
            label,
            PLUGIN_ADMIN_ROUTE,
            Role.viewer,  # Keel's guard on the admin mount; the plugin's may ask more
            (("plugin", plugin),),
        )
        ADMIN_MENU.add(owner, link)

    def hide(self, owner: str) -> None:
        ADMIN_MENU.remove(owner)
