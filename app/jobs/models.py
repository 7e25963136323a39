"""Tables of the jobs domain: the durable queue (`jobs`), periodic ticks (`job_schedules`)
and the outcome of each import that committed (`import_runs`)."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any
from uuid import UUID

from advanced_alchemy.base import AdvancedDeclarativeBase
from advanced_alchemy.types import GUID, BigIntIdentity, DateTimeUTC, JsonB
from sqlalchemy import BigInteger, ForeignKey, Index, Integer, SmallInteger, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column


class JobStatus(enum.StrEnum):
    """`queued` also covers a failed attempt waiting for its retry (`run_at` in the future);
    `failed` is a permanent failure (the handler raised JobFailed); `dead` means every
    attempt failed."""

    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"
    dead = "dead"


FINISHED = (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled, JobStatus.dead)
UNFINISHED_SQL = "status IN ('queued', 'running')"


class Job(AdvancedDeclarativeBase):
    """One unit of background work. Ids are integers: they order the claim index cheaply."""

    __tablename__ = "jobs"
    __table_args__ = (
        # The claim path: only queued rows are in it, so finished history never slows a claim.
        Index(
            "ix_jobs_claim",
            "queue",
            "priority",
            "run_at",
            "id",
            postgresql_where=text("status = 'queued'"),
            sqlite_where=text("status = 'queued'"),
        ),
        # The reaper's path: running jobs by lease expiry.
        Index(
            "ix_jobs_lease",
            "lease_expires_at",
            postgresql_where=text("status = 'running'"),
            sqlite_where=text("status = 'running'"),
        ),
        Index(
            "uq_jobs_unique_key_unfinished",
            "unique_key",
            unique=True,
            postgresql_where=text(UNFINISHED_SQL + " AND unique_key IS NOT NULL"),
            sqlite_where=text(UNFINISHED_SQL + " AND unique_key IS NOT NULL"),
        ),
        Index("ix_jobs_created_at", "created_at"),
        Index("ix_jobs_created_by_created_at", "created_by_id", "created_at"),
        Index("ix_jobs_created_by_api_key_created_at", "created_by_api_key_id", "created_at"),
        Index("ix_jobs_finished_at", "finished_at"),
    )

    id: Mapped[int] = mapped_column(BigIntIdentity, primary_key=True, autoincrement=True)
    type: Mapped[str] = mapped_column(String(100))
    queue: Mapped[str] = mapped_column(String(64), default="default")
    payload: Mapped[dict[str, Any]] = mapped_column(JsonB, default=dict)
    status: Mapped[str] = mapped_column(String(12), default=JobStatus.queued.value)
    priority: Mapped[int] = mapped_column(SmallInteger, default=0)
    """Lower runs first among jobs that are due, like `nice`: 0 by default, negative is urgent."""
    run_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    lease_owner: Mapped[str | None] = mapped_column(String(120))
    lease_token: Mapped[str | None] = mapped_column(String(36))
    """New on every claim; an outcome or renewal with another token changes nothing."""
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    progress: Mapped[int] = mapped_column(SmallInteger, default=0)
    progress_message: Mapped[str] = mapped_column(String(200), default="")
    result: Mapped[Any | None] = mapped_column(JsonB)
    last_error: Mapped[str | None] = mapped_column(Text)
    unique_key: Mapped[str | None] = mapped_column(String(200))
    created_by_id: Mapped[UUID | None] = mapped_column(
        GUID, ForeignKey("users.id", ondelete="SET NULL")
    )
    """The person who enqueued the job (None for an API key, the system, or once deleted)."""
    created_by_api_key_id: Mapped[UUID | None] = mapped_column(
        GUID, ForeignKey("api_keys.id", ondelete="SET NULL")
    )
    """The API key that enqueued the job, when a key did."""
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    finished_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED


class JobSchedule(AdvancedDeclarativeBase):
    """The last tick of a periodic job that some worker claimed (and enqueued)."""

    __tablename__ = "job_schedules"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    last_tick: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))


class ImportRun(AdvancedDeclarativeBase):
    """An `import` job whose rows committed, with its outcome, written in the same
    transaction as the rows: a second run of the job finds it and imports nothing again."""

    __tablename__ = "import_runs"

    job_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    outcome: Mapped[dict[str, Any]] = mapped_column(JsonB)
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(timezone=True))
