"""`create_app(settings)`: the only place that wires Keel together.

Granian imports `app.asgi:served_app` as a factory, so each worker process builds its own
engine, pool and store client from the environment.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager

from litestar import Litestar
from litestar.config.cors import CORSConfig
from litestar.di import Provide
from litestar.enums import ScopeType
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, YamlRenderPlugin
from litestar.types import Receive, Scope, Send

from app import __version__
from app.accounts.guards.identity import (
    FirstRunMiddleware,
    IdentityMiddleware,
    error_page_identity,
    provide_caller,
)
from app.accounts.guards.rate_limit import ApiRateLimitMiddleware
from app.accounts.guards.roles import required_role
from app.accounts.models import Role
from app.accounts.services.audit import provide_actor
from app.accounts.services.callers import CallerCache
from app.accounts.services.sessions import cookie_name
from app.content.pages.cache import PageCacheFront, PublicPageCacheMiddleware
from app.content.pages.public import public_context
from app.content.services.page_cache import PageCache
from app.content.services.views import ViewCounts
from app.core.allow import AllowEveryMethod
from app.core.boundary import AsciiRequestTarget, BoundaryRequest, InputBoundary
from app.core.compression import CompressionMiddleware
from app.core.csrf import csrf_middleware
from app.core.errors import ErrorPageLayout, handle_exception
from app.core.events import PUBLIC_CHANGED
from app.core.logging import configure_logging
from app.core.openapi import document_errors, security_components
from app.core.registry import KEEL
from app.core.requests import RequestContextMiddleware
from app.core.routing import Routing, route_group_registry
from app.core.runtime import RUNTIME_KEY, Runtime, provide_db_session, provide_runtime, runtime_of
from app.core.security_headers import SecurityHeaders, SecurityHeadersMiddleware
from app.core.templating import create_template_config
from app.core.widgets import DASHBOARD_WIDGETS
from app.extensions.api import serve_path_parameters_to_asgi_routes
from app.extensions.services.host import PluginHost, on_keel_app
from app.extensions.services.lifecycle import subscribe_plugin_changes
from app.jobs.services.metrics import subscribe_outcomes
from app.jobs.services.queue import subscribe_wake_ups
from app.jobs.services.registry import load_job_modules
from app.routes import route_groups
from app.runtime import AppState, build_runtime, build_worker
from app.settings import ConfigError, Settings
from app.system.services.navigation import PluginMenuEntries, admin_menu

log = logging.getLogger("keel")


class ServedApp:
    """What granian serves (`keel serve`): a page this process holds is answered by the
    page cache front before Litestar's own entry (`Litestar.__call__`, a few µs a hit);
    everything else, lifespan included, goes to the Litestar app, whose first layer is
    the same front."""

    def __init__(self, app: Litestar) -> None:
        self.app = app
        front = app.asgi_handler
        assert isinstance(front, PageCacheFront), front
        self.front = front

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == ScopeType.HTTP and await self.front.answered(scope, send):
            return
        await self.app(scope, receive, send)


def served_app() -> ServedApp:
    """granian's factory in each worker process: the app built from the environment."""
    return ServedApp(create_app())


def create_app(settings: Settings | None = None) -> Litestar:
    """Build the Litestar app; refuses configurations that cannot work (ConfigError)."""
    settings = (settings or Settings.from_env()).with_secret()
    if problems := settings.startup_problems():
        raise ConfigError(problems)
    configure_logging(settings.app.log_level)
    load_job_modules(settings.worker.job_modules)
    runtime = build_runtime(settings)
    host = runtime.service(PluginHost)
    host.template_globals = {"admin_menu": on_keel_app(admin_menu)}
    host.page_context = public_context
    host.admin_menu = PluginMenuEntries()
    host.widgets = DASHBOARD_WIDGETS
    runtime.add_service(ErrorPageLayout(error_page_identity, public_context))
    _subscribe(runtime)
    app = Litestar(
        route_handlers=[],  # mounted from the route group registry below
        state=AppState.of(runtime),
        dependencies={
            "db_session": Provide(provide_db_session),
            "runtime": Provide(provide_runtime, sync_to_thread=False),
            "actor": Provide(provide_actor, sync_to_thread=False),
            "caller": Provide(provide_caller, sync_to_thread=False),
        },
        middleware=[
            InputBoundary,
            PublicPageCacheMiddleware,
            FirstRunMiddleware(),
            IdentityMiddleware(),
            ApiRateLimitMiddleware(),
            csrf_middleware(settings, session_cookie=cookie_name(settings.app.is_production)),
            AllowEveryMethod(),
        ],
        lifespan=[_in_process_worker] if settings.embedded else [],
        on_startup=[_start_caches, _start_figures, _start_plugins, _tune_gc],
        on_shutdown=[_close_resources],
        template_config=create_template_config(settings, {"admin_menu": admin_menu}),
        request_class=BoundaryRequest,
        exception_handlers={Exception: handle_exception},
        cors_config=CORSConfig(
            allow_origins=list(settings.app.cors_origins),
            allow_credentials=False,
            allow_headers=["Authorization", "Content-Type", "X-API-Key", "X-Request-ID"],
            expose_headers=[
                "X-Request-ID",
                "Retry-After",
                "RateLimit-Limit",
                "RateLimit-Remaining",
                "RateLimit-Reset",
            ],
        )
        if settings.app.cors_origins
        else None,
        openapi_config=OpenAPIConfig(
            title="Keel API",
            version=__version__,
            path="/schema",
            render_plugins=[JsonRenderPlugin(), YamlRenderPlugin()],
            components=security_components(),
        ),
        logging_config=None,
        debug=False,
    )
    groups = route_group_registry()
    for group in route_groups():
        groups.add(KEEL, group)
    runtime.routing = Routing(app, groups, prepare=_document_errors)
    # Wrap outside Litestar's own exception and CORS layers, so 404s and preflights also
    # get a request id, a log line and the security headers; a query string Litestar cannot
    # decode is refused before it (AsciiRequestTarget); what the router answers is
    # compressed on its way out (CompressionMiddleware). In front of all of them, a page
    # this process holds in its cache is answered in one step, compressed at fill, with
    # what those layers would add (PageCacheFront).
    security = SecurityHeaders(settings.app.is_production)
    app.asgi_handler = PageCacheFront(
        RequestContextMiddleware(
            SecurityHeadersMiddleware(
                AsciiRequestTarget(CompressionMiddleware(app.asgi_handler)), security
            ),
            trusted_proxies=settings.app.trusted_proxies,
            runtime=runtime,
        ),
        runtime,
        security,
        settings.app.trusted_proxies,
    )
    return app


