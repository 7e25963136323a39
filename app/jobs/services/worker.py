"""The `keel worker` loop: claim jobs in batches, run them in bounded slots, renew leases,
write outcomes in batches, heartbeat, and stop gracefully.

Idle workers sleep until a wake-up arrives on the store's `jobs:wake` channel (sent after
an enqueue commits) or `WORKER_POLL_INTERVAL` passes, so an idle queue costs no busy loop.
On SIGTERM/SIGINT a worker stops claiming, gives running jobs `WORKER_SHUTDOWN_GRACE`
seconds, gives the rest back to the queue, and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from app.content.services.page_cache import Invalidations
from app.core.db import is_unavailable
from app.core.errors import log_failure, new_error_id
from app.core.events import PUBLIC_CHANGED, Events
from app.core.metrics import Tally
from app.core.registry import KEEL
from app.core.store import Store, StoreUnavailable
from app.core.tasks import cancel_and_wait, stop_if_cancelled
from app.jobs.models import JobStatus
from app.jobs.services import outcomes, queue
from app.jobs.services.metrics import (
    GIVEN_BACK,
    JOBS_PROCESSED,
    JOBS_WAIT,
    OUTCOMES,
    subscribe_outcomes,
)
from app.jobs.services.outcomes import Outcome
from app.jobs.services.queue import ClaimedJob, subscribe_wake_ups
from app.jobs.services.registry import (
    JOB_TYPES,
    JobCancelled,
    JobContext,
    JobFailed,
    JobInputError,
    files_dir,
    load_job_modules,
)
from app.jobs.services.schedules import SCHEDULE_CHECK_SECONDS, enqueue_due_schedules
from app.settings import Settings

log = logging.getLogger("keel.worker")


@dataclass(frozen=True)
class PeriodicTask:
    name: str
    every_seconds: float
    run: Callable[[], Awaitable[None]]


HEARTBEAT_PREFIX = "workers:"
CURRENT_JOBS_SHOWN = 5
"""A heartbeat names at most this many of the jobs its worker runs."""


def storable(value: Any) -> Any:
    """`value` as JSON PostgreSQL accepts (no NUL characters); TypeError when it is not JSON."""
    text = json.dumps(value)
    return json.loads(text.replace("\\u0000", "")) if "\\u0000" in text else value


class QueueLine:
    """A connection the worker keeps open, in autocommit mode, for its own queue statements
    (claims, outcomes): each is one atomic statement, so a batch costs one round trip
    instead of a pool checkout, a ping, BEGIN and COMMIT.

    On PostgreSQL these commits do not wait for the disk: a database crash can lose the last
    claims or outcomes, which only makes those jobs run again, as at-least-once delivery
    allows. A broken connection is replaced at the next use.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self.connection: AsyncConnection | None = None

    async def open(self) -> AsyncConnection:
        if self.connection is None or self.connection.closed:
            connection = await self.engine.connect()
            connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
            if connection.dialect.name == "postgresql":
                await connection.exec_driver_sql("SET synchronous_commit TO off")
            self.connection = connection
        return self.connection

    async def close(self) -> None:
        connection, self.connection = self.connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()


