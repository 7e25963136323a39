"""`keel.plugin`: the one module of Keel a plugin imports (interface version API_VERSION).

Everything a plugin needs of Keel is here; nothing else of Keel is part of the contract
(`app.*` may change in any release). A plugin may import third-party libraries itself
(litestar, sqlalchemy, ...). Import its own modules relatively (`from .models import X`):
Keel loads a plugin's package under a module name of its own for each load.

A plugin (`plugins/<name>/`, entry point `"<package>.<module>:<Class>"` in plugin.toml)
is a subclass of `Plugin`:

    from keel.plugin import Context, Plugin, get, public

    @get("/greeting", guards=[public])
    async def greeting(ctx: Context) -> dict[str, str]:
        return {"hello": ctx.name}

    class Hello(Plugin):
        api_routes = [greeting]        # served under /api/plugins/<name>/

Routes:
- `api_routes` are served under `/api/plugins/<name>/`, `pages` under `/p/<name>/`,
  `admin_pages` under `/admin/plugins/<name>/` (signed-in viewers and up, at least).
  Each is a list of Litestar route handlers or controllers (`get`, `post`, `put`,
  `delete`, `Controller`; a JSON body is `data: JSONBody[...]`). Every handler states
  who may call it with a guard:
  `public`, `requires_viewer`, `requires_editor`, `requires_admin`.
- A handler's `ctx: Context` parameter is the plugin's `PluginContext`. Errors answer as Keel's
  do: problem details with an error id on the API, the error page on pages; raise
  `NotFound`, `Forbidden`, `Conflict` or `InvalidField` for a refusal.
- Every handler and hook runs under the plugin's time limit (`time_limit` in plugin.toml,
  seconds, capped by the site's PLUGIN_TIME_LIMIT_SECONDS): past it the request answers
  504; an exception answers 500. Both are counted per plugin in `/metrics`.
- Templates live in `<plugin folder>/templates/` (name them `<name>/…` so they never
  shadow Keel's); `ctx.render(request, "<name>/page.html", {...})` renders one; Keel's
  layouts and macros can be extended and imported. Static files in `<folder>/static/`
  are served at `/p/<name>/static/…` (`plugin_static("app.css")` in a template).

Hooks (each `async`, given the `PluginContext`; a hook that raises or runs too long
leaves the plugin in `error` with the message, never half-installed):
`on_install(ctx)` after its storage and migrations exist; `on_activate(ctx)`;
`on_deactivate(ctx)`; `on_uninstall(ctx)` before its data is removed;
`on_update(ctx, old_version)` after an update's migrations.

Reading fast: `ctx.reads.one(query, **params)` / `ctx.reads.all(...)` run a `ReadQuery`
(a `select()` with named `bindparam()`s, built once) in one round trip, without a session,
as the plugin's role (PostgreSQL) on connections of its own; for pages that only read.

Visitors' forms and open API routes: `client_address(request)` is the caller's address
as Keel resolved it, and `await rate_limit(ctx, request, "sign", limit=5, per_seconds=3600)`
counts one use of an action by that address, shared by every Keel process through the
store, raising `TooManyRequests` (429 with Retry-After) past the limit.

Lists in pages: `page: FromQuery[PageNumber] = 1, per_page: FromQuery[PerPage] = 20`
take `?page=` and `?per_page=` as Keel's own lists do (any number a BIGINT holds, more is
a 400); `PageRequest.of(page, per_page)` clamps them (page 1 and up, 1 to 100 a page), and
`await paginate(session, select(...), request)` gives a `Page` (`items`, `total`, `page`,
`per_page`, `pages`, `has_previous`, `has_next`; `page.map(convert)`, and
`page.envelope(items)`, the API's list body). In a template, Keel's
`{{ ui.pager(page, params) }}` macro (`components/ui.html`) links the pages.

Also declared on the class: `admin_menu_label` (the admin menu's entry for its first
admin page), `jobs` (`Job("<name>.x", run)`: `async def run(ctx, job)` runs in Keel's
worker under the time limit), `schedules` (`Schedule("<name>.hourly", "<name>.x",
every=timedelta(hours=1))` or `daily_at=time(3)`), `subscriptions`
(`{ENTRY_PUBLISHED: handler}`: `async def handler(ctx, event)`, see Events below)
and `widgets` (dashboard widgets). Job and schedule names start with `<name>.`; they
exist only while the plugin is active.

Events: `subscriptions` maps an event name to `async def handler(ctx, event)`, called
with the plugin's context and the event's payload, a frozen dataclass of plain values
(`EntryEvent`, `UserEvent`, `MediaEvent`; each has `name`). A handler hears only
committed changes (never one that rolled back), in the process that committed it (a web
process for the API and admin pages, `keel worker` for a CSV import, the `keel` command
for the CLI), once per change, under the plugin's time limit; one that raises or runs too
long is counted and logged, and the change stays committed. The names:
`ENTRY_PUBLISHED`, `ENTRY_UPDATED`, `ENTRY_UNPUBLISHED`, `ENTRY_DELETED`, `USER_CREATED`,
`USER_DELETED`, `USER_ROLE_CHANGED`, `MEDIA_UPLOADED` (docs/plugins.md, Events, says when
each fires and what it carries). Any other name is refused when the plugin loads.

Dashboard widgets: `widgets = [Widget("Broken links", render)]`, where
`async def render(ctx, request)` returns `ctx.render(request, "<name>/widget.html", {...})`
(or a string, shown as text). The admin dashboard fetches each widget as a fragment of its
own, under the plugin's time limit: one that raises or runs too long shows a small "this
widget failed" box (counted as a failed hook `widget:<n>`), never a broken dashboard.

Shared data: `ctx.shared.published_entries` is a read-only SQLAlchemy table of the entries
visitors can read now (`id`, `kind`, `title`, `slug`, `path`, `body_html`, `published_at`,
`updated_at`), read with `ctx.session()`; on PostgreSQL the plugin's role may read it,
though it has no privilege on Keel's tables.
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar

from litestar import Controller, Request, Response, delete, get, patch, post, put
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.response import Redirect, Template

from app.accounts.guards.roles import admin as requires_admin
from app.accounts.guards.roles import editor as requires_editor
from app.accounts.guards.roles import public
from app.accounts.guards.roles import viewer as requires_viewer
from app.accounts.services.events import (
    USER_CREATED,
    USER_DELETED,
    USER_ROLE_CHANGED,
    UserEvent,
)
from app.content.services.events import (
    ENTRY_DELETED,
    ENTRY_PUBLISHED,
    ENTRY_UNPUBLISHED,
    ENTRY_UPDATED,
    MEDIA_UPLOADED,
    EntryEvent,
    MediaEvent,
)
from app.core.errors import (
    Conflict,
    Forbidden,
    InvalidField,
    InvalidFields,
    NotFound,
    TooManyRequests,
)
from app.core.pagination import Page, PageNumber, PageRequest, PerPage, paginate
from app.core.reads import ReadQuery
from app.core.runtime import runtime_of
from app.extensions.services.host import Context, Job, PluginContext, Widget
from app.jobs.services.registry import JobContext
from app.jobs.services.schedules import Schedule

API_VERSION = "1.0"
"""The version of this interface: a minor release adds, a major one may change."""

log = logging.getLogger("keel.plugin")

__all__ = [
    "API_VERSION",
    "Conflict",
    "Context",
    "Controller",
    "Forbidden",
    "FromPath",
    "FromQuery",
    "InvalidField",
    "InvalidFields",
    "JSONBody",
    "Job",
    "JobContext",
    "NotFound",
    "Page",
    "PageNumber",
    "PageRequest",
    "PerPage",
    "Plugin",
    "PluginContext",
    "ReadQuery",
    "Redirect",
    "Request",
    "Response",
    "Schedule",
    "Template",
    "TooManyRequests",
    "Widget",
    "client_address",
    "delete",
    "get",
    "paginate",
    "patch",
    "post",
    "public",
    "put",
    "rate_limit",
    "requires_admin",
    "requires_editor",
    "requires_viewer",
]


class Plugin:
    """What a plugin provides; subclass it and set what you use (all optional)."""

    api_routes: ClassVar[list[Any]] = []
    """Route handlers and controllers served under `/api/plugins/<name>/`."""
    pages: ClassVar[list[Any]] = []
    """Route handlers and controllers served under `/p/<name>/` (public pages)."""
    admin_pages: ClassVar[list[Any]] = []
    """Route handlers and controllers served under `/admin/plugins/<name>/`."""
    admin_menu_label: ClassVar[str | None] = None
    """The admin menu's label for the plugin's admin pages (None: no entry)."""
    jobs: ClassVar[list[Job]] = []
    """Job types the plugin adds to Keel's queue (`Job("<name>.x", run)`)."""
    schedules: ClassVar[list[Schedule]] = []
    """Periodic jobs: which job type to enqueue, and how often."""
    subscriptions: ClassVar[dict[str, Any]] = {}
    """Keel events to follow: event name -> `async def handler(ctx, event)` (after COMMIT)."""
    widgets: ClassVar[list[Widget]] = []
    """Dashboard widgets (`Widget("Title", render)`), shown on /admin while active."""

    async def on_install(self, ctx: PluginContext) -> None:
        """Once, after the plugin's storage and migrations exist."""

    async def on_activate(self, ctx: PluginContext) -> None:
        """Each time an admin activates the plugin."""

    async def on_deactivate(self, ctx: PluginContext) -> None:
        """Each time an admin deactivates the plugin."""

    async def on_uninstall(self, ctx: PluginContext) -> None:
        """Before the plugin's data is removed."""

    async def on_update(self, ctx: PluginContext, old_version: str) -> None:
        """After a new version's migrations ran; `old_version` is the one it replaces."""


