"""The `import` job's handler: check every row, write the valid ones in one transaction
with the run's marker, list the rejected ones (see the package docstring)."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

import msgspec
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import ApiKey, Role, User
from app.accounts.services.api_keys import acting_name, acting_role
from app.accounts.services.audit import Actor, record
from app.core.zones import zone_named
from app.jobs.jobs.imports.common import Importer
from app.jobs.jobs.imports.content import ContentImporter
from app.jobs.jobs.imports.csvfile import CsvFile, ImportFileError, Row, read_csv, rejected_csv
from app.jobs.jobs.imports.users import UsersImporter
from app.jobs.models import ImportRun, Job
from app.jobs.services.registry import JobContext, JobFailed, job_handler
from app.site_settings.services import TIME_ZONE

IMPORTERS: dict[str, type[Importer[Any]]] = {"users": UsersImporter, "content": ContentImporter}
INPUT_NAME = "upload.csv"
"""The uploaded file's name inside the job's input folder."""
NEEDED_ROLE = Role.editor
"""Editors create content and accounts below admin; admins anything."""
SHOWN_CHARS = 120
"""A rejected row's values in the job's result are cut to this; the file holds them whole."""
PROGRESS_EVERY = 250


class ImportPayload(msgspec.Struct, forbid_unknown_fields=True):
    """Set by the upload (`POST /api/v1/jobs/import` or the admin form), not by hand."""

    kind: Literal["users", "content"]
    filename: Annotated[str, msgspec.Meta(max_length=255)] = ""
    rows: int = 0
    base_url: Annotated[str, msgspec.Meta(max_length=500, pattern=r"^(https?://\S+)?$")] = ""
    """The site address the upload came to: the base of the links in account e-mails."""


@job_handler(
    "import",
    timeout=1800,
    max_attempts=3,
    payload=ImportPayload,
    role=NEEDED_ROLE,
    expiring_files=True,
    from_upload=True,
)
async def run_import(ctx: JobContext[ImportPayload]) -> dict[str, Any]:
    """Import users or content from an uploaded CSV file, listing every rejected row."""
    async with ctx.sessionmaker() as session:
        done = await session.get(ImportRun, ctx.job_id)
        requester = await _requester(session, ctx.job_id)
        zone = zone_named(await TIME_ZONE.read(session))
    importer = IMPORTERS[ctx.payload.kind](ctx.store, zone)
    if done is not None:  # an earlier run committed: its outcome, nothing written again
        return await finish(ctx, importer, done.outcome)
    if requester is None or requester[1] < NEEDED_ROLE:
        raise JobFailed("The account that started this import may not import any more.")
    actor, role = requester
    file = read_input(ctx, importer)
    if file is None:
        raise JobFailed("The uploaded file is gone (expired or removed); upload it again.")
    total = len(file.rows)
    await ctx.progress(5, f"{total} rows read")
    items = []
    for n, row in enumerate(file.rows, 1):
        items.append(importer.check(row, role))
        if n % PROGRESS_EVERY == 0:
            await ctx.progress(5 + 50 * n // total, f"{n} of {total} rows checked")
    mark_duplicates(importer, items)
    await ctx.progress(60, f"{total} rows checked; comparing with existing data and writing")
    async with ctx.transaction() as session:
        marker = ImportRun(job_id=ctx.job_id, outcome={}, created_at=datetime.now(UTC))
        session.add(marker)
        await session.flush()  # a concurrent run of this job stops here (one key)
        candidates = [item for item in items if not item.row.reasons]
        await importer.conflicts(session, candidates)
        valid = [item for item in candidates if not item.row.reasons]
        context = {"job_id": str(ctx.job_id), "base_url": ctx.payload.base_url}
        await importer.write(session, actor, role, valid, context)
        outcome = summary(ctx.payload, importer, file.rows, len(valid))
        marker.outcome = outcome
        counts = {key: outcome[key] for key in ("kind", "rows", "imported", "rejected")}
        record(session, actor, "import.finished", "job", ctx.job_id, **counts)
    return await finish(ctx, importer, outcome, file)


async def _requester(session: AsyncSession, job_id: int) -> tuple[Actor, Role] | None:
    """Who started the import and the role it acts with now: the person, or the API key
    (with its own role, never above its creator's); None once either may not act."""
    job = await session.get(Job, job_id)
    if job is not None and job.created_by_api_key_id is not None:
        key = await session.get(ApiKey, job.created_by_api_key_id)
        creator = await session.get(User, key.created_by_id) if key and key.created_by_id else None
        role = acting_role(key, creator) if key is not None else None
        return None if key is None or role is None else (Actor(None, acting_name(key)), role)
    user = await session.get(User, job.created_by_id) if job and job.created_by_id else None
    if user is None or not user.is_active:
        return None
    return Actor(user.id, user.username), user.role_level


def read_input(ctx: JobContext[ImportPayload], importer: Importer[Any]) -> CsvFile | None:
    """The uploaded file, read as at upload; None when it is gone."""
    path = ctx.input_dir / INPUT_NAME
    if not path.is_file():
        return None
    try:
        return read_csv(path.read_bytes(), importer.columns, max_rows=10**9)
    except ImportFileError as exc:  # checked at upload: only a file changed on disk
        raise JobFailed(exc.message) from None


def mark_duplicates(importer: Importer[Any], items: list[Any]) -> None:
    """Every row sharing its key with another row of the file is rejected, all of them:
    which one was meant is not for the import to guess."""
    lines: dict[Any, list[int]] = defaultdict(list)
    keyed = [(item, importer.key(item)) for item in items]
    keyed = [(item, key) for item, key in keyed if key[1]]  # none given: refused anyway
    for item, key in keyed:
        lines[key].append(item.row.line)
    for item, (what, value) in keyed:
        others = lines[(what, value)]
        if len(others) > 1:
            where = ", ".join(str(line) for line in others if line != item.row.line)
            item.row.reasons.append(f"The same {what} is also on line {where} of the file.")


def summary(
    payload: ImportPayload, importer: Importer[Any], rows: list[Row], imported: int
) -> dict[str, Any]:
    rejected = [row for row in rows if row.reasons]
    return {
        "kind": payload.kind,
        "filename": payload.filename,
        "rows": len(rows),
        "imported": imported,
        "rejected": len(rejected),
        "rejected_rows": [
            {
                "line": row.line,
                "values": {
                    name: row.values.get(name, "")[:SHOWN_CHARS] for name in importer.columns.shown
                },
                "reasons": row.reasons,
            }
            for row in rejected
        ],
    }


async def finish(
    ctx: JobContext[ImportPayload],
    importer: Importer[Any],
    outcome: dict[str, Any],
    file: CsvFile | None = None,
) -> dict[str, Any]:
    """The job's result; the rejected rows (whole, as uploaded) become a CSV file to fix and
    upload again. A second run rebuilds that file from the upload and the stored reasons."""
    reasons = {row["line"]: row["reasons"] for row in outcome.get("rejected_rows", ())}
    file = file or (read_input(ctx, importer) if reasons else None)
    if reasons and file is not None:
        rejected = [
            Row(row.line, row.values, reasons[row.line]) for row in file.rows if row.line in reasons
        ]
        name = f"rejected-{ctx.payload.kind}-{ctx.job_id}.csv"
        ctx.attach(name, rejected_csv(file.header, rejected), "text/csv; charset=utf-8")
    await ctx.progress(100, f"{outcome['imported']} imported, {outcome['rejected']} rejected")
    return outcome
