"""`PluginHost`: the active plugins this process runs, kept in step with `plugin_registry`.

The database row is the truth. `sync()` reads the registry and loads every active plugin
not loaded here (or loaded at another generation or checksum) and unloads every loaded
one that is no longer active. A plugin is imported from `PLUGINS_DIR/<name>/` under a
module name of its own for each load (`keel_plugin_<name>_<generation>_<n>`, never by
putting the plugins folder on `sys.path`), its entry point instantiated, and its routes
built into three small Litestar apps (API, public pages, admin pages) with Keel's
exception handler, its own templates and its static files. Keel's router has fixed
mounts (`/api/plugins/{name}/…`, `/p/{name}/…`, `/admin/plugins/{name}/…`, see
`app/extensions/api.py`) that hand a request to the plugin's app held in a dict; a load
or an unload replaces the dict entry, so a request sees the old plugin or the new one,
never half of either. An inactive plugin answers 404 and costs other routes nothing.

Only the files an admin accepted run: before a load, the checksum of the plugin's folder
here (computed once per generation) must equal the row's. A folder that is missing or
differs is unpacked from the zip the registry keeps for an uploaded plugin (so replicas
need no shared disk); if it still differs, or the plugin came from a folder and has no zip,
the plugin is not loaded here. A loaded plugin's `admin_menu_label` adds its entry to
Keel's admin menu (`admin_menu`, given by `create_app`) until it is unloaded.

Every process follows changes made elsewhere (`follow()`): the store channel
`plugins:changed` (published by `announce()` after the lifecycle's COMMIT) and a poll of
`name, generation, status` every POLL_SECONDS, so a change is seen within 2 s even with
the store away. A plugin that fails to import is not loaded here, logged once and
counted; the process never goes down for it.

Every plugin request runs under the plugin's time limit (manifest `time_limit`, capped by
PLUGIN_TIME_LIMIT_SECONDS): a timeout answers 504, an exception 500, both with an error
id, and both are counted per plugin in `/metrics`. Hooks run the same way (`call_hook`).
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.machinery
import importlib.util
import inspect
import itertools
import json
import logging
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from jinja2 import Environment, FileSystemLoader, pass_context
from litestar import Litestar, Request, Response, Router
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.exceptions import NoRouteMatchFoundException, NotFoundException
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.static_files import create_static_files_router
from litestar.template import TemplateConfig
from litestar.types import Message, Receive, Scope, Send
from markupsafe import Markup, escape
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Role
from app.accounts.services.audit import Actor
from app.accounts.services.events import USER_EVENTS
from app.content.services.events import ENTRY_EVENTS, MEDIA_EVENTS
from app.core.boundary import BoundaryRequest
from app.core.errors import Forbidden, ServiceUnavailable, handle_exception
from app.core.events import Event, Events, has_undelivered
from app.core.metrics import Metric, Tally, stored
from app.core.queueing import enqueue
from app.core.reads import Reads
from app.core.registry import Registry, RegistryClash
from app.core.runtime import RUNTIME_KEY, Runtime, runtime_of
from app.core.store import Store
from app.core.tasks import cancel_and_wait, stop_if_cancelled
from app.core.templating import (
    TEMPLATES_DIR,
    URLS_KEPT,
    render,
    share_keel_templating,
    site_address,
)
from app.core.widgets import DashboardWidget, WidgetFailed
from app.extensions.services import archive, isolation, signing
from app.jobs.services.jobs import submit_job
from app.jobs.services.registry import JOB_TYPES, JobContext, JobType
from app.jobs.services.schedules import SCHEDULES, Schedule

log = logging.getLogger("keel.plugins")

CHANNEL = "plugins:changed"
"""The store channel a lifecycle change is announced on (after its COMMIT)."""
POLL_SECONDS = 1.0
"""How often each process compares the registry with what it runs (the store may be away)."""
DEFAULT_TIME_LIMIT = 10.0
"""A plugin's time limit when its manifest names none (always capped by the settings)."""
KEEL_APP_SCOPE = "keel_app"
"""Where a plugin request's scope keeps Keel's own app (its templates' `url_for`)."""

API, PAGES, ADMIN = "api", "pages", "admin"
MOUNT_PREFIXES = {API: "/api/plugins", PAGES: "/p", ADMIN: "/admin/plugins"}
"""Each part of a plugin, and where Keel mounts it (`<prefix>/<name>/…`)."""
PLUGIN_EVENTS = (*ENTRY_EVENTS, *USER_EVENTS, *MEDIA_EVENTS)
"""The events a plugin may subscribe to (`subscriptions`); any other name is refused when
the plugin loads, so a misspelt one does not go unnoticed."""

PLUGIN_REQUESTS = stored(
    Metric(
        "keel_plugin_requests_total",
        "counter",
        "Requests a plugin's routes answered, by plugin and outcome: ok (below 400), "
        "refused (4xx), error (5xx: an exception, counted with an error id), timeout "
        "(its time limit passed: 504).",
        ("plugin", "outcome"),
    )
)
PLUGIN_DURATION = stored(
    Metric(
        "keel_plugin_request_seconds",
        "histogram",
        "Time a plugin's routes took to answer, by plugin.",
        ("plugin",),
        (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0),
    )
)
PLUGIN_HOOK_FAILURES = stored(
    Metric(
        "keel_plugin_hook_failures_total",
        "counter",
        "Plugin hooks (on_install, on_activate, an event subscription...) that raised or ran "
        "past the time limit, by plugin, hook and outcome (error, timeout).",
        ("plugin", "hook", "outcome"),
    )
)
PLUGIN_LOAD_FAILURES = stored(
    Metric(
        "keel_plugin_load_failures_total",
        "counter",
        "Active plugins a process could not load (import error, wrong entry point), by plugin.",
        ("plugin",),
    )
)


