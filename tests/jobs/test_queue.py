"""The queue's rules, on both legs: transactions, claims, leases, retries, cancellation."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from litestar import Litestar
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.accounts.models import User
from app.core.events import Events
from app.core.metrics import Tally
from app.jobs.models import Job, JobStatus
from app.jobs.services import outcomes, queue
from app.jobs.services.metrics import JOBS_PROCESSED, subscribe_outcomes
from app.jobs.services.outcomes import Outcome, record_outcomes
from app.jobs.services.queue import claim_jobs, enqueue
from app.jobs.services.registry import JobInputError
from app.settings import Settings
from tests.accounts.test_users_api import api_as
from tests.conftest import signed_in
from tests.jobs.conftest import running_worker, wait_for_status

Sessions = async_sessionmaker[AsyncSession]


async def _count_jobs(sessionmaker: Sessions) -> int:
    async with sessionmaker() as session:
        return int(await session.scalar(select(func.count()).select_from(Job)) or 0)


async def _enqueue(sessionmaker: Sessions, type: str, payload: dict | None = None, **kw) -> int:
    async with sessionmaker() as session, session.begin():
        return await enqueue(session, type, payload, **kw)


async def test_an_enqueue_in_a_rolled_back_transaction_leaves_no_job(
    sessionmaker: Sessions, tmp_path: Path
) -> None:
    with pytest.raises(RuntimeError):
        async with sessionmaker() as session, session.begin():
            await enqueue(session, "test.record", {"path": str(tmp_path / "runs")})
            raise RuntimeError("the change that asked for the job failed")
    assert await _count_jobs(sessionmaker) == 0
    await _enqueue(sessionmaker, "test.record", {"path": str(tmp_path / "runs")})
    assert await _count_jobs(sessionmaker) == 1


async def test_unknown_types_and_bad_payloads_are_refused_at_enqueue(
    sessionmaker: Sessions,
) -> None:
    async with sessionmaker() as session:
        with pytest.raises(JobInputError, match="no job type"):
            await enqueue(session, "no.such.type", {})
        with pytest.raises(JobInputError, match="Invalid payload"):
            await enqueue(session, "test.record", {"sleep": 1})  # `path` is required
        with pytest.raises(JobInputError, match="JSON object"):
            await enqueue(session, "test.record", [1, 2])  # type: ignore[arg-type]


async def test_claims_take_each_job_once_by_priority_with_fresh_tokens(
    sessionmaker: Sessions, tmp_path: Path
) -> None:
    payload = {"path": str(tmp_path / "runs")}
    low = await _enqueue(sessionmaker, "test.record", payload)
    high = await _enqueue(sessionmaker, "test.record", payload, priority=-5)
    later = await _enqueue(sessionmaker, "test.record", payload, delay=60)
    async with sessionmaker() as session, session.begin():
        first = await claim_jobs(session, "w1", ["default"], 1, 30)
    async with sessionmaker() as session, session.begin():
        second = await claim_jobs(session, "w2", ["default"], 10, 30)
    assert [j.id for j in first] == [high]
    assert [j.id for j in second] == [low]  # the delayed job is not due yet
    assert first[0].lease_token != second[0].lease_token
    async with sessionmaker() as session:
        assert (await session.get(Job, later)).status == JobStatus.queued  # type: ignore[union-attr]


async def test_a_unique_key_keeps_one_unfinished_job(
    sessionmaker: Sessions, tmp_path: Path
) -> None:
    payload = {"path": str(tmp_path / "runs")}
    first = await _enqueue(sessionmaker, "test.record", payload, unique_key="nightly")
    again = await _enqueue(sessionmaker, "test.record", payload, unique_key="nightly")
    assert again == first and await _count_jobs(sessionmaker) == 1
    async with sessionmaker() as session, session.begin():
        await session.execute(update(Job).values(status=JobStatus.succeeded.value))
    assert await _enqueue(sessionmaker, "test.record", payload, unique_key="nightly") != first


async def test_a_worker_that_lost_its_lease_cannot_overwrite_the_result(
    sessionmaker: Sessions, tmp_path: Path
) -> None:
    job_id = await _enqueue(sessionmaker, "test.record", {"path": str(tmp_path / "runs")})
    async with sessionmaker() as session, session.begin():
        (stale,) = await claim_jobs(session, "paused-worker", ["default"], 1, 30)
        # The paused worker's lease runs out; the reaper queues the job again.
        await session.execute(
            update(Job).values(lease_expires_at=datetime.now(UTC) - timedelta(minutes=5))
        )
    async with sessionmaker() as session, session.begin():
        assert await outcomes.reap_expired_leases(session) == [job_id]
    figures, events = Tally(), Events()
    subscribe_outcomes(events, figures)
    await events.deliver(session)  # the reaping worker counts it once committed
    assert dict(figures.pending) == {(JOBS_PROCESSED.name, ("test.record", "lease_expired"), ""): 1}
    async with sessionmaker() as session, session.begin():
        (fresh,) = await claim_jobs(session, "new-worker", ["default"], 1, 30)
    assert fresh.id == job_id and fresh.lease_token != stale.lease_token and fresh.attempts == 2
    async with sessionmaker() as session, session.begin():
        written = await record_outcomes(
            session, [Outcome(job_id, stale.lease_token, JobStatus.succeeded, result="stale")]
        )
    assert written == set()
    async with sessionmaker() as session, session.begin():
        written = await record_outcomes(
            session, [Outcome(job_id, fresh.lease_token, JobStatus.succeeded, result="fresh")]
        )
    assert written == {job_id}
    async with sessionmaker() as session:
        job = await session.get(Job, job_id)
    assert job is not None and job.status == "succeeded" and job.result == "fresh"
    assert job.progress == 100 and job.finished_at is not None


async def test_failures_retry_with_backoff_and_then_succeed(
    settings: Settings, sessionmaker: Sessions, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    job_id = await _enqueue(sessionmaker, "test.record", {"path": str(runs), "fail_first": 2})
    async with running_worker(settings, sessionmaker):
        job = await wait_for_status(sessionmaker, job_id, {"succeeded", "dead"})
    assert job.status == "succeeded" and job.attempts == 3
    assert "planned failure on attempt 2" in (job.last_error or "")
    assert runs.read_text().splitlines() == [
        f"start {job_id} 1",
        f"start {job_id} 2",
        f"start {job_id} 3",
        f"done {job_id}",
    ]


async def test_a_job_failing_every_attempt_ends_dead(
    settings: Settings, sessionmaker: Sessions, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    job_id = await _enqueue(sessionmaker, "test.record", {"path": str(runs), "fail_first": 9})
    async with running_worker(settings, sessionmaker):
        job = await wait_for_status(sessionmaker, job_id, {"dead"})
    assert job.attempts == 3 and job.finished_at is not None
    assert len(runs.read_text().splitlines()) == 3


async def test_a_permanent_failure_and_a_timeout(
    settings: Settings, sessionmaker: Sessions
) -> None:
    permanent = await _enqueue(sessionmaker, "test.permanent")
    slow = await _enqueue(sessionmaker, "test.slow")
    async with running_worker(settings, sessionmaker):
        failed = await wait_for_status(sessionmaker, permanent, {"failed", "dead"})
        timed_out = await wait_for_status(sessionmaker, slow, {"dead"})
    assert failed.status == "failed" and failed.attempts == 1
    assert failed.last_error == "the input can never work"
    assert timed_out.attempts == 2 and "timed out after 0.2 s" in (timed_out.last_error or "")


async def test_a_database_error_shows_its_kind_and_an_error_id_never_its_sql(
    app: Litestar,
    accounts: dict[str, User],
    settings: Settings,
    sessionmaker: Sessions,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """`last_error` is read by people (the API, the job's page): no SQL, no parameters, no
    paths, no stack frames; the log keeps them under the error id it names."""
    caplog.set_level(logging.WARNING, logger="keel.worker")
    job_id = await _enqueue(sessionmaker, "test.database_error")
    async with running_worker(settings, sessionmaker):
        job = await wait_for_status(sessionmaker, job_id, {"dead"})
    assert job.attempts == 2
    async with api_as(app, accounts["admin"]) as api:
        shown = (await api.get(f"/api/v1/jobs/{job_id}")).json()["last_error"]
    async with signed_in(app, accounts["admin"]) as browser:
        page = (await browser.get(f"/admin/jobs/{job_id}")).text
    assert shown == job.last_error
    for text in (shown, page):
        for leak in ("INSERT", "no_such_table", "hunter2", "[SQL", "Traceback", 'File "'):
            assert leak not in text
    logged = [r for r in caplog.records if getattr(r, "job_id", None) == job_id]
    error_id = getattr(logged[-1], "error_id", None)
    assert shown.startswith("An unexpected database error (") and f"id {error_id}:" in shown
    assert error_id in page
    assert "no_such_table" in caplog.text and "hunter2" in caplog.text  # the log keeps them


async def test_cancelling_a_running_job_stops_it_at_its_next_progress_report(
    settings: Settings, sessionmaker: Sessions, tmp_path: Path
) -> None:
    runs = tmp_path / "runs"
    payload = {"path": str(runs), "sleep": 3, "steps": 30}
    job_id = await _enqueue(sessionmaker, "test.record", payload)
    async with running_worker(settings, sessionmaker):
        await wait_for_status(sessionmaker, job_id, {"running"})
        async with sessionmaker() as session, session.begin():
            await outcomes.cancel_job(session, job_id)
        job = await wait_for_status(sessionmaker, job_id, {"cancelled"})
        assert job.finished_at is not None
        await asyncio.sleep(0.5)  # time for the handler to reach its next report
    assert runs.read_text().splitlines() == [f"start {job_id} 1"]  # never reached `done`
    async with sessionmaker() as session:
        assert (await session.get(Job, job_id)).status == "cancelled"  # type: ignore[union-attr]


async def test_result_files_are_listed_in_the_result(
    settings: Settings, sessionmaker: Sessions
) -> None:
    job_id = await _enqueue(sessionmaker, "test.file")
    async with running_worker(settings, sessionmaker):
        job = await wait_for_status(sessionmaker, job_id, {"succeeded", "dead"})
    assert job.result == {
        "rows": 2,
        "files": [{"name": "numbers.csv", "content_type": "text/csv", "size": 6}],
    }
    path = settings.app.var_dir / "job-files" / str(job_id) / "numbers.csv"
    assert path.read_text() == "n\n1\n2\n"


async def test_enqueue_many_adds_validated_jobs_in_one_statement_of_the_transaction(
    sessionmaker: Sessions, tmp_path: Path
) -> None:
    payloads = [{"path": str(tmp_path / f"runs-{n}")} for n in range(3)]
    async with sessionmaker() as session, session.begin():
        ids = await queue.enqueue_many(
            session, "test.record", payloads, queue.JobOptions(priority=-2)
        )
        with pytest.raises(JobInputError):
            await queue.enqueue_many(session, "test.record", [{"sleep": 1}])
    async with sessionmaker() as session:
        jobs = list(await session.scalars(select(Job).order_by(Job.id)))
    assert [job.id for job in jobs] == ids and len(ids) == 3
    assert [job.payload for job in jobs] == payloads
    assert {(job.priority, job.status, job.max_attempts) for job in jobs} == {(-2, "queued", 3)}


def test_a_job_module_that_cannot_be_imported_is_a_configuration_problem() -> None:
    from app.jobs.services.registry import load_job_modules
    from app.settings import ConfigError

    with pytest.raises(ConfigError, match="JOB_MODULES: cannot import 'no_such_module'"):
        load_job_modules(("no_such_module",))


async def test_results_that_cannot_be_stored_as_they_are_never_block_the_worker(
    settings: Settings, sessionmaker: Sessions
) -> None:
    nul = await _enqueue(sessionmaker, "test.odd_result", {"kind": "nul"})
    not_json = await _enqueue(sessionmaker, "test.odd_result", {"kind": "object"})
    after = await _enqueue(sessionmaker, "test.file")
    async with running_worker(settings, sessionmaker):
        stripped = await wait_for_status(sessionmaker, nul, {"succeeded", "failed", "dead"})
        refused = await wait_for_status(sessionmaker, not_json, {"succeeded", "failed", "dead"})
        await wait_for_status(sessionmaker, after, {"succeeded"})
    assert stripped.status == "succeeded" and stripped.result == {"text": "beforeafter"}
    assert refused.status == "failed" and "cannot be stored as JSON" in (refused.last_error or "")
