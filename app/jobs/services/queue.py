"""The durable queue: enqueue inside the caller's transaction, claim with a lease, finish
with the lease token, retry with backoff, reap expired leases.

PostgreSQL claims with `SELECT ... FOR UPDATE SKIP LOCKED` and takes every time from its
own clock (`now()`); SQLite (one machine, one writer at a time) claims with one atomic
UPDATE and takes the time from the machine clock, which is then the database's clock too.
"""

from __future__ import annotations

import contextlib
import json
import random
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache, partial
from typing import Any
from uuid import UUID

import asyncpg
from advanced_alchemy.types import JsonB
from sqlalchemy import (
    ColumnElement,
    Float,
    Table,
    bindparam,
    case,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.core.db import dialect_insert, is_unavailable, rows_changed
from app.core.errors import Conflict, DomainError
from app.core.events import Event, Events, emit
from app.core.queueing import provide_queue
from app.core.registry import KEEL
from app.core.store import Store, StoreError
from app.jobs.models import UNFINISHED_SQL, Job, JobStatus
from app.jobs.services.metrics import LEASE_EXPIRED, note_outcome
from app.jobs.services.registry import JobCancelled, JobType, job_type

WAKE_CHANNEL = "jobs:wake"
"""Store pub/sub channel: the message is the queue that has new work."""
JOBS_ADDED = "jobs.added"
"""Event (app/core/events.py), once per queue and transaction: the payload is a queue that
got jobs; after the COMMIT idle workers are woken (`wake_workers`)."""
CLAIM_BATCH = 10
MAX_BACKOFF_SECONDS = 3600.0
LEASE_LOST_ERROR = "lease expired: the worker stopped renewing it"

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


@dataclass(frozen=True)
class Outcome:
    """How one run of a claimed job ended; written in batches by `record_outcomes`."""

    id: int
    lease_token: str
    status: JobStatus
    result: Any = None
    error: str | None = None
    retry_in: float = 0.0
    given_back: bool = False
    """Queued again without counting the attempt (`give_back`)."""


Executor = AsyncSession | AsyncConnection
"""Queue statements run in a caller's session, or on a worker's own autocommit connection."""


def is_postgres(executor: Executor) -> bool:
    bind = executor.get_bind() if isinstance(executor, AsyncSession) else executor
    return bind.dialect.name == "postgresql"


def _now(postgres: bool) -> Any:
    """The database clock on PostgreSQL; the machine clock (shared by all) on SQLite."""
    return func.now() if postgres else datetime.now(UTC)


def _later(postgres: bool, seconds: float) -> Any:
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
    now = _now(postgres)
    return {
        "type": kind.name,
        "queue": options.queue or kind.queue,
        "payload": kind.validate(payload),
        "status": JobStatus.queued.value,
        "priority": options.priority,
        "run_at": _later(postgres, options.delay) if options.delay > 0 else now,
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


def retry_delay(attempt: int, base: float) -> float:
    """Exponential backoff with jitter: about base, 2*base, 4*base, ... (x0.5 to x1.5)."""
    return min(base * 2 ** max(attempt - 1, 0), MAX_BACKOFF_SECONDS) * (0.5 + random.random())  # noqa: S311 (jitter, not a secret)


MAX_ERROR_CHARS = 2000
_DATABASE_ERRORS = (SQLAlchemyError, asyncpg.PostgresError, sqlite3.Error)


def failure_text(exc: Exception, error_id: str) -> str:
    """What people see of a failed attempt (`last_error`, on the API and the job's page).

    A refusal says what its code wrote for people (`DomainError.message`). The text of a
    database or file-system error holds SQL, parameters or paths, so it shows only its
    kind and `error_id`, under which the worker logs the whole exception. Anything else:
    its type and the first line of its text (never a stack frame)."""
    if isinstance(exc, DomainError):
        return exc.message
    kind = type(exc).__name__
    if is_unavailable(exc):
        return f"{kind}: the database was not answering (error id {error_id})."
    if isinstance(exc, _DATABASE_ERRORS):
        return f"An unexpected database error ({kind}), id {error_id}: the log has the details."
    if isinstance(exc, OSError) and not isinstance(exc, TimeoutError):
        what = f"{kind}: {exc.strerror}" if exc.strerror else kind
        return f"An unexpected error ({what}), id {error_id}: the log has the details."
    first_line = next(iter(str(exc).strip().splitlines()), "")
    if not first_line:
        return f"{kind} (error id {error_id})."
    return f"{kind}: {first_line}"[:MAX_ERROR_CHARS]


def failure_outcome(job: ClaimedJob, error: str, base_backoff: float) -> Outcome:
    """A retry in a while, or `dead` once every attempt is spent."""
    error = error.replace("\x00", "")
    if job.attempts >= job.max_attempts:
        return Outcome(job.id, job.lease_token, JobStatus.dead, error=error)
    delay = retry_delay(job.attempts, base_backoff)
    return Outcome(job.id, job.lease_token, JobStatus.queued, error=error, retry_in=delay)


def give_back(job: ClaimedJob, base_backoff: float) -> Outcome:
    """A job of a type this worker does not know (a rolling deploy, a plugin not loaded in
    this process): queued again after about `base_backoff` seconds, the attempt not counted,
    so a worker that knows the type runs it and no number of give-backs makes it `dead`."""
    error = (
        f"No job type {job.type!r} in the worker that claimed it (an older version, or a "
        "plugin not loaded there): given back to the queue."
    )
    delay = retry_delay(1, base_backoff)
    queued = JobStatus.queued
    return Outcome(job.id, job.lease_token, queued, error=error, retry_in=delay, given_back=True)


_RECORD_PG = text(
    """
    UPDATE jobs AS j SET
        status = o.status,
        attempts = CASE WHEN o.given_back THEN greatest(j.attempts - 1, 0) ELSE j.attempts END,
        result = CASE WHEN o.status = 'succeeded' THEN CAST(o.result AS jsonb) ELSE j.result END,
        last_error = COALESCE(o.error, j.last_error),
        progress = CASE WHEN o.status = 'succeeded' THEN 100 ELSE j.progress END,
        run_at = CASE WHEN o.status = 'queued'
            THEN now() + make_interval(secs => o.delay) ELSE j.run_at END,
        finished_at = CASE WHEN o.status = 'queued' THEN NULL ELSE now() END,
        lease_token = NULL,
        lease_expires_at = NULL,
        updated_at = now()
    FROM unnest(
        CAST(:ids AS bigint[]), CAST(:tokens AS text[]), CAST(:statuses AS text[]),
        CAST(:results AS text[]), CAST(:errors AS text[]), CAST(:delays AS float8[]),
        CAST(:given_back AS boolean[])
    ) AS o(id, token, status, result, error, delay, given_back)
    WHERE j.id = o.id AND j.lease_token = o.token
    RETURNING j.id
    """
)


async def record_outcomes(session: Executor, outcomes: Sequence[Outcome]) -> set[int]:
    """Write how claimed jobs ended, in one statement on PostgreSQL. Only runs that still
    hold their lease are written; the ids returned are those (the rest lost their lease).

    A lease token is cleared whenever a job leaves `running` (finish, cancel, reap,
    release), so matching id and token is the whole check, and the primary key finds
    the rows (a status condition tempts the planner into the lease index, whose dead
    entries pile up between vacuums)."""
    if not outcomes:
        return set()
    if is_postgres(session):
        rows = await session.execute(
            _RECORD_PG,
            {
                "ids": [o.id for o in outcomes],
                "tokens": [o.lease_token for o in outcomes],
                "statuses": [o.status.value for o in outcomes],
                "results": [None if o.result is None else json.dumps(o.result) for o in outcomes],
                "errors": [o.error for o in outcomes],
                "delays": [o.retry_in for o in outcomes],
                "given_back": [o.given_back for o in outcomes],
            },
        )
        return {row[0] for row in rows}
    written = set()
    for outcome in outcomes:
        now = datetime.now(UTC)
        changes: dict[str, Any] = {
            "status": outcome.status.value,
            "lease_token": None,
            "lease_expires_at": None,
            "updated_at": now,
            "finished_at": None if outcome.status == JobStatus.queued else now,
        }
        if outcome.status == JobStatus.succeeded:
            changes.update(result=outcome.result, progress=100)
        if outcome.error is not None:
            changes["last_error"] = outcome.error
        if outcome.status == JobStatus.queued:
            changes["run_at"] = now + timedelta(seconds=outcome.retry_in)
        if outcome.given_back:
            changes["attempts"] = func.max(c.attempts - 1, 0)
        changed = await rows_changed(
            session,
            update(jobs)
            .where(
                c.id == outcome.id,
                c.lease_token == outcome.lease_token,
                c.status == JobStatus.running.value,
            )
            .values(changes),
        )
        if changed:
            written.add(outcome.id)
    return written


async def report_progress(
    session: AsyncSession,
    job_id: int,
    lease_token: str,
    percent: int,
    message: str,
    lease_seconds: float,
) -> None:
    """Store progress and renew the lease; JobCancelled when the run no longer holds it."""
    postgres = is_postgres(session)
    changed = await rows_changed(
        session,
        update(jobs)
        .where(c.id == job_id, c.lease_token == lease_token, c.status == JobStatus.running.value)
        .values(
            progress=percent,
            progress_message=message,
            lease_expires_at=_later(postgres, lease_seconds),
            updated_at=_now(postgres),
        ),
    )
    if not changed:
        raise JobCancelled(f"job {job_id} was cancelled or its lease was lost")


def _held(leases: Mapping[str, int]) -> ColumnElement[bool]:
    """The rows of these leases (token -> job id), found by primary key."""
    return c.id.in_(list(leases.values())) & c.lease_token.in_(list(leases))


async def renew_leases(
    session: AsyncSession, leases: Mapping[str, int], lease_seconds: float
) -> set[str]:
    """Extend the leases (token -> job id) this worker still holds; returns the tokens
    that are still valid."""
    if not leases:
        return set()
    postgres = is_postgres(session)
    rows = await session.execute(
        update(jobs)
        .where(_held(leases))
        .values(lease_expires_at=_later(postgres, lease_seconds))
        .returning(c.lease_token)
    )
    return {row[0] for row in rows}


async def release_jobs(session: AsyncSession, leases: Mapping[str, int]) -> int:
    """Give unfinished jobs (token -> job id) back to the queue at shutdown; the attempt
    does not count."""
    if not leases:
        return 0
    postgres = is_postgres(session)
    return await rows_changed(
        session,
        update(jobs)
        .where(_held(leases))
        .values(
            status=JobStatus.queued.value,
            attempts=(func.greatest if postgres else func.max)(c.attempts - 1, 0),
            lease_token=None,
            lease_expires_at=None,
            run_at=_now(postgres),
            updated_at=_now(postgres),
        ),
    )


async def reap_expired_leases(session: AsyncSession) -> list[int]:
    """Queue again the jobs whose worker stopped renewing its lease (or `dead` when no
    attempt is left). Any worker may run this; each expired job is reaped once (and
    counted, `note_outcome`, once the session commits)."""
    postgres = is_postgres(session)
    now = _now(postgres)
    spent = c.attempts >= c.max_attempts
    rows = await session.execute(
        update(jobs)
        .where(c.status == JobStatus.running.value, c.lease_expires_at < now)
        .values(
            status=case((spent, JobStatus.dead.value), else_=JobStatus.queued.value),
            finished_at=case((spent, now), else_=None),
            last_error=LEASE_LOST_ERROR,
            lease_token=None,
            lease_expires_at=None,
            run_at=now,
            updated_at=now,
        )
        .returning(c.id, c.type, c.status)
    )
    reaped = []
    for job_id, type, status in rows:
        note_outcome(session, type, "dead" if status == JobStatus.dead.value else LEASE_EXPIRED)
        reaped.append(job_id)
    return reaped


class JobStateError(Conflict):
    """The job is not in a state that allows what was asked (cancel a finished job, ...)."""


async def cancel_job(session: AsyncSession, job_id: int) -> Job:
    """Cancel a queued job at once; a running one gives up its lease now and its handler
    stops at its next progress report (nothing it returns afterwards is kept)."""
    postgres = is_postgres(session)
    now = _now(postgres)
    row = await session.execute(
        update(jobs)
        .where(c.id == job_id, c.status.in_([JobStatus.queued.value, JobStatus.running.value]))
        .values(
            status=JobStatus.cancelled.value,
            lease_token=None,
            lease_expires_at=None,
            finished_at=now,
            updated_at=now,
        )
        .returning(c.id)
    )
    if row.first() is None:
        raise JobStateError("Only a queued or running job can be cancelled.")
    job = await _fresh(session, job_id)
    note_outcome(session, job.type, "cancelled")
    return job


RETRYABLE = (JobStatus.failed.value, JobStatus.dead.value, JobStatus.cancelled.value)


async def retry_job(session: AsyncSession, job_id: int) -> Job:
    """Queue a failed, dead or cancelled job again with a full set of attempts."""
    postgres = is_postgres(session)
    now = _now(postgres)
    try:
        async with session.begin_nested():
            row = await session.execute(
                update(jobs)
                .where(c.id == job_id, c.status.in_(RETRYABLE))
                .values(
                    status=JobStatus.queued.value,
                    attempts=0,
                    run_at=now,
                    progress=0,
                    progress_message="",
                    result=None,
                    finished_at=None,
                    started_at=None,
                    updated_at=now,
                )
                .returning(c.id, c.queue)
            )
            found = row.first()
    except IntegrityError:
        raise JobStateError("Another run of this job is already queued or running.") from None
    if found is None:
        raise JobStateError("Only a failed, dead or cancelled job can be retried.")
    emit(session, JOBS_ADDED, found.queue, once=True)
    return await _fresh(session, job_id)


async def _fresh(session: AsyncSession, job_id: int) -> Job:
    job = await session.get(Job, job_id, populate_existing=True)
    assert job is not None
    return job


provide_queue(enqueue, enqueue_many)  # accounts adds its e-mails through app/core/queueing.py