def client_address(request: Request[Any, Any, Any]) -> str:
    """The caller's address as Keel resolved it (X-Forwarded-For counts only from the
    site's TRUSTED_PROXIES); "unknown" when there is none."""
    return str(request.scope.get("state", {}).get("client_ip") or "unknown")


async def rate_limit(
    ctx: PluginContext,
    request: Request[Any, Any, Any],
    action: str,
    *,
    limit: int,
    per_seconds: int = 60,
) -> None:
    """Count one `action` by the request's client address in the current window of
    `per_seconds`; past `limit` in that window raise TooManyRequests (429, Retry-After:
    the seconds until the window ends). The count is shared by every Keel process through
    the store; when the store does not answer, the action is let through (logged)."""
    runtime = runtime_of(request.app.state)
    now = runtime.clock.time()
    window = int(now // per_seconds)
    retry_after = max(int(per_seconds - now % per_seconds), 1)
    key = f"plugin:{ctx.name}:rate:{action}:{client_address(request)}:{window}"
    try:
        used = await runtime.store.incr(key, ttl=per_seconds + 1)
    except Exception as exc:  # a limit must never be why a request fails
        log.warning(
            "plugin rate limit store failed; allowed",
            extra={"plugin": ctx.name, "error": repr(exc)},
        )
        return
    if used > limit:
        raise TooManyRequests(
            f"Too many requests: at most {limit} every {per_seconds} s. "
            f"Try again in {retry_after} s.",
            retry_after,
        )


# -- events (see "Events" in the module docstring) ------------------------------------------

__all__ += [
    "ENTRY_DELETED",
    "ENTRY_PUBLISHED",
    "ENTRY_UNPUBLISHED",
    "ENTRY_UPDATED",
    "MEDIA_UPLOADED",
    "USER_CREATED",
    "USER_DELETED",
    "USER_ROLE_CHANGED",
    "EntryEvent",
    "MediaEvent",
    "UserEvent",
]
