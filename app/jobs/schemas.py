"""Request and response shapes of the jobs API."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import msgspec

from app.jobs.models import Job
from app.jobs.services.jobs import MAX_PRIORITY, MIN_PRIORITY
from app.jobs.services.registry import JobType


class JobCreate(msgspec.Struct):
    type: str
    payload: dict[str, Any] = msgspec.field(default_factory=dict)
    """Validated against the type's payload schema (see GET /api/v1/jobs/types)."""
    priority: Annotated[int, msgspec.Meta(ge=MIN_PRIORITY, le=MAX_PRIORITY)] = 0
    """Lower runs first; -100 to 100."""


class JobOut(msgspec.Struct):
    id: int
    type: str
    queue: str
    status: str
    payload: dict[str, Any]
    priority: int
    progress: int
    progress_message: str
    attempts: int
    max_attempts: int
    result: Any
    last_error: str | None
    has_file: bool
    created_by: UUID | None
    """The person who enqueued the job (None for an API key, the system, or once deleted)."""
    created_by_api_key: UUID | None
    """The API key that enqueued the job, when a key did."""
    created_at: datetime
    run_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime

    @classmethod
    def of(cls, job: Job) -> JobOut:
        """Not a plain copy: `has_file` is read off the result, two fields drop their `_id`."""
        return cls(
            id=job.id,
            type=job.type,
            queue=job.queue,
            status=job.status,
            payload=job.payload,
            priority=job.priority,
            progress=job.progress,
            progress_message=job.progress_message,
            attempts=job.attempts,
            max_attempts=job.max_attempts,
            result=job.result,
            last_error=job.last_error,
            has_file=isinstance(job.result, dict) and bool(job.result.get("files")),
            created_by=job.created_by_id,
            created_by_api_key=job.created_by_api_key_id,
            created_at=job.created_at,
            run_at=job.run_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            updated_at=job.updated_at,
        )


class JobTypeOut(msgspec.Struct):
    name: str
    description: str
    role: str
    queue: str
    timeout: float
    max_attempts: int

    @classmethod
    def of(cls, kind: JobType) -> JobTypeOut:
        """Not a plain copy: the role is given by its name."""
        return cls(
            name=kind.name,
            description=kind.description,
            role=kind.role.name,
            queue=kind.queue,
            timeout=kind.timeout,
            max_attempts=kind.max_attempts,
        )
