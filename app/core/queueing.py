"""Adding a job from below the jobs domain: accounts' e-mails (a `notify` job, added in the
caller's transaction) go through `enqueue` here, which `app.jobs.services.queue` provides when it is
imported (`provide_queue`). The jobs domain sits above accounts (its job types, pages and
imports use accounts), so accounts may not import it; the web app, the worker and the CLI
all import it before any request or job runs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.ext.asyncio import AsyncSession


class Enqueue(Protocol):
    async def __call__(
        self, session: AsyncSession, type: str, payload: dict[str, Any] | None = None
    ) -> int: ...


class EnqueueMany(Protocol):
    async def __call__(
        self, session: AsyncSession, type: str, payloads: Sequence[dict[str, Any] | None]
    ) -> list[int]: ...


@dataclass(frozen=True)
class _Queue:
    enqueue: Enqueue
    enqueue_many: EnqueueMany


_provided: list[_Queue] = []


def provide_queue(enqueue_one: Enqueue, enqueue_several: EnqueueMany) -> None:
    """Called once by `app.jobs.services.queue`: the functions behind `enqueue` and
    `enqueue_many`."""
    _provided[:] = [_Queue(enqueue_one, enqueue_several)]


def _queue() -> _Queue:
    if not _provided:
        raise RuntimeError("no job queue: app.jobs.services.queue is not imported in this process")
    return _provided[0]


async def enqueue(session: AsyncSession, type: str, payload: dict[str, Any] | None = None) -> int:
    """Add a job of `type` in the session's transaction (see `app.jobs.services.queue.enqueue`)."""
    return await _queue().enqueue(session, type, payload)


async def enqueue_many(
    session: AsyncSession, type: str, payloads: Sequence[dict[str, Any] | None]
) -> list[int]:
    """Add jobs of one `type` with one INSERT (see `app.jobs.services.queue.enqueue_many`)."""
    return await _queue().enqueue_many(session, type, payloads)