def _subscribe(runtime: Runtime) -> None:
    """What follows a request's COMMIT in a web process: the page cache starts a new
    generation after a public change, idle workers wake for new jobs, job figures count."""
    events = runtime.events
    events.subscribe(KEEL, PUBLIC_CHANGED, runtime.service(PageCache).on_public_change)
    subscribe_wake_ups(events, runtime.store)
    subscribe_plugin_changes(events, runtime.store)
    subscribe_outcomes(events, runtime.figures)


def attach_runtime(app: Litestar, runtime: Runtime) -> None:
    """Serve `app` with another `runtime` (of the same settings) from now on, wired as
    `create_app` wires its own: the app's state, the after-commit subscribers, the route
    groups, and the layers in front of the router that hold the page cache and the request
    figures. The one it replaces is not closed. The tests use it to build the routes once
    for many runtimes (building them is most of `create_app`'s cost)."""
    previous = runtime_of(app.state)
    runtime.routing = previous.routing
    host, previous_host = runtime.service(PluginHost), previous.service(PluginHost)
    host.template_globals = previous_host.template_globals
    host.page_context = previous_host.page_context
    host.admin_menu = previous_host.admin_menu
    host.widgets = previous_host.widgets
    app.state[RUNTIME_KEY] = runtime
    _subscribe(runtime)
    front = app.asgi_handler
    assert isinstance(front, PageCacheFront), front
    front.attach(runtime)
    context = front.app
    assert isinstance(context, RequestContextMiddleware), context
    context.runtime = runtime


def _needs_caller(role: Role | None) -> bool:
    return role is not None and role > Role.guest


def _document_errors(app: Litestar) -> None:
    serve_path_parameters_to_asgi_routes(app)
    document_errors(app, needs_caller=lambda handler: _needs_caller(required_role(handler)))


@asynccontextmanager
async def _in_process_worker(app: Litestar) -> AsyncGenerator[None, None]:
    """Embedded mode: one `keel serve` is the whole system, so it runs the worker too."""
    worker = build_worker(runtime_of(app.state), in_process=True)
    task = asyncio.create_task(worker.run())
    try:
        yield
    finally:
        worker.request_stop()
        await task


GC_YOUNG_THRESHOLD = 2_000
GC_OLD_THRESHOLD = 100
"""After start-up: a young collection every 2,000 allocations (CPython: 700) and a full one
every 100 middle ones (CPython: 10): every pause stalls all requests in flight, so pauses
are kept short rather than rare (figures: docs/performance.md)."""


def _tune_gc() -> None:
    """Objects alive after start-up live for the process: keep the collector off them, and
    keep its pauses short on what requests allocate (see GC_YOUNG_THRESHOLD)."""
    gc.collect()
    gc.freeze()
    _, middle, _ = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, GC_OLD_THRESHOLD)


async def _start_caches(app: Litestar) -> None:
    """The page cache, view counts and kept credential checks, following other processes."""
    runtime = runtime_of(app.state)
    await runtime.service(PageCache).start()
    await runtime.service(ViewCounts).start()
    await runtime.service(CallerCache).start()


async def _start_figures(app: Litestar) -> None:
    runtime_of(app.state).figures.start()


async def _start_plugins(app: Litestar) -> None:
    """Serve the active plugins, and follow activations made by any process."""
    await runtime_of(app.state).service(PluginHost).start()


async def _close_resources(app: Litestar) -> None:
    runtime = runtime_of(app.state)
    await runtime.service(PluginHost).stop()
    await runtime.service(ViewCounts).stop()
    await runtime.service(CallerCache).stop()
    await runtime.service(PageCache).stop()
    await runtime.figures.stop()
    await runtime.close()