class PluginLoadFailed(Exception):
    """A plugin's package could not be imported or its entry point is not a plugin."""


class PluginHookFailed(Exception):
    """A plugin hook raised or ran past its time limit; the message says which and why."""


class PluginTimedOut(ServiceUnavailable):
    """A plugin's request handler ran past its time limit: 504."""

    status_code = 504


SubmitJob = Callable[[Request[Any, Any, Any], str, dict[str, Any] | None], Awaitable[int]]
"""`PluginContext.submit_job`: enqueue a job for a request's caller, audited (`submit`)."""

SessionProvider = Callable[[str], AbstractAsyncContextManager[AsyncSession]]
"""A plugin's storage session by plugin name (isolation.plugin_session, wired by Keel)."""


@dataclass(frozen=True)
class RegistryRow:
    """What the host reads of a `plugin_registry` row."""

    name: str
    status: str
    checksum: str
    generation: int
    manifest: Mapping[str, Any]
    version: str = ""
    settings: Mapping[str, Any] = field(default_factory=dict)
    """The plugin's settings as an admin saved them (a change bumps the generation, so the
    plugin is loaded again with them)."""


def manifest_field(manifest: Mapping[str, Any], key: str) -> Any:
    """A manifest value, whether the row keeps the `[plugin]` table or the whole file."""
    if key in manifest:
        return manifest[key]
    table = manifest.get("plugin")
    return table.get(key) if isinstance(table, Mapping) else None


URLS = "keel_plugin_urls"
"""Where a plugin's app keeps the addresses its templates asked for (`_url_for`)."""
PAGE_CONTEXT = "keel_page_context"
"""Where a plugin's public page request keeps Keel's page context (see `page_context`)."""
PageContext = Callable[[Request[Any, Any, Any]], Awaitable[Mapping[str, Any]]]


class PluginContext:
    """What a plugin is given: its name, version, folder, settings, storage, logger,
    template rendering and the job queue (the reference is `keel.plugin`)."""

    def __init__(
        self,
        name: str,
        version: str,
        folder: Path,
        settings: Mapping[str, Any],
        sessions: SessionProvider,
        storage: Any,
        reads: Reads,
        shared: Any = None,
        *,
        site_url: str = "",
        time_limit: float = DEFAULT_TIME_LIMIT,
        submit: SubmitJob | None = None,
    ) -> None:
        self.name = name
        self.version = version
        self.folder = folder
        self.site_url = site_url
        """The site's address (PUBLIC_URL, else where Keel listens), without a final `/`:
        the base of the public paths, in a job as in a request."""
        self.time_limit = time_limit
        """Seconds each request, hook and job of the plugin may run (its manifest's
        `time_limit`, capped by PLUGIN_TIME_LIMIT_SECONDS)."""
        self.settings: dict[str, Any] = dict(settings)
        self.storage = storage
        """Names of the plugin's tables (`storage.table(...)`), where Keel provides them."""
        self.shared = shared
        """The views Keel shares with plugins, as tables (`shared.published_entries`:
        `app/extensions/services/shared.py`), read with `session()`."""
        self.log = logging.getLogger(f"keel.plugin.{name}")
        self.reads = reads
        """Keel's fast read path for the plugin's own tables (`await ctx.reads.one(query,
        **params)` with a `ReadQuery` built once): one round trip, no transaction, as the
        plugin's role on PostgreSQL. For pages that only read; writes use `session()`."""
        self._sessions = sessions
        self._submit = submit

    def session(self) -> AbstractAsyncContextManager[AsyncSession]:
        """A database session on the plugin's own storage, committed when the block ends
        without an error (rolled back otherwise)."""
        return self._sessions(self.name)

    def render(
        self,
        request: Request[Any, Any, Any],
        template: str,
        context: Mapping[str, Any] | None = None,
        *,
        status_code: int = 200,
    ) -> Response[str]:
        """An HTML page from the plugin's `templates/` folder (Keel's templates, such as
        its layouts and macros, are found after the plugin's own)."""
        values = {**request.state.get(PAGE_CONTEXT, {}), **(context or {})}
        return render(request, template, values, status_code=status_code)

    async def enqueue(
        self, session: AsyncSession, type: str, payload: dict[str, Any] | None = None
    ) -> int:
        """Add a job of `type` to Keel's queue in `session`'s transaction (one of the
        plugin's `session()`s: Keel writes the job's row as itself, since the plugin's own
        role may not); its id."""
        async with isolation.as_keel(session, self.name):
            return await enqueue(session, type, payload)

    async def submit_job(
        self, request: Request[Any, Any, Any], type: str, payload: dict[str, Any] | None = None
    ) -> int:
        """Enqueue a job of `type` for the request's caller, as Keel's job form does: the
        caller needs the type's `role` (else Forbidden, 403), the job is theirs (on
        /admin/jobs), the enqueue is audited (`job.enqueue`) and committed at once, in a
        transaction of Keel's own; its id."""
        if self._submit is None:
            raise RuntimeError("no job queue in this process")
        return await self._submit(request, type, payload)