class Worker:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        queues: tuple[str, ...] = ("default",),
        concurrency: int | None = None,
        mode: str = "process",
        periodic: tuple[PeriodicTask, ...] = (),
        schedules: bool = True,
        companions: tuple[Callable[[], Coroutine[Any, Any, None]], ...] = (),
    ) -> None:
        self.settings = settings
        self.config = settings.worker
        self.store = store
        self.sessionmaker = sessionmaker
        self.queues = queues
        self.concurrency = concurrency or self.config.concurrency
        self.mode = mode
        self.periodic = periodic
        self.run_schedules = schedules
        self.companions = companions
        """Loops that run as long as the worker does (`keel worker`: the plugin host's
        `follow`, so plugins activated anywhere run here too); cancelled when it stops."""
        self.files_dir = files_dir(settings)
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.started_at = time.time()
        self.processed = 0
        self.figures = Tally()
        """Runs started and finished, for `/metrics`: flushed to the store with each heartbeat."""
        self.invalidations = Invalidations(store)
        """New cache generations after jobs' public changes; one the store did not take is
        started as soon as it answers."""
        self.events = Events()
        """What follows the COMMIT of a job's `transaction()` and of the worker's own writes:
        wake-ups, cache invalidation, job figures (app/core/events.py)."""
        subscribe_wake_ups(self.events, store)
        subscribe_outcomes(self.events, self.figures)
        self.events.subscribe(KEEL, PUBLIC_CHANGED, self.invalidations.on_public_change)
        self.running: dict[asyncio.Task[Any], ClaimedJob] = {}
        self._held: dict[str, ClaimedJob] = {}
        """Leases this worker holds: running jobs and finished ones not yet written."""
        self._lost: set[str] = set()
        self._outcomes: list[Outcome] = []
        self._outcome_ready = asyncio.Event()
        self._slot_free = asyncio.Event()
        self._wake = asyncio.Event()
        self._stopping = asyncio.Event()
        self._last_run: dict[str, float] = {}
        engine = sessionmaker.kw["bind"]
        self._claim_line = QueueLine(engine)
        self._outcome_line = QueueLine(engine)
        self._own_rows = asyncio.Lock()
        """Taken by statements that lock several of this worker's jobs (outcomes, renewals),
        so they never lock the same rows in opposite orders (a deadlock)."""

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def request_stop(self) -> None:
        """Stop claiming new work; running work gets the grace period to finish."""
        if not self._stopping.is_set():
            log.info("worker stopping", extra={"worker_id": self.id, "running": len(self.running)})
            self._stopping.set()
            self._wake.set()
            self._slot_free.set()  # a claim loop waiting for a slot must see the stop too

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        """Claim and run jobs until asked to stop, then drain within the grace period."""
        load_job_modules(self.config.job_modules)
        log.info(
            "worker started",
            extra={
                "worker_id": self.id,
                "queues": list(self.queues),
                "concurrency": self.concurrency,
            },
        )
        await self.heartbeat()
        helpers = [
            asyncio.create_task(self._heartbeat_loop()),
            asyncio.create_task(self._listen_for_wakeups()),
            asyncio.create_task(self._lease_loop()),
            asyncio.create_task(self._outcome_writer()),
        ]
        if self.run_schedules:
            helpers.append(asyncio.create_task(self._schedule_loop()))
        helpers.extend(asyncio.create_task(companion()) for companion in self.companions)
        try:
            await self._claim_loop()
            await self._drain()
        finally:
            await cancel_and_wait(*helpers)
            await self._write_outcomes()
            await self._release_held()
            await self.figures.flush(self.store)
            await self.invalidations.stop()
            await self._claim_line.close()
            await self._outcome_line.close()
            with contextlib.suppress(*StoreUnavailable):
                await self.store.delete(HEARTBEAT_PREFIX + self.id)
        log.info("worker stopped", extra={"worker_id": self.id, "processed": self.processed})

    # -- claiming ---------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        while not self.stopping:
            free = self.concurrency - len(self.running)
            if free <= 0:
                self._slot_free.clear()
                if not self.stopping:
                    await self._slot_free.wait()
                continue
            wanted = min(free, queue.CLAIM_BATCH)
            self._wake.clear()
            try:
                claimed = await self._claim(wanted)
            except Exception as exc:
                log.warning(
                    "claiming jobs failed", extra={"worker_id": self.id, "error": repr(exc)}
                )
                claimed = []
            for job in claimed:
                self._start(job)
            if len(claimed) == wanted:
                continue  # there may be more
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.config.poll_interval)

    async def _claim(self, limit: int) -> list[ClaimedJob]:
        try:
            return await queue.claim_jobs(
                await self._claim_line.open(),
                self.id,
                self.queues,
                limit,
                self.config.lease_seconds,
            )
        except BaseException:
            await self._claim_line.close()
            raise

    def _start(self, job: ClaimedJob) -> None:
        self._held[job.lease_token] = job
        self.figures.observe(JOBS_WAIT, (job.type,), job.waited)
        task = asyncio.create_task(self._execute(job))
        self.running[task] = job
        task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self.running.pop(task, None)
        self._slot_free.set()
        if not task.cancelled() and task.exception() is not None:
            log.error("job task failed", exc_info=task.exception(), extra={"worker_id": self.id})

    # -- running one job ----------------------------------------------------------------

    async def _execute(self, job: ClaimedJob) -> None:
        """Run the handler and queue its outcome; a cancelled task (shutdown, lost lease)
        leaves the job to be released or to whoever holds it now."""
        outcome = await self._outcome_of(job)
        if outcome is None or job.lease_token in self._lost:
            self._held.pop(job.lease_token, None)
            return
        self._outcomes.append(outcome)
        self._outcome_ready.set()

    async def _outcome_of(self, job: ClaimedJob) -> Outcome | None:
        base = self.config.retry_backoff
        kind = JOB_TYPES.get(job.type)
        if kind is None:
            return outcomes.give_back(job, base)
        try:
            payload = kind.parse(job.payload)
        except JobInputError as exc:
            return Outcome(job.id, job.lease_token, JobStatus.failed, error=exc.message)
        context: JobContext[Any] = JobContext(
            job_id=job.id,
            type=job.type,
            attempt=job.attempts,
            payload=payload,
            sessionmaker=self.sessionmaker,
            files_dir=self.files_dir,
            store=self.store,
            report=lambda percent, message: self._report(job, percent, message),
            file_retention=timedelta(hours=self.config.export_retention_hours),
            mail=self.settings.mail,
            events=self.events,
        )
        deadline = asyncio.timeout(kind.timeout)
        try:
            async with deadline:
                returned = await kind.run(context)
        except JobCancelled:
            return None
        except JobFailed as exc:
            return Outcome(job.id, job.lease_token, JobStatus.failed, error=str(exc) or "failed")
        except Exception as exc:
            if isinstance(exc, TimeoutError) and deadline.expired():  # not the handler's own
                return outcomes.failure_outcome(job, f"timed out after {kind.timeout:g} s", base)
            error_id = new_error_id()
            log.warning(
                "job attempt failed",
                exc_info=exc,
                extra={
                    "job_id": job.id,
                    "type": job.type,
                    "attempt": job.attempts,
                    "error_id": error_id,
                },
            )
            return outcomes.failure_outcome(job, outcomes.failure_text(exc, error_id), base)
        result = returned
        if context.files:
            result = returned if isinstance(returned, dict) else {"value": returned}
            result = {**result, "files": context.files}
        try:
            result = storable(result)
        except (TypeError, ValueError) as exc:
            error = f"the handler's result cannot be stored as JSON: {exc}"
            return Outcome(job.id, job.lease_token, JobStatus.failed, error=error[:2000])
        return Outcome(job.id, job.lease_token, JobStatus.succeeded, result=result)

    async def _report(self, job: ClaimedJob, percent: int, message: str) -> None:
        if job.lease_token in self._lost:
            raise JobCancelled(f"job {job.id} lost its lease")
        async with self.sessionmaker() as session, session.begin():
            await outcomes.report_progress(
                session, job.id, job.lease_token, percent, message, self.config.lease_seconds
            )

    # -- outcomes, leases, shutdown -----------------------------------------------------

    async def _outcome_writer(self) -> None:
        """Write outcomes as they come; under load each write carries everything that
        finished while the previous one was in flight."""
        while True:
            stop_if_cancelled()
            await self._outcome_ready.wait()
            self._outcome_ready.clear()
            try:
                await self._write_outcomes()
            except Exception as exc:
                log.warning("writing outcomes failed", extra={"error": repr(exc)})
                await asyncio.sleep(min(self.config.poll_interval, 1.0))
                self._outcome_ready.set()

    async def _write_outcomes(self) -> None:
        if not self._outcomes:
            return
        batch, self._outcomes = self._outcomes, []
        try:
            try:
                written = await self._record(batch)
            except Exception as exc:
                if is_unavailable(exc):
                    raise
                written = await self._record_one_by_one(batch)
        except BaseException:  # down, or cancelled at shutdown: written by the next call
            self._outcomes[:0] = [o for o in batch if o.lease_token in self._held]
            raise
        for outcome in batch:
            self._held.pop(outcome.lease_token, None)
            if outcome.id not in written:
                log.warning(
                    "job outcome discarded: lease lost",
                    extra={"job_id": outcome.id, "status": outcome.status.value},
                )
        self.processed += len(written)

    async def _record(self, batch: list[Outcome]) -> set[int]:
        try:
            async with self._own_rows:
                written = await outcomes.record_outcomes(await self._outcome_line.open(), batch)
        except BaseException:
            await self._outcome_line.close()
            raise
        for outcome in batch:
            if outcome.id in written and (job := self._held.get(outcome.lease_token)):
                outcome_label = GIVEN_BACK if outcome.given_back else OUTCOMES[outcome.status]
                self.figures.add(JOBS_PROCESSED, (job.type, outcome_label))
        return written

    async def _record_one_by_one(self, batch: list[Outcome]) -> set[int]:
        """A batch the database refused (not for being down): write each outcome alone, and
        one that cannot be stored as the job's failure, so no bad outcome blocks the rest."""
        written: set[int] = set()
        for outcome in batch:
            try:
                written |= await self._record([outcome])
            except Exception as exc:
                if is_unavailable(exc):
                    raise
                log.warning("job outcome refused", extra={"job_id": outcome.id, "error": repr(exc)})
                error = f"the outcome could not be stored: {type(exc).__name__}"
                failed = Outcome(outcome.id, outcome.lease_token, JobStatus.failed, error=error)
                written |= await self._record([failed])
            self._held.pop(outcome.lease_token, None)
        return written

    async def _lease_loop(self) -> None:
        """Renew what this worker holds and requeue jobs of workers that died."""
        every = self.config.lease_seconds / 3
        while True:
            stop_if_cancelled()
            await asyncio.sleep(every)
            try:
                await self.renew_leases()
                async with self.sessionmaker() as session, session.begin():
                    reaped = await outcomes.reap_expired_leases(session)
                await self.events.deliver(session)
                if reaped:
                    log.info("requeued jobs of a lost worker", extra={"job_ids": reaped})
                    self._wake.set()
            except Exception as exc:
                log.warning("lease upkeep failed", extra={"error": repr(exc)})

    async def renew_leases(self) -> None:
        leases = {token: job.id for token, job in self._held.items()}
        if not leases:
            return
        async with self._own_rows, self.sessionmaker() as session, session.begin():
            kept = await outcomes.renew_leases(session, leases, self.config.lease_seconds)
        held = set(leases)
        lost = held - kept - {o.lease_token for o in self._outcomes}
        lost &= set(self._held)  # outcomes written meanwhile are not lost
        if not lost:
            return
        self._lost |= lost
        for token in lost:
            self._held.pop(token, None)
        for task, job in list(self.running.items()):
            if job.lease_token in lost:
                log.warning("job lease lost; stopping its handler", extra={"job_id": job.id})
                task.cancel()

    async def _drain(self) -> None:
        if not self.running:
            return
        pending = set(self.running)
        _, still_running = await asyncio.wait(pending, timeout=self.config.shutdown_grace)
        if still_running:
            log.warning(
                "worker released unfinished jobs after the grace period",
                extra={"worker_id": self.id, "released": len(still_running)},
            )
            await cancel_and_wait(*still_running)

    async def _release_held(self) -> None:
        leases = {t: job.id for t, job in self._held.items() if t not in self._lost}
        if not leases:
            return
        try:
            async with self.sessionmaker() as session, session.begin():
                released = await outcomes.release_jobs(session, leases)
            log.info("released jobs to the queue", extra={"released": released})
        except Exception as exc:
            log.warning("releasing jobs failed", extra={"error": repr(exc)})

    # -- wake-ups, heartbeats, schedules ------------------------------------------------

    async def _listen_for_wakeups(self) -> None:
        while True:
            stop_if_cancelled()
            try:
                async for message in self.store.listen(queue.WAKE_CHANNEL):
                    if message.decode() in self.queues:
                        self._wake.set()
            except Exception as exc:  # the store went away: polling covers until it is back
                log.warning("wake-up channel lost", extra={"error": repr(exc)})
            await asyncio.sleep(self.config.poll_interval)
            await self.store.answering()

    async def _heartbeat_loop(self) -> None:
        while True:
            stop_if_cancelled()
            await asyncio.sleep(self.config.heartbeat_interval)
            await self.heartbeat()
            await self.figures.flush(self.store)
            await self._run_due_periodic_tasks()

    async def heartbeat(self) -> None:
        record = {
            "id": self.id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "mode": self.mode,
            "queues": list(self.queues),
            "concurrency": self.concurrency,
            "running": len(self.running),
            "current": [{"id": job.id, "type": job.type} for job in self.running.values()][
                :CURRENT_JOBS_SHOWN
            ],
            "processed": self.processed,
            "started_at": self.started_at,
            "last_seen": time.time(),
        }
        try:
            await self.store.set(
                HEARTBEAT_PREFIX + self.id,
                json.dumps(record),
                ttl=self.config.heartbeat_interval * 3,
            )
        except StoreUnavailable as exc:
            log.warning(
                "worker heartbeat not stored", extra={"worker_id": self.id, "error": repr(exc)}
            )

    async def _run_due_periodic_tasks(self) -> None:
        """Small housekeeping that must happen regularly in every worker."""
        now = time.monotonic()
        for task in self.periodic:
            if now - self._last_run.get(task.name, 0.0) >= task.every_seconds:
                self._last_run[task.name] = now
                try:
                    await task.run()
                except Exception as exc:  # a failed round is retried at the next interval
                    log_failure(log, "periodic task failed", exc, task=task.name)

    async def _schedule_loop(self) -> None:
        seen: dict[str, datetime] = {}
        while True:
            stop_if_cancelled()
            try:
                if await enqueue_due_schedules(self.sessionmaker, seen):
                    self._wake.set()
            except Exception as exc:
                log.warning("schedules failed", extra={"error": repr(exc)})
            await asyncio.sleep(SCHEDULE_CHECK_SECONDS)


async def list_workers(store: Store) -> list[dict[str, Any]]:
    """Heartbeats of the workers alive now, newest first; `seen_seconds_ago` is the age
    of each one's last heartbeat."""
    workers = []
    now = time.time()
    for key in await store.keys(HEARTBEAT_PREFIX + "*"):
        raw = await store.get(key)
        if raw:
            worker = json.loads(raw)
            worker["seen_seconds_ago"] = max(0, round(now - worker.get("last_seen", now)))
            worker.setdefault("current", [])
            workers.append(worker)
    return sorted(workers, key=lambda w: w["started_at"], reverse=True)


def housekeeping(sessionmaker: Any, store: Store) -> tuple[PeriodicTask, ...]:
    """The periodic tasks every worker runs."""
    from app.content.services.views import flush_view_counts

    async def views() -> None:
        await flush_view_counts(sessionmaker, store)

    return (PeriodicTask("flush-view-counts", 30.0, views),)
