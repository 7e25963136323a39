"""The durable queue: enqueue inside the caller's transaction, wake idle workers after the
COMMIT, claim with a lease. How runs end (outcomes, leases, cancel, retry) is
`outcomes.py`.

PostgreSQL claims with `SELECT ... FOR UPDATE SKIP LOCKED` and takes every time from its
own clock (`now()`); SQLite (one machine, one writer at a time) claims with one atomic
UPDATE and takes the time from the machine clock, which is then the database's clock too.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache, partial
from typing import Any
from uuid import UUID

from advanced_alchemy.types import JsonB
from sqlalchemy import (
    Float,
    Table,
    bindparam,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.core.db import dialect_insert
from app.core.events import Event, Events, emit
from app.core.queueing import provide_queue
from app.core.registry import KEEL
from app.core.store import Store, StoreError
from app.jobs.models import UNFINISHED_SQL, Job, JobStatus
from app.jobs.services.registry import JobType, job_type

WAKE_CHANNEL = "jobs:wake"
"""Store pub/sub channel: the message is the queue that has new work."""
JOBS_ADDED = "jobs.added"
"""Event (app/core/events.py), once per queue and transaction: the payload is a queue that
got jobs; after the COMMIT idle workers are woken (`wake_workers`)."""
CLAIM_BATCH = 10

jobs: Table = Job.metadata.tables[Job.__tablename__]  # Job.__table__, typed as a Table
c = jobs.c


@dataclass(frozen=True)
class ClaimedJob:
    """A job this worker holds the lease of."""

    id: int
    type: str
    queue: str
    payload: dict[str, Any]
    attempts: int
    max_attempts: int
    lease_token: str
    waited: float = 0.0
    """Seconds between becoming due (`run_at`) and this claim: the queue's latency."""


Executor = AsyncSession | AsyncConnection
"""Queue statements run in a caller's session, or on a worker's own autocommit connection."""


def is_postgres(executor: Executor) -> bool:
    bind = executor.get_bind() if isinstance(executor, AsyncSession) else executor
    return bind.dialect.name == "postgresql"


def db_now(postgres: bool) -> Any:
    """The database clock on PostgreSQL; the machine clock (shared by all) on SQLite."""
    return func.now() if postgres else datetime.now(UTC)


def db_later(postgres: bool, seconds: float) -> Any:
    if postgres:
        return func.now() + func.make_interval(0, 0, 0, 0, 0, 0, seconds)
    return datetime.now(UTC) + timedelta(seconds=seconds)


@dataclass(frozen=True)
class JobOptions:
    """How a job is queued, beside its type and payload (see `enqueue`)."""

    queue: str | None = None
    priority: int = 0
    delay: float = 0.0
    created_by: UUID | None = None
    max_attempts: int | None = None
    created_by_api_key: UUID | None = None


def _job_row(
    postgres: bool, kind: JobType, payload: Any, options: JobOptions, unique_key: str | None
) -> dict[str, Any]:
    now = db_now(postgres)
    return {
        "type": kind.name,
        "queue": options.queue or kind.queue,
        "payload": kind.validate(payload),
        "status": JobStatus.queued.value,
        "priority": options.priority,
        "run_at": db_later(postgres, options.delay) if options.delay > 0 else now,
        "attempts": 0,
        "max_attempts": options.max_attempts or kind.max_attempts,
        "progress": 0,
        "progress_message": "",
        "unique_key": unique_key,
        "created_by_id": options.created_by,
        "created_by_api_key_id": options.created_by_api_key,
        "created_at": now,
        "updated_at": now,
    }


@cache
def _insert_statement(postgres: bool, delayed: bool) -> Any:
    """One job's INSERT, built and compiled once: on PostgreSQL the database clock fills
    the times (`delay_seconds` later for a delayed job); everything else is a parameter.
    (Building `insert().values(row)` per call cost more than the round trip.)"""
    statement = insert(jobs)
    if postgres:
        now = func.now()
        delay = func.make_interval(0, 0, 0, 0, 0, 0, bindparam("delay_seconds", type_=Float))
        run_at = now + delay if delayed else now
        statement = statement.values(run_at=run_at, created_at=now, updated_at=now)
    return statement.returning(c.id)


