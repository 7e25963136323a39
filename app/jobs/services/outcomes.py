"""How a claimed job's run ends: outcomes written with the lease token in batches, retries
with backoff, progress, lease renewal, release and reaping; cancel and retry by a person.
Times come from the database's clock as in `queue.py`."""

from __future__ import annotations

import json
import random
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
from sqlalchemy import (
    ColumnElement,
    case,
    func,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import is_unavailable, rows_changed
from app.core.errors import Conflict, DomainError
from app.core.events import emit
from app.jobs.models import Job, JobStatus
from app.jobs.services.metrics import LEASE_EXPIRED, note_outcome
from app.jobs.services.queue import (
    JOBS_ADDED,
    ClaimedJob,
    Executor,
    c,
    db_later,
    db_now,
    is_postgres,
    jobs,
)
from app.jobs.services.registry import JobCancelled

MAX_BACKOFF_SECONDS = 3600.0
LEASE_LOST_ERROR = "lease expired: the worker stopped renewing it"


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
        f"No job type {job.type!r} in the worker that claimed it (a plugin that is not "
        "active, or not loaded there; an older version of Keel): it waits in the queue "
        "and runs once a worker has the type."
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
            lease_expires_at=db_later(postgres, lease_seconds),
            updated_at=db_now(postgres),
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
        .values(lease_expires_at=db_later(postgres, lease_seconds))
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
            run_at=db_now(postgres),
            updated_at=db_now(postgres),
        ),
    )


async def reap_expired_leases(session: AsyncSession) -> list[int]:
    """Queue again the jobs whose worker stopped renewing its lease (or `dead` when no
    attempt is left). Any worker may run this; each expired job is reaped once (and
    counted, `note_outcome`, once the session commits)."""
    postgres = is_postgres(session)
    now = db_now(postgres)
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
    now = db_now(postgres)
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
    now = db_now(postgres)
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
