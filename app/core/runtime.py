"""`Runtime`: what a running Keel process holds (settings, engine, sessions, store, reads,
figures, and the domains' long-lived services), as one typed object.

`app/runtime.py` builds it (`build_runtime`) for the web app, `keel worker` and the CLI
alike; code in a request reaches it with `runtime_of(state)` (the app's `State`, e.g. a
handler's `state` or `scope["litestar_app"].state`), never through `app.state` as `Any`.
`core` knows no domain, so a domain's services (the page cache, the session store, the
token issuers...) are kept by their type: `runtime.service(PageCache)`.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any, TypeVar

from litestar.datastructures import State
from litestar.di import NamedDependency
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.clock import SYSTEM_CLOCK, Clock
from app.core.events import Events

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker

    from app.core.metrics import RequestTally
    from app.core.reads import Reads
    from app.core.routing import Routing
    from app.core.store import Store
    from app.settings import Settings

S = TypeVar("S")


class Runtime:
    """The process's handle on everything it opened; `close()` lets go of it.

    A plain class, not a dataclass: Litestar would otherwise read it as a data shape to
    validate field by field each time a handler receives it."""

    def __init__(
        self,
        settings: Settings,
        engine: AsyncEngine,
        sessionmaker: async_sessionmaker[AsyncSession],
        store: Store,
        reads: Reads,
        figures: RequestTally,
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.sessionmaker = sessionmaker
        self.store = store
        self.reads = reads
        self.figures = figures
        """The process's request and job figures not yet in the store."""
        self.started_monotonic = time.monotonic()
        self.events = Events()
        self.clock: Clock = SYSTEM_CLOCK
        """What windows and ticks read the time from (a test sets one it moves)."""
        """What this process's transactions did, delivered to subscribers after COMMIT
        (the page cache, worker wake-ups, job figures; app/core/events.py)."""
        self.routing: Routing | None = None
        """The web app's route groups (`create_app` sets it; a worker has none)."""
        self._services: dict[type[Any], Any] = {}

    def add_service(self, service: object) -> None:
        """Keep a domain's long-lived object, found again by its type."""
        self._services[type(service)] = service

    def service(self, kind: type[S]) -> S:
        """The object of type `kind` that `add_service` kept; LookupError if none."""
        found = self._services.get(kind)
        if not isinstance(found, kind):
            raise LookupError(f"the runtime holds no {kind.__name__}")
        return found

    async def close(self) -> None:
        """Close what building it opened: read connections, the engine, the store client
        (what the web app started, page cache and figures, its shutdown stops first)."""
        await self.reads.close()
        await self.engine.dispose()
        await self.store.close()


RUNTIME_KEY = "runtime"
"""The one entry of `app.state` that Keel sets."""


def runtime_of(state: State) -> Runtime:
    """The runtime of the app whose `State` this is."""
    runtime = state.get(RUNTIME_KEY)
    if not isinstance(runtime, Runtime):
        raise LookupError("this app has no Keel runtime in its state")
    return runtime


def provide_runtime(state: State) -> Runtime:
    """The `runtime` dependency of handlers (`runtime: AppRuntime`)."""
    return runtime_of(state)


AppRuntime = NamedDependency[Runtime]
"""A handler's `runtime` parameter: the app's Runtime (`create_app` provides it)."""


async def provide_db_session(state: State) -> AsyncGenerator[AsyncSession, None]:
    """One session per request, committed after the handler returns, rolled back on error."""
    runtime = runtime_of(state)
    session = runtime.sessionmaker()
    try:
        yield session
    except BaseException:
        await session.rollback()
        raise
    else:
        if session.in_transaction():
            try:
                await session.commit()
            except BaseException:
                await session.rollback()  # a failed COMMIT can leave the transaction open
                raise
        await runtime.events.deliver(session)  # what the commit did, to its subscribers
    finally:
        await session.close()