@dataclass(frozen=True)
class Job:
    """A job type a plugin adds to Keel's queue: `run(ctx, job)` gets the plugin's
    context and the job (`job.payload`, `await job.report(percent, message)`). Its name
    starts with `<plugin>.`; it runs under the plugin's time limit, in the worker."""

    name: str
    run: Callable[[PluginContext, JobContext[Any]], Any]
    max_attempts: int = 3
    queue: str = "default"
    payload: type | None = None
    """A msgspec Struct (or dataclass) the payload must fit; None: any JSON object."""
    role: str = "admin"
    """Who may enqueue it (Keel's job form and API, `ctx.submit_job`), cancel and retry
    it: `viewer`, `editor` or `admin`."""


@dataclass(frozen=True)
class Widget:
    """A dashboard widget: `title` heads its panel on /admin; `render(ctx, request)` gives
    its body: `ctx.render(request, "<name>/widget.html", {...})` (a template of the
    plugin's), or a string (shown as text; a `markupsafe.Markup` as HTML). Each widget is
    fetched as a fragment of its own under the plugin's time limit; one that raises or runs
    too long shows "this widget failed" and counts as a failed hook `widget:<n>`."""

    title: str
    render: Callable[[PluginContext, Request[Any, Any, Any]], Any]


Context = NamedDependency[PluginContext]
"""A plugin handler's `ctx` parameter: its PluginContext (`keel.plugin.Context`)."""


@dataclass
class LoadedPlugin:
    """One plugin loaded in this process: its instance, context and apps."""

    name: str
    version: str
    generation: int
    checksum: str
    folder: Path
    module: str
    instance: Any
    context: PluginContext
    time_limit: float
    apps: dict[str, Litestar] = field(default_factory=dict)
    description: str = ""


@dataclass
class PluginFigures:
    """This process's counts per plugin (the admin page shows them; `/metrics` has the
    deployment's)."""

    requests: int = 0
    errors: int = 0
    timeouts: int = 0
    hook_failures: int = 0
    load_failures: int = 0
    last_error: str | None = None
    last_error_at: datetime | None = None
    """When `last_error` happened (UTC)."""

    def note(self, message: str) -> None:
        self.last_error, self.last_error_at = message, datetime.now(UTC)


class AdminMenuEntries(Protocol):
    """Where an active plugin's `admin_menu_label` goes: Keel's admin menu (wired by
    `create_app`; the host cannot import the admin menu's layer)."""

    def show(self, owner: str, plugin: str, label: str) -> None:
        """An entry labelled `label` for `plugin`'s admin pages, under `owner`."""

    def hide(self, owner: str) -> None:
        """Drop `owner`'s entries."""


class NoAdminMenu:
    """A process without an admin menu (`keel worker`)."""

    def show(self, owner: str, plugin: str, label: str) -> None:
        pass

    def hide(self, owner: str) -> None:
        pass


_loads = itertools.count(1)