def _insert_one(postgres: bool, row: dict[str, Any], delay: float) -> tuple[Any, dict[str, Any]]:
    """The statement and parameters that insert `row` (see `_insert_statement`)."""
    delayed = delay > 0
    if not postgres:
        return _insert_statement(False, False), row
    params = {k: v for k, v in row.items() if k not in ("run_at", "created_at", "updated_at")}
    if delayed:
        params["delay_seconds"] = delay
    return _insert_statement(True, delayed), params


async def enqueue(
    session: AsyncSession,
    type: str,
    payload: dict[str, Any] | None = None,
    *,
    queue: str | None = None,
    priority: int = 0,
    delay: float = 0.0,
    unique_key: str | None = None,
    created_by: UUID | None = None,
    max_attempts: int | None = None,
    created_by_api_key: UUID | None = None,
) -> int:
    """Add a job in the caller's transaction (no commit): it exists exactly when the
    caller's change commits. Returns its id; with a `unique_key` that an unfinished job
    already holds, returns that job's id and adds nothing. Raises JobInputError for an
    unknown type or a payload that does not fit it."""
    postgres = is_postgres(session)
    options = JobOptions(queue, priority, delay, created_by, max_attempts, created_by_api_key)
    values = _job_row(postgres, job_type(type), payload, options, unique_key)
    if unique_key is None:
        job_id = await session.scalar(*_insert_one(postgres, values, options.delay))
    else:
        statement = dialect_insert(session, jobs).values(values)
        statement = statement.on_conflict_do_nothing(
            index_elements=["unique_key"],
            index_where=text(UNFINISHED_SQL + " AND unique_key IS NOT NULL"),
        )
        job_id = await session.scalar(statement.returning(c.id))
        if job_id is None:
            job_id = await session.scalar(
                select(c.id).where(c.unique_key == unique_key, text(UNFINISHED_SQL))
            )
    emit(session, JOBS_ADDED, values["queue"], once=True)
    return int(job_id)


async def enqueue_many(
    session: AsyncSession,
    type: str,
    payloads: Sequence[dict[str, Any] | None],
    options: JobOptions | None = None,
) -> list[int]:
    """Add many jobs of one type with one INSERT in the caller's transaction (the same
    rules as `enqueue`, without unique keys): a service that fans work out, say one
    notification per user, pays one round trip instead of one per job."""
    if not payloads:
        return []
    kind = job_type(type)
    options = options or JobOptions()
    queue = options.queue or kind.queue
    if is_postgres(session):
        ids = await session.scalars(
            _ENQUEUE_MANY_PG,
            {
                "type": kind.name,
                "queue": queue,
                "priority": options.priority,
                "delay": options.delay,
                "max_attempts": options.max_attempts or kind.max_attempts,
                "created_by": options.created_by,
                "created_by_api_key": options.created_by_api_key,
                "payloads": [json.dumps(kind.validate(p)) for p in payloads],
            },
        )
    else:
        rows = [_job_row(False, kind, p, options, None) for p in payloads]
        ids = await session.scalars(insert(jobs).values(rows).returning(c.id))
    emit(session, JOBS_ADDED, queue, once=True)
    return list(ids)


_ENQUEUE_MANY_PG = text(
    """
    INSERT INTO jobs (type, queue, payload, status, priority, run_at, attempts, max_attempts,
        progress, progress_message, created_by_id, created_by_api_key_id, created_at, updated_at)
    SELECT :type, :queue, CAST(p AS jsonb), 'queued', :priority,
        now() + make_interval(secs => :delay), 0, :max_attempts, 0, '',
        CAST(:created_by AS uuid), CAST(:created_by_api_key AS uuid), now(), now()
    FROM unnest(CAST(:payloads AS text[])) WITH ORDINALITY AS rows(p, n)
    ORDER BY n
    RETURNING id
    """
)
"""Plain SQL on PostgreSQL: one statement whatever the number of jobs, no per-row building."""


