"""The jobs rules that both the admin pages and the API follow: who sees which jobs, who
may run which type, cancel, retry and download, and the audit entry for each change.

Callers below admin see the jobs they created (a person their own, an API key its own;
a job whose creator is gone only admins see); admins see every job. A
type's `role` says who may enqueue it; cancelling and retrying need that role too, and
only admins may touch other people's jobs. Imports start from an upload instead of a payload alone
(`app/jobs/jobs/imports/upload.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from litestar.datastructures import UploadFile
from litestar.response import File
from sqlalchemy import ColumnClause, func, literal_column, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.guards.identity import CurrentUser, created_by
from app.accounts.models import Role
from app.accounts.services.audit import Actor, record
from app.accounts.services.audit_view import AUDIT_RESOURCES, AuditResource
from app.core.errors import Forbidden, Gone, NotFound
from app.core.pagination import Page, PageRequest, paginate
from app.core.registry import KEEL
from app.jobs.models import Job, JobStatus
from app.jobs.services import outcomes, queue
from app.jobs.services.registry import (
    JobInputError,
    JobType,
    files_dir,
    job_type,
    job_types,
    known_job_type,
)
from app.settings import Settings

STATUSES = tuple(status.value for status in JobStatus)


class JobNotFound(NotFound):
    def __init__(self) -> None:
        super().__init__("There is no such job.")


class JobForbidden(Forbidden):
    """The caller's role does not reach the job's type (or this payload of it)."""


def runnable_types(user: CurrentUser, *, uploads: bool = True) -> list[JobType]:
    """The job types `user` may enqueue, by name (without `uploads`: only those that start
    from a payload alone, as the generic form offers)."""
    return [
        kind for kind in job_types() if user.has(kind.role) and (uploads or not kind.from_upload)
    ]


@dataclass(frozen=True)
class JobFilters:
    status: str | None = None
    type: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", (self.status or "").strip() or None)
        object.__setattr__(self, "type", (self.type or "").strip()[:100] or None)
        if self.status and self.status not in STATUSES:
            raise JobInputError(f"Status must be one of: {', '.join(STATUSES)}.", "status")


def _visible(user: CurrentUser) -> list[Any]:
    if user.has(Role.admin):
        return []
    return [created_by(user, Job.created_by_id, Job.created_by_api_key_id)]


async def list_jobs(
    session: AsyncSession, user: CurrentUser, filters: JobFilters, page: PageRequest
) -> Page[Job]:
    """The jobs `user` may see, newest first."""
    conditions = _visible(user)
    if filters.status:
        conditions.append(Job.status == filters.status)
    if filters.type:
        conditions.append(Job.type == filters.type)
    statement = select(Job).where(*conditions).order_by(Job.id.desc())
    return await paginate(session, statement, page)


async def visible_job(session: AsyncSession, user: CurrentUser, job_id: int) -> Job:
    """The job, or JobNotFound when it does not exist or `user` may not see it."""
    statement = select(Job).where(Job.id == job_id, *_visible(user))
    job = await session.scalar(statement.execution_options(populate_existing=True))
    if job is None:
        raise JobNotFound()
    return job


def creator_of(user: CurrentUser) -> dict[str, Any]:
    """Who a job records as its creator: the person, or the API key."""
    return {"created_by": user.id, "created_by_api_key": user.api_key_id}


def may_run(user: CurrentUser, type_name: str, payload: Any) -> JobType:
    kind = job_type(type_name)
    if not user.has(kind.role):
        raise JobForbidden(f"Running {kind.name} jobs needs the {kind.role.name} role or higher.")
    needed = kind.required_role(payload)
    if not user.has(needed):
        raise JobForbidden(f"This {kind.name} job needs the {needed.name} role or higher.")
    return kind


def _may_change(user: CurrentUser, job: Job) -> None:
    """Cancel and retry need the role to run the job; a job of a type this process does not
    know (its plugin removed, or a newer version's) needs admin."""
    if known_job_type(job.type) is not None:
        may_run(user, job.type, job.payload)
    elif not user.has(Role.admin):
        raise JobForbidden(f"There is no job type {job.type!r} here: only an admin may change it.")


MIN_PRIORITY, MAX_PRIORITY = -100, 100
"""Lower runs first. The API's schema (`JobCreate`) states the same range."""


async def submit_job(
    session: AsyncSession,
    actor: Actor,
    user: CurrentUser,
    type_name: str,
    payload: Any,
    priority: int = 0,
) -> Job:
    """Enqueue a job for `user` (it commits with the request) and audit it."""
    kind = may_run(user, type_name, payload)
    if kind.from_upload:
        raise JobInputError(
            f"{kind.name} jobs start from an uploaded file: use the import form, or POST "
            "the file to /api/v1/jobs/import (multipart).",
            "type",
            status=422,
        )
    if not MIN_PRIORITY <= priority <= MAX_PRIORITY:
        raise JobInputError(
            f"Priority must be between {MIN_PRIORITY} and {MAX_PRIORITY}.", "priority"
        )
    job_id = await queue.enqueue(session, kind.name, payload, priority=priority, **creator_of(user))
    record(session, actor, "job.enqueue", "job", job_id, type=kind.name)
    return await visible_job(session, user, job_id)


async def cancel_job(session: AsyncSession, actor: Actor, user: CurrentUser, job_id: int) -> Job:
    job = await visible_job(session, user, job_id)
    _may_change(user, job)
    job = await outcomes.cancel_job(session, job.id)
    record(session, actor, "job.cancel", "job", job_id, type=job.type)
    return job


async def retry_job(session: AsyncSession, actor: Actor, user: CurrentUser, job_id: int) -> Job:
    job = await visible_job(session, user, job_id)
    _may_change(user, job)
    job = await outcomes.retry_job(session, job.id)
    record(session, actor, "job.retry", "job", job_id, type=job.type)
    return job


@dataclass(frozen=True)
class QueueFigures:
    queue: str
    waiting: int
    """Queued and due now."""
    scheduled: int
    """Queued for later (delayed jobs and retries waiting for their backoff)."""
    running: int
    oldest_wait_seconds: float | None
    """How long the oldest due job has waited."""


_STATUSES_SQL: tuple[ColumnClause[str], ...] = (
    literal_column("'queued'"),
    literal_column("'running'"),
)


async def queue_figures(session: AsyncSession) -> list[QueueFigures]:
    """Depth of every queue that has unfinished jobs (counts only: anyone may see them).

    Queued and running jobs are read separately, each with its status written into the
    SQL, so each part reads its partial index (ix_jobs_claim, ix_jobs_lease) and never
    the finished history: `/metrics` runs this at every scrape."""
    now = datetime.now(UTC)
    due = (Job.run_at <= now).label("due")
    parts = [
        select(Job.queue, status, due, func.count(), func.min(Job.run_at))
        .where(Job.status == status)
        .group_by(Job.queue, due)
        for status in _STATUSES_SQL
    ]
    rows = await session.execute(union_all(*parts))
    figures: dict[str, dict[str, Any]] = {}
    for queue_name, status, due, count, oldest in rows:
        entry = figures.setdefault(
            queue_name, {"waiting": 0, "scheduled": 0, "running": 0, "oldest": None}
        )
        if status == JobStatus.running.value:
            entry["running"] += count
        elif due:
            entry["waiting"] += count
            entry["oldest"] = oldest
        else:
            entry["scheduled"] += count
    return [
        QueueFigures(
            name,
            e["waiting"],
            e["scheduled"],
            e["running"],
            (now - e["oldest"]).total_seconds() if e["oldest"] else None,
        )
        for name, e in sorted(figures.items())
    ]


@dataclass(frozen=True)
class ResultFile:
    path: Path
    name: str
    content_type: str


def files_expired(settings: Settings, job: Job) -> bool:
    """Whether the job's files are past EXPORT_RETENTION_HOURS (types with `expiring_files`)."""
    expiring = any(kind.name == job.type and kind.expiring_files for kind in job_types())
    kept = timedelta(hours=settings.worker.export_retention_hours)
    return bool(expiring and job.finished_at and job.finished_at + kept < datetime.now(UTC))


def result_file(settings: Settings, job: Job, name: str | None = None) -> ResultFile:
    """The job's downloadable file (the first, or the one called `name`); 404 when it has
    none, 410 once it expired or cleanup removed it."""
    files = job.result.get("files") if isinstance(job.result, dict) else None
    if job.status != JobStatus.succeeded or not files:
        raise NotFound("This job has no result file.")
    if files_expired(settings, job):
        raise Gone("The result file has expired and was removed.")
    first = files[0] if not name else next((f for f in files if f.get("name") == name), None)
    if first is None:
        raise NotFound("This job has no result file of that name.")
    name = Path(str(first.get("name", ""))).name
    path = files_dir(settings) / str(job.id) / name
    if not name or not path.is_file():
        raise Gone("The result file has expired and was removed.")
    return ResultFile(path, name, str(first.get("content_type") or "application/octet-stream"))


UPLOAD_BODY_LIMIT = 101 * 1024 * 1024
"""Above IMPORT_MAX_BYTES' own maximum: the service answers a clear 413 below this."""


async def read_upload(upload: UploadFile, settings: Settings) -> bytes:
    """The uploaded file, read up to one byte past IMPORT_MAX_BYTES (enough to refuse it)."""
    try:
        return await upload.read(settings.worker.import_max_bytes + 1)
    finally:
        await upload.close()


NO_STORE = {"Cache-Control": "no-store"}


def result_download(settings: Settings, job: Job, name: str | None = None) -> File:
    """The job's result file as an attachment (for the API and the admin page alike)."""
    found = result_file(settings, job, name)
    # Files are stored as `text/csv; charset=utf-8`; Litestar adds the charset to text types
    # itself, and a second one is a malformed Content-Type.
    media_type = found.content_type.split(";", 1)[0].strip()
    return File(found.path, filename=found.name, media_type=media_type, headers=NO_STORE)


async def _job_names(session: AsyncSession, ids: list[str]) -> dict[str, str]:
    numbers = [int(i) for i in ids if i.isdigit() and int(i) < 2**63]
    query = select(Job.id, Job.type).where(Job.id.in_(numbers))
    return {str(i): f"#{i} {kind}" for i, kind in await session.execute(query)}


AUDIT_RESOURCES.add(KEEL, AuditResource("job", "job", _job_names, "admin:job", "job_id"))
