"""Job types: what a handler is, how it declares itself, and what it sees while it runs.

Declaring a job type (the whole API another domain needs)::

    from app.jobs.services.registry import JobContext, JobFailed, job_handler

    @dataclass
    class ExportPayload:
        kind: str
        format: str = "csv"

    @job_handler("export", timeout=600, max_attempts=3, payload=ExportPayload, role=Role.editor)
    async def run_export(ctx: JobContext[ExportPayload]) -> dict[str, object]:
        async with ctx.sessionmaker() as session:
            ...                                   # read with your own short sessions
        await ctx.progress(50, "half way")        # renews the lease; raises if cancelled
        ctx.attach("users.csv", data, "text/csv") # a file the requester can download
        return {"rows": 42}                       # stored as the job's JSON result

- The payload is validated when the job is enqueued (API and services alike) with
  `msgspec.convert(payload, <schema>)`; the handler receives the converted value.
- Delivery is at least once: a job whose worker died runs again. Key side effects so a
  second run does not repeat them (the job id is a good key).
- Raise `JobFailed` for a permanent failure (no retry); any other exception is retried
  with exponential backoff until `max_attempts`, then the job is `dead`.
- Write with `async with ctx.transaction() as session:`: it commits at the end of the
  block and then, like a request, wakes workers for jobs enqueued in it and drops cached
  public pages when it changed what visitors see (`mark_public_change`).
- A type declared with `from_upload=True` starts from a file uploaded with the request
  that enqueues it (`import`); the file lives in `ctx.input_dir`, which `attach` keeps.
- The module declaring handlers must be imported by the worker: built-in modules are
  listed in `BUILTIN_MODULES`, others in the JOB_MODULES setting.
- The types live in `JOB_TYPES` (an `app.core.registry.Registry`): `job_handler` adds to
  it for Keel (`owner="keel"`), a plugin adds and removes its own while Keel runs. A
  worker that claims a job of a type it does not know gives it back (see `outcomes.give_back`).
"""

from __future__ import annotations

import importlib
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Generic, TextIO, TypeVar

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.accounts.models import Role
from app.core.errors import InvalidField
from app.core.events import Events
from app.core.registry import KEEL, Registry
from app.core.store import Store
from app.settings import ConfigError, MailSettings, Settings

P = TypeVar("P")

BUILTIN_MODULES = (
    "app.analytics.jobs",
    "app.jobs.jobs.cleanup",
    "app.jobs.jobs.exports",
    "app.jobs.jobs.imports",
    "app.jobs.jobs.reports",
    "app.notifications.jobs",
)
"""Modules whose import declares Keel's own job types."""


class JobFailed(Exception):
    """Raised by a handler for a failure that another attempt cannot fix: no retry."""


class JobCancelled(Exception):
    """The job was cancelled (or its lease taken over) while it ran; the handler should stop."""


class JobInputError(InvalidField):
    """An enqueue request names an unknown type or a payload that does not fit it."""


@dataclass(frozen=True)
class JobType:
    name: str
    run: Callable[[JobContext[Any]], Awaitable[Any]]
    timeout: float = 300.0
    max_attempts: int = 3
    queue: str = "default"
    payload: type | None = None
    role: Role = Role.admin
    """Who may enqueue it through the API and the admin page."""
    role_for: Callable[[Any], Role] | None = None
    """A stricter role for some payloads (the parsed payload in, the role needed out)."""
    expiring_files: bool = False
    """Its result files expire after EXPORT_RETENTION_HOURS (downloads answer 410 after)."""
    from_upload: bool = False
    """Its jobs start from an uploaded file, through their own route: the generic enqueue
    (a payload alone) refuses the type."""
    description: str = ""

    def required_role(self, payload: object) -> Role:
        """The role needed to run (or cancel, retry) this type with `payload`."""
        if self.role_for is None or not isinstance(payload, dict):
            return self.role
        return max(self.role, self.role_for(self.parse(payload)))

    def validate(self, payload: object) -> dict[str, Any]:
        """The payload as it will be stored (JSON), or JobInputError saying what is wrong."""
        if payload is None:
            payload = {}
        if not isinstance(payload, dict):
            raise JobInputError("The payload must be a JSON object.", "payload", status=422)
        if self.payload is None:
            return dict(payload)
        return msgspec.to_builtins(self.parse(payload))

    def parse(self, payload: dict[str, Any]) -> Any:
        if self.payload is None:
            return payload
        try:
            return msgspec.convert(payload, self.payload, strict=False)
        except msgspec.ValidationError as exc:
            raise JobInputError(f"Invalid payload: {exc}", "payload", status=422) from None


JOB_TYPES: Registry[str, JobType] = Registry("job type", key=lambda kind: kind.name)