async def wake_workers(store: Store, event: Event) -> None:
    """After a commit: tell idle workers that a queue got new jobs (polling covers a miss)."""
    with contextlib.suppress(*StoreError):
        await store.publish(WAKE_CHANNEL, event.payload)


def subscribe_wake_ups(events: Events, store: Store) -> None:
    """Wake idle workers (through `store`) after each commit that added jobs."""
    events.subscribe(KEEL, JOBS_ADDED, partial(wake_workers, store), name="jobs.wake_workers")


_CLAIM_PG = """
    WITH chosen AS (
        SELECT id FROM jobs
        WHERE status = 'queued' AND {queues} AND run_at <= now()
        ORDER BY priority, run_at, id
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    )
    UPDATE jobs SET
        status = 'running',
        attempts = jobs.attempts + 1,
        lease_owner = :owner,
        lease_token = CAST(gen_random_uuid() AS text),
        lease_expires_at = now() + make_interval(secs => :lease),
        started_at = now(),
        updated_at = now(),
        progress = 0,
        progress_message = ''
    FROM chosen WHERE jobs.id = chosen.id
    RETURNING jobs.id, jobs.type, jobs.queue, jobs.payload, jobs.attempts, jobs.max_attempts,
        jobs.lease_token, CAST(GREATEST(EXTRACT(EPOCH FROM now() - jobs.run_at), 0) AS float8)
"""
_CLAIM_ONE_QUEUE = text(_CLAIM_PG.format(queues="queue = :queue")).columns(payload=JsonB)
_CLAIM_QUEUES = text(_CLAIM_PG.format(queues="queue = ANY(:queues)")).columns(payload=JsonB)
"""Plain SQL on PostgreSQL: the claim runs thousands of times a second, and one queue (the
usual case) compares with `=` so the claim index serves the rows in order."""


async def claim_jobs(
    executor: Executor,
    owner: str,
    queues: Sequence[str],
    limit: int,
    lease_seconds: float,
) -> list[ClaimedJob]:
    """Take up to `limit` due jobs, lowest priority value first, each with a fresh lease token.
    One statement: atomic on its own or inside the caller's transaction. Concurrent
    claimers never get the same job."""
    if is_postgres(executor):
        many = len(queues) > 1
        rows = await executor.execute(
            _CLAIM_QUEUES if many else _CLAIM_ONE_QUEUE,
            {
                "limit": limit,
                "owner": owner,
                "lease": lease_seconds,
                **({"queues": list(queues)} if many else {"queue": queues[0]}),
            },
        )
        return [ClaimedJob(*row) for row in rows]
    now = datetime.now(UTC)
    due = (
        select(c.id)
        .where(c.status == JobStatus.queued.value, c.queue.in_(queues), c.run_at <= now)
        .order_by(c.priority, c.run_at, c.id)
        .limit(limit)
    )
    changes = {
        "status": JobStatus.running.value,
        "attempts": c.attempts + 1,
        "lease_owner": owner,
        "lease_token": func.lower(func.hex(func.randomblob(16))),
        "lease_expires_at": now + timedelta(seconds=lease_seconds),
        "started_at": now,
        "updated_at": now,
        "progress": 0,
        "progress_message": "",
    }
    returned = (c.id, c.type, c.queue, c.payload, c.attempts, c.max_attempts, c.lease_token)
    statement = update(jobs).where(c.id.in_(due.scalar_subquery())).values(changes)
    rows = await executor.execute(statement.returning(*returned, c.run_at))
    return [
        ClaimedJob(
            row.id,
            row.type,
            row.queue,
            row.payload,
            row.attempts,
            row.max_attempts,
            row.lease_token,
            waited=max((now - row.run_at).total_seconds(), 0.0),
        )
        for row in rows
    ]


provide_queue(enqueue, enqueue_many)  # accounts adds its e-mails through app/core/queueing.py
