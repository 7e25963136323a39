"""Who an access token or API key stands for, remembered per process for a moment.

Every API request must know whether its credential still stands for someone who may act
(active, same role and credentials, token not signed out, key not revoked). Reading that
from the database is a round trip per request, the largest share of the JSON list's time
after the list itself (docs/performance.md). A process keeps each answer for at most
`KEEP_SECONDS` and forgets all of them when an account, a token family, a signed-out token
or an API key changes:

- in the process that committed the change, before its response goes out: every write to
  those tables through an ORM session emits `CALLERS_CHANGED`, delivered after the COMMIT;
- in every other process when the store's message on `CHANNEL` arrives (milliseconds);
- when a message is lost (the store away, a write outside Keel's sessions), after
  `KEEP_SECONDS` at most. Nothing is kept while the process does not follow the channel
  (before start-up, and from a lost subscription until the store answers again).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from sqlalchemy import event as sqlalchemy_event
from sqlalchemy.orm import ORMExecuteState, Session

from app.accounts.models import ApiKey, RevokedAccessToken, TokenFamily, User
from app.core.events import Event, Events, emit
from app.core.registry import KEEL
from app.core.store import Store
from app.core.tasks import cancel_and_wait

log = logging.getLogger("keel.auth")
KEEP_SECONDS = 2.0
"""The longest a process acts on what it read of a credential, should a change's message
not reach it (the same bound as the page cache's revalidation)."""
CHANNEL = "callers:changed"
CALLERS_CHANGED = "accounts.callers_changed"
KEPT_AT_MOST = 4096
RETRY_SECONDS = 0.5
_WATCHED = (User, ApiKey, TokenFamily, RevokedAccessToken)


class CallerCache:
    """One process's remembered credential checks (see the module docstring)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.generation = 0
        """Moves on every forgetting: a read begun before it is not kept after it."""
        self.following = False
        self._kept: dict[Any, tuple[float, Any]] = {}
        self._listener: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Follow the changes other processes announce; keeps nothing until then."""
        self._listener = asyncio.create_task(self._follow())

    async def stop(self) -> None:
        await cancel_and_wait(self._listener)
        self._listener = None
        self.following = False
        self.forget()

    def get(self, key: Any) -> Any | None:
        """What was kept under `key`, unless it is older than KEEP_SECONDS."""
        found = self._kept.get(key)
        if found is None:
            return None
        if time.monotonic() - found[0] > KEEP_SECONDS or not self.following:
            self._kept.pop(key, None)
            return None
        return found[1]

    def keep(self, key: Any, value: Any, generation: int) -> None:
        """Keep `value`, read when the generation was `generation`: not if anything changed
        since (the read may predate the change), nor while the channel is not followed."""
        if generation != self.generation or not self.following:
            return
        if len(self._kept) >= KEPT_AT_MOST:
            self._kept.clear()
        self._kept[key] = (time.monotonic(), value)

    def forget(self) -> None:
        self.generation += 1
        self._kept.clear()

    async def on_change(self, _event: Event) -> None:
        """After this process committed a change: forget at once, then tell the others."""
        self.forget()
        try:
            await self.store.publish(CHANNEL, "1")
        except Exception as exc:  # the change is committed; the others forget within KEEP_SECONDS
            log.warning("could not announce a credential change", extra={"error": repr(exc)})

    async def _follow(self) -> None:
        while True:
            try:
                self.following = True
                self.forget()
                async for _ in self.store.listen(CHANNEL):
                    self.forget()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # store gone: keep nothing until subscribed again
                self.following = False
                self.forget()
                log.warning("credential change channel lost", extra={"error": repr(exc)})
                await asyncio.sleep(RETRY_SECONDS)
                with contextlib.suppress(Exception):
                    await self.store.answering()


def subscribe_caller_changes(events: Events, cache: CallerCache) -> None:
    """Forget and announce after each commit that changed a credential's standing."""
    events.subscribe(KEEL, CALLERS_CHANGED, cache.on_change, name="accounts.callers_changed")


def _watched(instances: Any) -> bool:
    return any(isinstance(instance, _WATCHED) for instance in instances)


@sqlalchemy_event.listens_for(Session, "before_flush")
def _flushing(session: Session, _context: Any, _instances: Any) -> None:
    if _watched(session.new) or _watched(session.dirty) or _watched(session.deleted):
        emit(session, CALLERS_CHANGED, once=True)


@sqlalchemy_event.listens_for(Session, "do_orm_execute")
def _executing(state: ORMExecuteState) -> None:
    """Statements that write without loading objects (`update(TokenFamily)`, an insert
    of a signed-out token, `delete(User)`)."""
    if state.is_select:
        return
    mapper = state.bind_mapper
    if mapper is not None and issubclass(mapper.class_, _WATCHED):
        emit(state.session, CALLERS_CHANGED, once=True)
