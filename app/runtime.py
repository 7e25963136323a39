"""`build_runtime(settings)`: the one place that opens Keel's resources and builds its
long-lived services, for the web app (`create_app`), `keel worker` and the CLI alike;
`build_worker(runtime)`: a worker over it, wired to its plugins.

`AppState` is the app's `State`: it holds the `Runtime` only, and names its parts
(`app.state.sessionmaker`, `app.state.page_cache`...) as typed read-only views of it,
for code outside a request (tests, scripts).
"""

from __future__ import annotations

from typing import Any

from litestar.datastructures import State
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.accounts.guards.identity import FirstRun
from app.accounts.guards.rate_limit import LimitCache
from app.accounts.services.callers import CallerCache, subscribe_caller_changes
from app.accounts.services.password_hashing import PasswordHashing
from app.accounts.services.sessions import SessionStore
from app.accounts.services.throttle import LoginThrottle, RateCounts
from app.accounts.services.tokens import AccessTokens, RefreshTokens
from app.analytics.jobs import rollup_task
from app.content.services import media as _defines_upload_max_bytes  # noqa: F401
from app.content.services.list_cache import ListCache
from app.content.services.page_cache import PageCache
from app.content.services.reads import next_scheduled_publication
from app.content.services.views import ViewCounts
from app.core.db import create_engine, create_sessionmaker
from app.core.events import Events
from app.core.metrics import RequestTally
from app.core.reads import Reads
from app.core.routing import Routing
from app.core.runtime import RUNTIME_KEY, Runtime, runtime_of
from app.core.store import Store, create_store
from app.core.templating import UrlMemo
from app.extensions.services import isolation
from app.extensions.services.host import PluginHost
from app.extensions.services.shared import SharedViews
from app.jobs.jobs import cleanup as _defines_job_retention_days  # noqa: F401
from app.jobs.services.queue import subscribe_wake_ups
from app.jobs.services.worker import Worker, housekeeping
from app.notifications import services as _defines_mail_sender  # noqa: F401
from app.settings import Settings

# The `_defines_…` imports: each domain defines its runtime settings where it reads
# them, and a runtime knows all of Keel's (a script or the CLI writing one by name, a
# settings page) whichever modules its process uses (tests/site_settings/test_services.py).


def build_runtime(settings: Settings) -> Runtime:
    """Engine, sessions, store, reads and figures, and the domains' services over them.
    Nothing connects yet: each opens on first use. `Runtime.close()` lets go."""
    engine = create_engine(settings.db)
    store = create_store(settings.store)
    reads = Reads(engine, settings.db)
    runtime = Runtime(
        settings=settings,
        engine=engine,
        sessionmaker=create_sessionmaker(engine),
        store=store,
        reads=reads,
        figures=RequestTally(store),
    )
    auth = settings.auth
    page_cache = PageCache(
        store,
        settings.app.cache_ttl,
        next_publication=lambda: next_scheduled_publication(reads),
        figures=runtime.figures,
    )
    for service in (
        page_cache,
        ViewCounts(store, on_store_failure=page_cache.store_failed),
        PasswordHashing(auth.password_hash_concurrency),
        SessionStore(store, auth),
        LoginThrottle(store, auth),
        AccessTokens(settings.app.secret_key, auth.access_token_minutes * 60),
        RefreshTokens(auth.refresh_token_days * 86400, auth.access_token_minutes * 60),
        FirstRun(),
        LimitCache(),
        UrlMemo(),
        CallerCache(store),
        RateCounts(store),
        ListCache(runtime.figures),
    ):
        runtime.add_service(service)
    # any process (web, worker, CLI) that changes an account, token or key says so
    subscribe_caller_changes(runtime.events, runtime.service(CallerCache))
    dialect = "postgresql" if settings.db.url.startswith("postgresql") else "sqlite"
    runtime.add_service(
        PluginHost(
            runtime,
            sessions=isolation.storage_sessions(runtime.sessionmaker, runtime.events),
            storage=lambda name: isolation.PluginStorage(name, dialect),
            shared=SharedViews(dialect),
            reads=lambda name: isolation.plugin_reads(runtime.engine, settings.db, name),
        )
    )
    return runtime


def build_worker(
    runtime: Runtime,
    *,
    queues: tuple[str, ...] = ("default",),
    concurrency: int | None = None,
    in_process: bool = False,
) -> Worker:
    """The worker of `keel worker` over `runtime` (`in_process`: the one `keel serve` runs
    in embedded mode, beside the app). Its jobs' committed events reach the plugins loaded
    in this process, and `keel worker` follows plugins activated anywhere (the app's own
    host already does for an in-process worker), counts their failures in the worker's
    figures, and wakes the workers for the jobs they enqueue."""
    plugins = runtime.service(PluginHost)
    worker = Worker(
        runtime.settings,
        runtime.store,
        runtime.sessionmaker,
        queues=queues,
        concurrency=concurrency,
        mode="in-process" if in_process else "process",
        periodic=(
            *housekeeping(runtime.sessionmaker, runtime.store),
            rollup_task(runtime.sessionmaker, runtime.store),
        ),
        companions=() if in_process else (plugins.follow,),
    )
    plugins.hear_events_of(worker.events)
    if not in_process:
        # nothing flushes `runtime.figures` in `keel worker`; the worker's tally goes to
        # the store with each heartbeat, so the plugins' failures reach /metrics
        plugins.tally = worker.figures
        # a job a plugin enqueues in its own session wakes the workers (the app's
        # runtime does it already for an in-process worker)
        subscribe_wake_ups(runtime.events, runtime.store)
    # a job that changes an account, token or key tells the web processes to forget it
    subscribe_caller_changes(worker.events, runtime.service(CallerCache))
    return worker


class AppState(State):
    """`app.state`: `{"runtime": Runtime}`, and the runtime's parts by name (read-only).
    A handler's `state` parameter is a plain `State` over the same entries: in a request,
    use `runtime_of(state)`."""

    @classmethod
    def of(cls, runtime: Runtime) -> AppState:
        return cls({RUNTIME_KEY: runtime})

    @property
    def runtime(self) -> Runtime:
        return runtime_of(self)

    @property
    def settings(self) -> Settings:
        return self.runtime.settings

    @property
    def engine(self) -> AsyncEngine:
        return self.runtime.engine

    @property
    def sessionmaker(self) -> async_sessionmaker[AsyncSession]:
        return self.runtime.sessionmaker

    @property
    def store(self) -> Store:
        return self.runtime.store

    @property
    def reads(self) -> Reads:
        return self.runtime.reads

    @property
    def figures(self) -> RequestTally:
        return self.runtime.figures

    @property
    def events(self) -> Events:
        return self.runtime.events

    @property
    def routing(self) -> Routing | None:
        return self.runtime.routing

    @property
    def plugins(self) -> PluginHost:
        return self.runtime.service(PluginHost)

    @property
    def page_cache(self) -> PageCache:
        return self.runtime.service(PageCache)

    @property
    def views(self) -> ViewCounts:
        return self.runtime.service(ViewCounts)

    @property
    def sessions(self) -> SessionStore:
        return self.runtime.service(SessionStore)

    @property
    def access_tokens(self) -> AccessTokens:
        return self.runtime.service(AccessTokens)

    @property
    def refresh_tokens(self) -> RefreshTokens:
        return self.runtime.service(RefreshTokens)

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError(f"app.state is read-only: set {key} on the Runtime")
