"""The upload that starts an import: checked at once (encoding, size, header, rows), stored
as the job's input and enqueued in the caller's transaction. The API and the admin form
both call `submit_import`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.guards.identity import CurrentUser
from app.accounts.services.audit import Actor, record
from app.content.services.media import human_size
from app.core.files import remove_on_rollback
from app.jobs.jobs.imports.csvfile import ImportFileError, read_csv
from app.jobs.jobs.imports.job import IMPORTERS, INPUT_NAME
from app.jobs.models import Job
from app.jobs.services import queue
from app.jobs.services.jobs import creator_of, may_run, visible_job
from app.jobs.services.registry import JobInputError, input_dir
from app.settings import Settings


async def submit_import(
    session: AsyncSession,
    settings: Settings,
    actor: Actor,
    user: CurrentUser,
    kind: str,
    upload: bytes,
    filename: str | None,
    base_url: str,
) -> Job:
    """Check an uploaded CSV file (encoding, size, header, row count), store it as the
    input of a new `import` job enqueued in the caller's transaction (the file goes if
    that rolls back), and audit it. `upload` may be one byte over IMPORT_MAX_BYTES (read
    with a limit): it is refused then."""
    importer = IMPORTERS.get(kind)
    if importer is None:
        raise JobInputError("Choose users or content.", "kind", status=422)
    payload: dict[str, Any] = {
        "kind": kind,
        "filename": Path(filename or "").name[:255],
        "base_url": base_url,
    }
    may_run(user, "import", payload)
    limits = settings.worker
    if len(upload) > limits.import_max_bytes:
        size = human_size(limits.import_max_bytes)
        raise ImportFileError(f"The file is larger than the import limit of {size}.", status=413)
    payload["rows"] = len(read_csv(upload, importer.columns, limits.import_max_rows).rows)
    job_id = await queue.enqueue(session, "import", payload, **creator_of(user))
    folder = input_dir(settings, job_id)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / INPUT_NAME
    path.write_bytes(upload)
    remove_on_rollback(session, path)
    record(
        session,
        actor,
        "job.enqueue",
        "job",
        job_id,
        type="import",
        kind=kind,
        filename=payload["filename"],
        rows=payload["rows"],
    )
    return await visible_job(session, user, job_id)
