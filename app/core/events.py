"""After-commit events: a change says what happened on its database session (`emit`), and
whoever subscribed hears of it only once the transaction has committed; a rollback drops
what it emitted.

A domain that must react to another's change subscribes to its event instead of importing
it, so dependencies keep pointing down (`core` knows no domain). Each process has one
`Events` per runtime (the app's in `create_app`, each worker's own), and its subscriptions
are a `Registry`: Keel subscribes under `"keel"`, a plugin under its name, and
`unsubscribe(owner)` takes an owner's away while Keel runs.

Delivery (`Events.deliver`) follows the COMMIT: the request's session provider and
`JobContext.transaction` call it. Every subscriber hears every event of its name, in the
order they were emitted, whatever the others did: the change is committed, so no failure
may turn the answer into an error. Subscribers cope with the store's failures themselves
(a cache generation the store did not take is owed, see
app/content/services/page_cache.py); one that raises anyway is a bug, logged with its traceback.

`on_commit` and `on_rollback` are the synchronous side, run by SQLAlchemy at the end of the
transaction whoever opened the session (files that follow database rows, app/core/files.py).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event as sqlalchemy_event
from sqlalchemy.orm import Session, SessionTransaction

from app.core.registry import Registry

log = logging.getLogger("keel.events")

PUBLIC_CHANGED = "public.changed"
"""Visitors will see something new once this commits (an entry published, edited or taken
away, a shown setting changed): every cached public page is stale. Emitted with
`mark_public_change`; the page cache subscribes."""


@dataclass(frozen=True)
class Event:
    name: str
    payload: Any = None


Handler = Callable[[Event], Awaitable[None]]


@dataclass(frozen=True)
class Subscription:
    event: str
    """The name of the event heard."""
    name: str
    """The subscriber, unique per event (an owner subscribing the same name again replaces it)."""
    handler: Handler


@dataclass
class _Transaction:
    """What a session's transaction holds until it ends."""

    events: list[Event] = field(default_factory=list)
    on_commit: list[Callable[[], None]] = field(default_factory=list)
    on_rollback: list[Callable[[], None]] = field(default_factory=list)


_PENDING = "keel.transaction"
"""`session.info` key: a `_Transaction` while one is open."""
_COMMITTED = "keel.committed_events"
"""`session.info` key: events committed and not yet delivered."""


def _info(session: Any) -> dict[str, Any]:
    return session.info  # an AsyncSession's info is its sync session's


def _pending(session: Any) -> _Transaction:
    return _info(session).setdefault(_PENDING, _Transaction())


def emit(session: Any, name: str, payload: Any = None, *, once: bool = False) -> None:
    """Note `name` (with `payload`) on the session: delivered after its transaction commits,
    never if it rolls back. `once`: a fact rather than a count, so nothing is added when the
    same event (name and payload) is already waiting."""
    pending = _pending(session).events
    happened = Event(name, payload)
    if once and happened in pending:
        return
    pending.append(happened)


def is_pending(session: Any, name: str) -> bool:
    """Whether the session's open transaction has emitted an event called `name`."""
    pending = _info(session).get(_PENDING)
    return pending is not None and any(event.name == name for event in pending.events)


def has_undelivered(session: Any) -> bool:
    """Whether the session committed events that `Events.deliver` has not handed out yet."""
    return bool(_info(session).get(_COMMITTED))


def mark_public_change(session: Any) -> None:
    """Visitors will see something new once the session commits (see `PUBLIC_CHANGED`)."""
    emit(session, PUBLIC_CHANGED, once=True)


def on_commit(session: Any, action: Callable[[], None]) -> None:
    """Run `action` (synchronous, quick, never raising) when the session's transaction commits."""
    _pending(session).on_commit.append(action)


def on_rollback(session: Any, action: Callable[[], None]) -> None:
    """Run `action` when the session's transaction ends without a commit."""
    _pending(session).on_rollback.append(action)


def _run(actions: list[Callable[[], None]]) -> None:
    for action in actions:
        try:
            action()
        except Exception:
            log.exception("transaction end action failed", extra={"action": repr(action)})


@sqlalchemy_event.listens_for(Session, "after_commit")
def _committed(session: Session) -> None:
    pending: _Transaction | None = session.info.pop(_PENDING, None)
    if pending is None:
        return
    session.info.setdefault(_COMMITTED, []).extend(pending.events)
    _run(pending.on_commit)


@sqlalchemy_event.listens_for(Session, "after_transaction_end")
def _ended(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is not None or transaction.nested:
        return
    pending: _Transaction | None = session.info.pop(_PENDING, None)
    if pending is not None:  # the transaction ended without a commit: its events never happened
        _run(pending.on_rollback)


class Events:
    """One runtime's subscriptions, and their delivery after a COMMIT (module docstring)."""

    def __init__(self) -> None:
        self.subscriptions: Registry[tuple[str, str], Subscription] = Registry(
            "event subscription", lambda subscription: (subscription.event, subscription.name)
        )

    def subscribe(
        self, owner: str, event: str, handler: Handler, name: str | None = None
    ) -> Subscription:
        """Call `handler` with each committed event called `event`; `name` (the handler's
        qualified name unless given) tells this subscriber from others of the same event."""
        name = name or getattr(handler, "__qualname__", None) or repr(handler)
        return self.subscriptions.add(owner, Subscription(event, name, handler))

    def unsubscribe(self, owner: str) -> list[Subscription]:
        """Drop every subscription `owner` made."""
        return self.subscriptions.remove(owner)

    async def deliver(self, session: Any) -> None:
        """After the session committed: hand each of its committed events to its
        subscribers (see the module docstring); a session with none costs a dict lookup."""
        committed: list[Event] | None = _info(session).pop(_COMMITTED, None)
        if not committed:
            return
        subscriptions = list(self.subscriptions)
        for happened in committed:
            for subscription in subscriptions:
                if subscription.event != happened.name:
                    continue
                try:
                    await subscription.handler(happened)
                except Exception:
                    log.exception(
                        "event subscriber failed; the change is committed",
                        extra={"event": happened.name, "subscriber": subscription.name},
                    )