class PluginHost:
    """The loaded, active plugins of this process (see the module docstring)."""

    def __init__(
        self,
        runtime: Runtime,
        sessions: SessionProvider | None = None,
        storage: Callable[[str], Any] | None = None,
        shared: Any = None,
        settings_of: Callable[[RegistryRow], Mapping[str, Any]] | None = None,
        tally: Tally | None = None,
        reads: Callable[[str], Reads | None] | None = None,
    ) -> None:
        self.runtime = runtime
        self.plugins_dir = runtime.settings.app.plugins_dir
        self.time_limit_cap = runtime.settings.plugins.time_limit_cap
        self.sessions: SessionProvider = sessions or self._shared_session
        """Where a plugin's `ctx.session()` comes from; Keel wires its isolation here."""
        self.storage = storage or (lambda name: None)
        self.shared = shared
        """The views Keel shares with plugins (`shared.SharedViews`), given to each context."""
        self.settings_of = settings_of or _settings_in_manifest
        self.reads_of = reads or (lambda name: None)
        """A plugin's own read path (None: it reads through Keel's, `runtime.reads`)."""
        self._closing: set[asyncio.Task[None]] = set()
        self.tally = tally or runtime.figures
        self.loaded: dict[str, LoadedPlugin] = {}
        """By name; a load or unload replaces the entry (requests read it once)."""
        self.figures: dict[str, PluginFigures] = {}
        self._failed_at: dict[str, tuple[int, str]] = {}
        """Plugins that failed to load here: the (generation, checksum) tried, not retried."""
        self._seen: tuple[tuple[str, int, str], ...] | None = None
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._poll_failing = False
        self.poll_seconds = POLL_SECONDS
        self.admin_menu: AdminMenuEntries = NoAdminMenu()
        """Keel's admin menu, where an active plugin's `admin_menu_label` adds an entry."""
        self.widgets: Registry[str, DashboardWidget] | None = None
        """Keel's dashboard widgets (`create_app` gives `DASHBOARD_WIDGETS`), where an
        active plugin's `widgets` go; None in a process without a dashboard (a worker)."""
        self._checksums: dict[str, tuple[int, str | None]] = {}
        """The checksum of each plugin's folder here, by name: (the generation it was
        computed for, the checksum, None when there is no folder). A poll reads no file."""
        self.template_globals: dict[str, Any] = {}
        """What Keel's templates need beyond core's globals (`create_app` gives the admin
        menu, wrapped by `on_keel_app`), so a plugin's page can extend Keel's layouts."""
        self.page_context: PageContext | None = None
        """What Keel's public pages give their templates (the site's title, the menu
        pages), added to a plugin's pages under /p/ (`create_app` gives it)."""
        self.event_sources: list[Events] = [runtime.events]
        """Where this process's committed events are delivered: the runtime's (requests,
        the CLI) and each worker's (its jobs' transactions, `hear_events_of`). Loaded
        plugins' subscriptions are on all of them."""

    def hear_events_of(self, events: Events) -> None:
        """Deliver the events `events` delivers (a worker's) to the loaded plugins too,
        now and after every load."""
        if any(source is events for source in self.event_sources):
            return
        self.event_sources.append(events)
        for plugin in self.loaded.values():
            self._subscribe_on(events, plugin, _subscriptions(plugin))

    # -- following the registry ----------------------------------------------------------

    async def sync(self) -> bool:
        """Load what is active and not loaded (or stale), unload what is not active.
        Never raises for a plugin or an unreadable registry (logged); True if anything
        changed."""
        async with self._lock:
            try:
                rows = await self._read_rows()
            except Exception as exc:
                log.warning("plugin registry not readable", extra={"error": repr(exc)})
                return False
            for row in rows:
                if self._wants_load(row) and self.files_checksum(row) != row.checksum:
                    await self._unpack_from_registry(row)
            return self._apply(rows)

    def _wants_load(self, row: RegistryRow) -> bool:
        """Active, not loaded here at the row's generation and checksum, not failed at it."""
        if row.status != "active":
            return False
        wanted = (row.generation, row.checksum)
        current = self.loaded.get(row.name)
        if current is not None and (current.generation, current.checksum) == wanted:
            return False
        return self._failed_at.get(row.name) != wanted

    def files_checksum(self, row: RegistryRow) -> str | None:
        """The checksum of the plugin's folder here (None: no folder), computed once per
        generation."""
        cached = self._checksums.get(row.name)
        if cached is not None and cached[0] == row.generation:
            return cached[1]
        folder = self.plugins_dir / row.name
        found = signing.checksum(folder) if folder.is_dir() else None
        self._checksums[row.name] = (row.generation, found)
        return found

    async def _unpack_from_registry(self, row: RegistryRow) -> None:
        """The plugin's folder here is missing or differs from the row's checksum: unpack
        the zip the registry keeps (uploaded through another replica), checked again as
        any upload, over it. A plugin installed from a folder has no zip: nothing to do
        (`_apply` refuses to load it)."""
        try:
            async with self.runtime.sessionmaker() as session:
                data = await session.scalar(
                    text("SELECT archive FROM plugin_registry WHERE name = :name"),
                    {"name": row.name},
                )
            if data is None:
                return
            archive.unpack_archive(
                bytes(data), self.plugins_dir, self.runtime.settings.plugins, replace=True
            )
            log.info("plugin unpacked from the registry", extra={"plugin": row.name})
        except Exception as exc:
            log.warning(
                "plugin archive not unpacked", extra={"plugin": row.name, "error": repr(exc)}
            )
        finally:
            self._checksums.pop(row.name, None)

    async def _read_rows(self) -> list[RegistryRow]:
        async with self.runtime.sessionmaker() as session:
            result = await session.execute(
                text(
                    "SELECT name, status, checksum, generation, manifest, version, settings"
                    " FROM plugin_registry"
                )
            )
            rows = []
            for name, status, checksum, generation, manifest, version, values in result.all():
                if isinstance(manifest, str):  # SQLite's JSON may come back as text
                    manifest = json.loads(manifest)
                if isinstance(values, str):
                    values = json.loads(values)
                rows.append(
                    RegistryRow(
                        name,
                        status,
                        checksum,
                        int(generation),
                        manifest or {},
                        version,
                        values or {},
                    )
                )
            return rows

    def _apply(self, rows: list[RegistryRow]) -> bool:
        active = {row.name: row for row in rows if row.status == "active"}
        changed = False
        for name in [name for name in self.loaded if name not in active]:
            self.unload(name)
            changed = True
        for name in [name for name in self._failed_at if name not in active]:
            del self._failed_at[name]
        for name in [name for name in self._checksums if name not in active]:
            del self._checksums[name]
        for name, row in active.items():
            if not self._wants_load(row):
                continue  # loaded, or tried at this generation already: one warning only
            current = self.loaded.get(name)
            wanted = (row.generation, row.checksum)
            try:
                self._check_files(row)
                plugin = self.load(row)
            except PluginLoadFailed as exc:
                self._failed_at[name] = wanted
                self._count_load_failure(name, str(exc))
                if current is not None:
                    self.unload(name)
                    changed = True
                continue
            self.loaded[name] = plugin  # the swap: one dict assignment
            if current is not None:
                self._forget(current)
            try:
                self._subscribe(plugin)
                self._add_tasks(plugin)
            except (RegistryClash, ValueError, TypeError) as exc:
                self._failed_at[name] = wanted
                self._count_load_failure(name, str(exc))
                self.unload(name)
                changed = True
                continue
            label = getattr(plugin.instance, "admin_menu_label", None)
            if isinstance(label, str) and label and getattr(plugin.instance, "admin_pages", None):
                self.admin_menu.show(_owner(plugin), name, label)
            changed = True
            log.info("plugin loaded", extra={"plugin": name, "generation": row.generation})
        self._seen = tuple(sorted((row.name, row.generation, row.status) for row in rows))
        return changed

    async def poll(self) -> bool:
        """Compare the registry's names, generations and statuses with the last read;
        `sync()` when they differ. True if anything changed."""
        try:
            async with self.runtime.sessionmaker() as session:
                result = await session.execute(
                    text("SELECT name, generation, status FROM plugin_registry")
                )
                seen = tuple(sorted((n, int(g), s) for n, g, s in result.all()))
        except Exception as exc:
            if not self._poll_failing:
                log.warning("plugin registry poll failed", extra={"error": repr(exc)})
            self._poll_failing = True
            return False
        self._poll_failing = False
        if seen == self._seen:
            return False
        return await self.sync()

    async def follow(self) -> None:
        """Until cancelled: sync on each `plugins:changed` message and on every poll that
        sees a difference (every POLL_SECONDS, whether the store answers or not)."""
        listener = asyncio.create_task(self._listen())
        try:
            while True:
                stop_if_cancelled()
                await self.poll()
                await asyncio.sleep(self.poll_seconds)
        finally:
            await cancel_and_wait(listener)

    async def _listen(self) -> None:
        store = self.runtime.store
        while True:
            stop_if_cancelled()
            try:
                async for _ in store.listen(CHANNEL):
                    await self.sync()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # store away: the poll carries on; listen again later
                log.info("plugin change channel lost", extra={"error": repr(exc)})
                await asyncio.sleep(self.poll_seconds)
                await store.answering()

    async def start(self) -> None:
        """Load the active plugins, then follow changes (the app's and a worker's start)."""
        await self.sync()
        self._task = asyncio.create_task(self.follow(), name="plugin-host")

    async def stop(self) -> None:
        await cancel_and_wait(self._task)
        self._task = None
        for name in list(self.loaded):
            self.unload(name)
        await asyncio.gather(*self._closing)

    async def deliver_once(self, session: AsyncSession) -> None:
        """For a process that runs no plugins (a CLI command): after `session` committed,
        load the active plugins, hand them its events, and let them go. Nothing to deliver:
        nothing is loaded."""
        if not has_undelivered(session):
            return
        await self.sync()
        try:
            await self.runtime.events.deliver(session)
        finally:
            await self.stop()

    # -- loading -------------------------------------------------------------------------

    def _check_files(self, row: RegistryRow) -> None:
        """PluginLoadFailed unless the folder here holds the files an admin accepted (the
        row's checksum): changed code is never run."""
        found = self.files_checksum(row)
        if found is None:
            raise PluginLoadFailed(f"no plugin folder {self.plugins_dir / row.name}")
        if found != row.checksum:
            raise PluginLoadFailed(
                "its files here differ from the checksum recorded at install or accept"
            )

    def load(self, row: RegistryRow) -> LoadedPlugin:
        """Import the plugin's package under a module name of its own and build its apps;
        PluginLoadFailed with the reason. Nothing is served until the caller keeps it."""
        folder = self.plugins_dir / row.name
        entry = manifest_field(row.manifest, "entry_point")
        if not isinstance(entry, str) or ":" not in entry:
            raise PluginLoadFailed(f"entry_point must read 'module:Class', not {entry!r}")
        if not folder.is_dir():
            raise PluginLoadFailed(f"no plugin folder {folder}")
        module_path, _, attribute = entry.partition(":")
        package = f"keel_plugin_{row.name}_{row.generation}_{next(_loads)}"
        spec = importlib.machinery.ModuleSpec(package, None, is_package=True)
        spec.submodule_search_locations = [str(folder)]
        sys.modules[package] = importlib.util.module_from_spec(spec)
        try:
            module = importlib.import_module(f"{package}.{module_path}")
            target: Any = module
            for part in attribute.split("."):
                target = getattr(target, part)
            if not inspect.isclass(target):
                raise PluginLoadFailed(f"entry point {entry} is not a class")
            instance = target()
            version = row.version or str(manifest_field(row.manifest, "version") or "")
            time_limit = self.time_limit_of(row.manifest)
            context = self.context_of(row.name, version, self.settings_of(row), time_limit)
            plugin = LoadedPlugin(
                name=row.name,
                version=version,
                generation=row.generation,
                checksum=row.checksum,
                folder=folder,
                module=package,
                instance=instance,
                context=context,
                time_limit=time_limit,
                description=str(manifest_field(row.manifest, "description") or ""),
            )
            plugin.apps = {part: self._build_app(plugin, part) for part in MOUNT_PREFIXES}
        except PluginLoadFailed:
            _drop_modules(package)
            raise
        except Exception as exc:
            _drop_modules(package)
            raise PluginLoadFailed(f"{type(exc).__name__}: {exc}") from exc
        return plugin

    def context_of(
        self,
        name: str,
        version: str,
        settings: Mapping[str, Any],
        time_limit: float = DEFAULT_TIME_LIMIT,
    ) -> PluginContext:
        """The context Keel gives plugin `name`: its folder here, storage, sessions, reads,
        the shared views, the site's address and the job form's way to enqueue."""
        return PluginContext(
            name,
            version,
            self.plugins_dir / name,
            settings,
            self.sessions,
            self.storage(name),
            self.reads_of(name) or self.runtime.reads,
            self.shared,
            site_url=site_address(self.runtime.settings.app).rstrip("/"),
            time_limit=min(time_limit, self.time_limit_cap),
            submit=self._submit_job,
        )

    def unload(self, name: str) -> None:
        """Stop serving `name` here (its requests in flight finish)."""
        plugin = self.loaded.pop(name, None)
        if plugin is not None:
            self._forget(plugin)
            log.info("plugin unloaded", extra={"plugin": name})

    def release(self, plugin: LoadedPlugin) -> None:
        """Let go of a plugin `load` returned and nobody serves (the lifecycle's hooks of
        an inactive plugin): its modules (nothing of it was registered)."""
        if self.loaded.get(plugin.name) is not plugin:
            self._close_reads(plugin)
            _drop_modules(plugin.module)

    def _close_reads(self, plugin: LoadedPlugin) -> None:
        """Close the read connections of this load of the plugin (`stop` waits for them)."""
        reads = plugin.context.reads
        if reads is self.runtime.reads:  # Keel's own, shared
            return
        closing = asyncio.get_running_loop().create_task(reads.close())
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)

    def _forget(self, plugin: LoadedPlugin) -> None:
        owner = _owner(plugin)
        self._close_reads(plugin)
        self.admin_menu.hide(owner)
        if self.widgets is not None:
            self.widgets.remove(owner)
        for events in self.event_sources:
            events.unsubscribe(owner)
        JOB_TYPES.remove(owner)
        SCHEDULES.remove(owner)
        _drop_modules(plugin.module)

    def _add_tasks(self, plugin: LoadedPlugin) -> None:
        """The plugin's job types and schedules, in Keel's (process-wide) registries under
        the plugin as owner; a name outside `<plugin>.` or taken by another is refused."""
        owner, prefix = _owner(plugin), plugin.name + "."
        for job in getattr(plugin.instance, "jobs", None) or []:
            if not isinstance(job, Job) or not job.name.startswith(prefix):
                raise ValueError(f"a job must be a keel.plugin.Job named {prefix}…: {job!r}")
            JOB_TYPES.add(owner, self._job_type(plugin, job))
        for declared in getattr(plugin.instance, "schedules", None) or []:
            if not isinstance(declared, Schedule) or not declared.name.startswith(prefix):
                raise ValueError(f"a schedule must be a Schedule named {prefix}…: {declared!r}")
            SCHEDULES.add(owner, declared)
        for number, widget in enumerate(getattr(plugin.instance, "widgets", None) or []):
            if not isinstance(widget, Widget):
                raise ValueError(f"a widget must be a keel.plugin.Widget: {widget!r}")
            if self.widgets is not None:
                self.widgets.add(owner, self._dashboard_widget(plugin, number, widget))

    def _dashboard_widget(
        self, plugin: LoadedPlugin, number: int, widget: Widget
    ) -> DashboardWidget:
        """The widget as the dashboard fetches it: rendered as if on the plugin's admin
        pages (its templates, its route names), under its time limit, as a hook."""
        app = plugin.apps[ADMIN]

        async def render(request: Request[Any, Any, Any]) -> Markup:
            scope: Any = {
                **request.scope,
                "app": app,
                "litestar_app": app,
                KEEL_APP_SCOPE: request.scope.get("litestar_app"),
            }
            inner = BoundaryRequest(scope, request.receive)
            try:
                body = await self._run_hook(
                    plugin, f"widget:{number}", widget.render, (plugin.context, inner)
                )
            except PluginHookFailed as exc:
                raise WidgetFailed(str(exc)) from exc
            if isinstance(body, Response):  # the plugin's template, autoescaped
                return Markup(body.content)  # noqa: S704
            return escape(body if body is not None else "")

        return DashboardWidget(plugin.name, number, widget.title, render)

    def _job_type(self, plugin: LoadedPlugin, job: Job) -> JobType:
        context, run = plugin.context, job.run

        async def run_job(job_context: JobContext[Any]) -> Any:
            result = run(context, job_context)
            return await result if inspect.isawaitable(result) else result

        return JobType(
            name=job.name,
            run=run_job,
            timeout=plugin.time_limit,
            max_attempts=job.max_attempts,
            queue=job.queue,
            payload=job.payload,
            role=Role[job.role],
            description=(getattr(run, "__doc__", None) or "").strip().split("\n")[0],
        )

    def _subscribe(self, plugin: LoadedPlugin) -> None:
        """The plugin's `subscriptions` on every source of events of this process; a name
        that is not one of Keel's events (PLUGIN_EVENTS) or a handler that cannot be
        called is refused (ValueError: not loaded)."""
        subscriptions = _subscriptions(plugin)
        for event, handler in subscriptions.items():
            if event not in PLUGIN_EVENTS:
                raise ValueError(
                    f"subscriptions: no Keel event {event!r} (Keel's events: "
                    f"{', '.join(PLUGIN_EVENTS)})"
                )
            if not callable(handler):
                raise ValueError(f"subscriptions: the handler of {event!r} is not callable")
        for events in self.event_sources:
            self._subscribe_on(events, plugin, subscriptions)

    def _subscribe_on(
        self, events: Events, plugin: LoadedPlugin, subscriptions: Mapping[str, Any]
    ) -> None:
        for event, handler in subscriptions.items():

            async def deliver(happened: Event, handler: Any = handler, event: str = event) -> None:
                with suppress(PluginHookFailed):  # logged and counted by _run_hook
                    await self._run_hook(
                        plugin, f"event {event}", handler, (plugin.context, happened.payload)
                    )

            events.subscribe(_owner(plugin), event, deliver, name=f"{plugin.name}:{event}")

    def time_limit_of(self, manifest: Mapping[str, Any]) -> float:
        """The manifest's `time_limit` (seconds; a table's `request`), capped by settings."""
        asked = manifest_field(manifest, "time_limit")
        if isinstance(asked, Mapping):
            asked = asked.get("request")
        limit = float(asked) if isinstance(asked, int | float) and asked > 0 else DEFAULT_TIME_LIMIT
        return min(limit, self.time_limit_cap)

    def _count_load_failure(self, name: str, message: str) -> None:
        figures = self.figures.setdefault(name, PluginFigures())
        figures.load_failures += 1
        figures.note(f"not loaded: {message}")
        self.tally.add(PLUGIN_LOAD_FAILURES, (name,))
        log.warning("plugin not loaded", extra={"plugin": name, "error": message})

    # -- the plugin's apps ---------------------------------------------------------------

    def _build_app(self, plugin: LoadedPlugin, part: str) -> Litestar:
        instance = plugin.instance
        routes = {API: "api_routes", PAGES: "pages", ADMIN: "admin_pages"}[part]
        handlers: list[Any] = list(getattr(instance, routes, None) or [])
        prefix = f"{MOUNT_PREFIXES[part]}/{plugin.name}"
        route_handlers: list[Any] = (
            [Router(path=prefix, route_handlers=handlers)] if handlers else []
        )
        static = plugin.folder / "static"
        if part == PAGES and static.is_dir():
            route_handlers.append(
                create_static_files_router(
                    path=f"{prefix}/static",
                    directories=[static],
                    name=f"{plugin.name}:static",
                    include_in_schema=False,
                )
            )
        context = plugin.context
        return Litestar(
            route_handlers=route_handlers,
            state=_state(self.runtime),
            dependencies={"ctx": Provide(lambda: context, sync_to_thread=False)},
            exception_handlers={Exception: handle_exception},
            request_class=BoundaryRequest,
            before_request=self._add_page_context if part == PAGES else None,
            template_config=self._templates(plugin),
            openapi_config=None,
            logging_config=None,
            debug=False,
        )

    async def _add_page_context(self, request: Request[Any, Any, Any]) -> None:
        if self.page_context is not None:
            request.state[PAGE_CONTEXT] = await self.page_context(request)

    def _templates(self, plugin: LoadedPlugin) -> TemplateConfig[JinjaTemplateEngine]:
        folders = [plugin.folder / "templates", TEMPLATES_DIR]
        environment = Environment(
            loader=FileSystemLoader([str(f) for f in folders if f.is_dir()]),
            autoescape=True,
            auto_reload=not self.runtime.settings.app.is_production,
        )
        name = plugin.name
        engine = JinjaTemplateEngine.from_environment(environment)
        share_keel_templating(engine, production=self.runtime.settings.app.is_production)
        engine.engine.globals.update(  # after Litestar's own (its url_for knows one app)
            plugin_static=lambda asset: f"{MOUNT_PREFIXES[PAGES]}/{name}/static/{asset}",
            url_for=_url_for,
            **self.template_globals,
        )
        return TemplateConfig(instance=engine)

    # -- serving -------------------------------------------------------------------------

    async def dispatch(
        self, part: str, name: str, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """Hand a request under a plugin mount to the plugin's app, under its time limit;
        404 when `name` is not active here."""
        plugin = self.loaded.get(name)
        if plugin is None:
            raise NotFoundException(f"No active plugin {name!r} here.")
        app = plugin.apps[part]
        inner: Scope = {  # type: ignore[assignment]
            **scope,
            "path": scope["path"],
            "root_path": "",
            "path_params": {},
            "app": app,
            "litestar_app": app,
            KEEL_APP_SCOPE: scope.get("litestar_app"),
        }
        started = False
        status = 500

        async def watch(message: Message) -> None:
            nonlocal started, status
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
            await send(message)

        begun = time.perf_counter()
        outcome = "ok"
        try:
            async with asyncio.timeout(plugin.time_limit):
                await app(inner, receive, watch)
        except TimeoutError:
            outcome = "timeout"
            self._note_failure(
                plugin.name, "timeout", f"{_request_line(scope)} ran over {plugin.time_limit:g} s"
            )
            if not started:
                await _answer(
                    app,
                    inner,
                    receive,
                    send,
                    PluginTimedOut(
                        f"The plugin {name!r} did not answer within {plugin.time_limit:g} s."
                    ),
                )
            status = 504
        else:
            if status >= 500:
                outcome = "error"
                self._note_failure(
                    plugin.name, "error", f"{_request_line(scope)} answered {status}"
                )
            elif status >= 400:
                outcome = "refused"
        finally:
            seconds = time.perf_counter() - begun
            self.tally.add(PLUGIN_REQUESTS, (plugin.name, outcome))
            self.tally.observe(PLUGIN_DURATION, (plugin.name,), seconds)
            self.figures.setdefault(plugin.name, PluginFigures()).requests += 1

    def _note_failure(self, name: str, outcome: str, message: str) -> None:
        figures = self.figures.setdefault(name, PluginFigures())
        if outcome == "timeout":
            figures.timeouts += 1
        else:
            figures.errors += 1
        figures.note(message)

    # -- hooks ---------------------------------------------------------------------------

    async def call_hook(self, plugin: LoadedPlugin, hook: str, *args: Any) -> Any:
        """Run `plugin`'s hook (`on_install`, `on_activate`, ...) with its context and
        `args`, under its time limit; a hook it does not define does nothing. Raises
        PluginHookFailed with the message when it raises or runs too long."""
        method = getattr(plugin.instance, hook, None)
        if method is None:
            return None
        return await self._run_hook(plugin, hook, method, (plugin.context, *args))

    async def _run_hook(
        self, plugin: LoadedPlugin, hook: str, method: Any, args: tuple[Any, ...]
    ) -> Any:
        try:
            async with asyncio.timeout(plugin.time_limit):
                result = method(*args)
                if inspect.isawaitable(result):
                    result = await result
                return result
        except TimeoutError:
            message = f"{hook} of {plugin.name} ran past its time limit ({plugin.time_limit:g} s)"
            outcome = "timeout"
        except Exception as exc:
            message = f"{hook} of {plugin.name} failed: {type(exc).__name__}: {exc}"
            outcome = "error"
            log.warning(message, exc_info=exc, extra={"plugin": plugin.name, "hook": hook})
        figures = self.figures.setdefault(plugin.name, PluginFigures())
        figures.hook_failures += 1
        figures.note(message)
        self.tally.add(PLUGIN_HOOK_FAILURES, (plugin.name, hook, outcome))
        raise PluginHookFailed(message)

    async def _submit_job(
        self, request: Request[Any, Any, Any], type: str, payload: dict[str, Any] | None
    ) -> int:
        user = request.scope.get("user")
        if user is None:
            raise Forbidden("Only a signed-in caller may start a job.")
        runtime = self.runtime
        async with runtime.sessionmaker(expire_on_commit=False) as session:
            async with session.begin():
                job = await submit_job(
                    session, Actor.from_connection(request), user, type, payload or {}
                )
            await runtime.events.deliver(session)
        return job.id

    # -- storage default -------------------------------------------------------------------

    @asynccontextmanager
    async def _shared_session(self, name: str) -> AsyncIterator[AsyncSession]:
        """Without isolation wired: a session on Keel's pool, committed at the end."""
        async with self.runtime.sessionmaker() as session, session.begin():
            yield session


async def announce(store: Store) -> None:
    """Tell every process that the registry changed (after the COMMIT). A store that does
    not answer is fine: each process's poll sees the change within POLL_SECONDS."""
    try:
        await store.publish(CHANNEL, "1")
    except Exception as exc:
        log.info("plugin change not announced; polls will see it", extra={"error": repr(exc)})


def _request_line(scope: Scope) -> str:
    return f"{scope.get('method', '')} {scope['path']}".strip()


def _owner(plugin: LoadedPlugin) -> str:
    return f"plugin:{plugin.name}"


def _subscriptions(plugin: LoadedPlugin) -> dict[str, Any]:
    """The plugin's `subscriptions`: event name -> `handler(ctx, event)`."""
    return dict(getattr(plugin.instance, "subscriptions", None) or {})


def _settings_in_manifest(row: RegistryRow) -> Mapping[str, Any]:
    """The row's saved settings over the defaults of the manifest's settings schema."""
    schema = row.manifest.get("settings")
    properties = schema.get("properties", {}) if isinstance(schema, Mapping) else {}
    defaults = {name: prop["default"] for name, prop in properties.items() if "default" in prop}
    return {**defaults, **row.settings}


def _drop_modules(package: str) -> None:
    for module in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
        del sys.modules[module]


def _state(runtime: Runtime) -> State:
    return State({RUNTIME_KEY: runtime, URLS: {}})


@pass_context
def _url_for(context: Mapping[str, Any], route_name: str, /, **path_parameters: Any) -> str:
    """A named route of the plugin's app, else of Keel's (its layouts link to Keel's
    pages), remembered by the plugin's app while Keel's routes stay the same."""
    request = context["request"]
    app = request.app
    routing = runtime_of(app.state).routing
    key = (routing.generation if routing is not None else 0, route_name, *path_parameters.items())
    known: dict[tuple[Any, ...], str] = app.state[URLS]
    url = known.get(key)
    if url is not None:
        return url
    try:
        url = str(app.route_reverse(route_name, **path_parameters))
    except NoRouteMatchFoundException:
        keel = request.scope.get(KEEL_APP_SCOPE)
        if keel is None:
            raise
        url = str(keel.route_reverse(route_name, **path_parameters))
    if len(known) >= URLS_KEPT:
        known.clear()
    known[key] = url
    return url


def on_keel_app(function: Callable[..., Any]) -> Callable[..., Any]:
    """A template global that reads Keel's app from its request (the admin menu lists
    Keel's routes), made to work on a plugin's page too."""

    def on_keel(request: Request[Any, Any, Any], *args: Any, **kwargs: Any) -> Any:
        keel = request.scope.get(KEEL_APP_SCOPE)
        if keel is not None and keel is not request.app:
            scope = {**request.scope, "app": keel, "litestar_app": keel}
            request = Request(scope, request.receive)  # type: ignore[arg-type]
        return function(request, *args, **kwargs)

    return on_keel


async def _answer(
    app: Litestar, scope: Scope, receive: Receive, send: Send, exc: Exception
) -> None:
    """Keel's error answer for `exc` (problem details or the error page, with an error id)."""
    request: Request[Any, Any, Any] = BoundaryRequest(scope, receive)
    response = handle_exception(request, exc)
    await response.to_asgi_response(None, request)(scope, receive, send)