def job_handler(
    name: str,
    *,
    timeout: float = 300.0,
    max_attempts: int = 3,
    queue: str = "default",
    payload: type | None = None,
    role: Role = Role.admin,
    role_for: Callable[[Any], Role] | None = None,
    expiring_files: bool = False,
    from_upload: bool = False,
    owner: str = KEEL,
) -> Callable[[Callable[[JobContext[Any]], Awaitable[Any]]], Callable[..., Awaitable[Any]]]:
    """Declare the handler of job type `name` (see the module docstring)."""

    def register(
        run: Callable[[JobContext[Any]], Awaitable[Any]],
    ) -> Callable[[JobContext[Any]], Awaitable[Any]]:
        JOB_TYPES.add(
            owner,
            JobType(
                name=name,
                run=run,
                timeout=timeout,
                max_attempts=max_attempts,
                queue=queue,
                payload=payload,
                role=role,
                role_for=role_for,
                expiring_files=expiring_files,
                from_upload=from_upload,
                description=(run.__doc__ or "").strip().split("\n")[0],
            ),
        )
        return run

    return register


def known_job_type(name: str) -> JobType | None:
    """The type `name`, or None when this process has no such type (never had, or its
    plugin was removed; a job of it may still be in the queue)."""
    load_job_modules()
    return JOB_TYPES.get(name)


def job_type(name: str) -> JobType:
    kind = known_job_type(name)
    if kind is None:
        raise JobInputError(f"There is no job type {name!r}.", "type", status=422)
    return kind


def job_types() -> list[JobType]:
    load_job_modules()
    return sorted(JOB_TYPES, key=lambda t: t.name)


def files_dir(settings: Settings) -> Path:
    """Where result files live: `<VAR_DIR>/<JOB_FILES_DIR>/<job id>/`; app and workers share it."""
    return settings.app.var_dir / settings.worker.files_dir


INPUT_DIR = "input"
"""The folder, inside a job's files folder, holding the file it was started from."""


def input_dir(settings: Settings, job_id: int) -> Path:
    """Where the uploaded file a `from_upload` job starts from lives (`ctx.input_dir`)."""
    return files_dir(settings) / str(job_id) / INPUT_DIR


def load_job_modules(extra: tuple[str, ...] = ()) -> None:
    """Import every module that declares handlers (idempotent; Keel's own always)."""
    for module in (*BUILTIN_MODULES, *extra):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError([f"JOB_MODULES: cannot import {module!r} ({exc})"]) from exc


@dataclass
class JobContext(Generic[P]):
    """What a running handler sees: its job, its payload, progress reports and sessions."""

    job_id: int
    type: str
    attempt: int
    payload: P
    sessionmaker: async_sessionmaker[AsyncSession]
    files_dir: Path
    store: Store
    report: Callable[[int, str], Awaitable[None]]
    file_retention: timedelta = timedelta(hours=24)
    """How long files of `expiring_files` types stay downloadable (EXPORT_RETENTION_HOURS)."""
    files: list[dict[str, Any]] = field(default_factory=list)
    mail: MailSettings = field(default_factory=MailSettings)
    """Where e-mail goes (SMTP_URL, MAIL_FROM), for handlers that send it."""
    events: Events = field(default_factory=Events)
    """The worker's subscriptions: what `transaction()` delivers the committed events to
    (wake-ups, page cache invalidation, job figures)."""

    @property
    def input_dir(self) -> Path:
        """The uploaded file(s) a `from_upload` job starts from."""
        return self.files_dir / str(self.job_id) / INPUT_DIR

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session whose transaction commits when the block ends (rolls back on an
        error); after the commit, its events reach the worker's subscribers as a request's
        do."""
        async with self.sessionmaker() as session:
            async with session.begin():
                yield session
            await self.events.deliver(session)

    async def progress(self, percent: float, message: str = "") -> None:
        """Record progress (0-100) and renew the lease; raises JobCancelled when the job was
        cancelled or taken over, so the handler stops at this point."""
        await self.report(max(0, min(100, int(percent))), message[:200])

    def attach(self, name: str, data: bytes | str, content_type: str) -> Path:
        """Store a result file the requester can download (one per job is shown)."""
        path = self._result_path(name)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
        return self._attached(path, content_type)

    @contextmanager
    def writing(self, name: str, content_type: str) -> Iterator[TextIO]:
        """A result file written piece by piece (UTF-8 text), so a large export never
        sits in memory whole; it is attached once the block ends without an error."""
        path = self._result_path(name)
        with path.open("w", encoding="utf-8", newline="") as out:
            yield out
        self._attached(path, content_type)

    def _result_path(self, name: str) -> Path:
        safe = Path(name).name or "result"
        directory = self.files_dir / str(self.job_id)
        if not self.files and directory.is_dir():
            # an earlier attempt's files (or a reused id's) are not this run's; its input is
            for old in directory.iterdir():
                if old.name == INPUT_DIR:
                    continue
                if old.is_dir():
                    shutil.rmtree(old, ignore_errors=True)
                else:
                    old.unlink(missing_ok=True)
        directory.mkdir(parents=True, exist_ok=True)
        return directory / safe

    def _attached(self, path: Path, content_type: str) -> Path:
        self.files.append(
            {"name": path.name, "content_type": content_type, "size": path.stat().st_size}
        )
        return path
