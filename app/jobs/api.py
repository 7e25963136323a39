"""`/api/v1/jobs`: enqueue, list, read, cancel, retry and download results (see services
for who may do what)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from litestar import Controller, Request, get, post
from litestar.datastructures import UploadFile
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath, FromQuery, JSONBody
from litestar.response import File

from app.accounts.guards import roles
from app.accounts.guards.identity import Caller
from app.accounts.services.audit import CurrentActor
from app.core.db import DbSession
from app.core.fields import FieldNames, Fields, selected_each
from app.core.numbers import RowId
from app.core.openapi import problem_responses
from app.core.pagination import PageNumber, PageRequest, PerPage
from app.core.runtime import AppRuntime
from app.core.templating import site_base
from app.jobs.jobs.imports.upload import submit_import
from app.jobs.schemas import JobCreate, JobOut, JobTypeOut
from app.jobs.services import jobs as services


@dataclass
class ImportUpload:
    kind: str
    """`users` or `content`."""
    file: UploadFile
    """The CSV file."""


IMPORT_DESCRIPTION = (
    "Multipart: `kind` (`users` or `content`) and `file`, a CSV file in UTF-8 (a BOM is "
    "fine) of at most IMPORT_MAX_BYTES (413 above) and IMPORT_MAX_ROWS rows, whose header "
    "names known columns (422 otherwise, as problem details). Users: `email` (required), "
    "`name`, `role` (viewer when empty), `active` (yes/no). Content: `kind` (page|post) and "
    "`title` (required), `slug`, `body` (Markdown), `excerpt`, `meta_description`, `tags` "
    "(comma-separated), `status` (draft|published|scheduled|archived), `publish_at` (ISO "
    "8601, UTC without an offset; required for scheduled), `nav_order`. Editors and admins; "
    "an editor's rows with the admin role are rejected. The job's result counts `rows`, "
    "`imported` and `rejected` and lists every rejected row (`line`, `values`, `reasons`); "
    "its result file holds those rows with an `import_errors` column, to fix and upload again."
)


class JobsController(Controller):
    path = "/jobs"
    tags = ["jobs"]
    guards = [roles.viewer]

    @get("/", name="api:jobs:list")
    async def list_jobs(
        self,
        db_session: DbSession,
        caller: Caller,
        status: FromQuery[str | None] = None,
        type: FromQuery[str | None] = None,
        page: FromQuery[PageNumber] = 1,
        per_page: FromQuery[PerPage] = 20,
        fields: FieldNames = None,
    ) -> dict[str, Any]:
        """Jobs the caller may see (their own; admins: all), newest first."""
        chosen = Fields.parse(fields, JobOut)
        found = await services.list_jobs(
            db_session,
            caller,
            services.JobFilters(status=status, type=type),
            PageRequest.of(page, per_page),
        )
        return found.envelope(selected_each([JobOut.of(job) for job in found.items], chosen))

    @get("/types", name="api:jobs:types")
    async def list_types(self, caller: Caller) -> list[JobTypeOut]:
        """The job types the caller may enqueue."""
        return [JobTypeOut.of(kind) for kind in services.runnable_types(caller)]

    @post("/", name="api:jobs:create", status_code=201)
    async def create_job(
        self, db_session: DbSession, actor: CurrentActor, caller: Caller, data: JSONBody[JobCreate]
    ) -> JobOut:
        """Enqueue a job; the payload is validated against its type (422 when it does not fit)."""
        job = await services.submit_job(
            db_session,
            actor,
            caller,
            data.type,
            data.payload,
            data.priority,
        )
        return JobOut.of(job)

    @post(
        "/import",
        name="api:jobs:import",
        status_code=201,
        summary="Import users or content from a CSV file",
        description=IMPORT_DESCRIPTION,
        request_max_body_size=services.UPLOAD_BODY_LIMIT,
    )
    async def create_import(
        self,
        request: Request,
        runtime: AppRuntime,
        db_session: DbSession,
        actor: CurrentActor,
        caller: Caller,
        data: Annotated[ImportUpload, Body(media_type=RequestEncodingType.MULTI_PART)],
    ) -> JobOut:
        """Enqueue an `import` job from an uploaded CSV file (see IMPORT_DESCRIPTION)."""
        job = await submit_import(
            db_session,
            runtime.settings,
            actor,
            caller,
            data.kind,
            await services.read_upload(data.file, runtime.settings),
            data.file.filename,
            site_base(request),
        )
        return JobOut.of(job)

    @get("/{job_id:int}", name="api:jobs:get")
    async def get_job(
        self, db_session: DbSession, caller: Caller, job_id: FromPath[RowId]
    ) -> JobOut:
        return JobOut.of(await services.visible_job(db_session, caller, job_id))

    @post("/{job_id:int}/cancel", name="api:jobs:cancel", status_code=200)
    async def cancel_job(
        self, db_session: DbSession, actor: CurrentActor, caller: Caller, job_id: FromPath[RowId]
    ) -> JobOut:
        """Cancel: a queued job at once, a running one at its next progress report."""
        return JobOut.of(await services.cancel_job(db_session, actor, caller, job_id))

    @post("/{job_id:int}/retry", name="api:jobs:retry", status_code=200)
    async def retry_job(
        self, db_session: DbSession, actor: CurrentActor, caller: Caller, job_id: FromPath[RowId]
    ) -> JobOut:
        """Queue a failed, dead or cancelled job again."""
        return JobOut.of(await services.retry_job(db_session, actor, caller, job_id))

    @get(
        "/{job_id:int}/result",
        name="api:jobs:result",
        media_type="*/*",  # the type of the file the job attached: CSV, JSON, HTML
        responses=problem_responses(410),
    )
    async def download_result(
        self,
        runtime: AppRuntime,
        db_session: DbSession,
        caller: Caller,
        job_id: FromPath[RowId],
        file: FromQuery[str | None] = None,
    ) -> File:
        """The job's result file, or the one named `file` (404 when it has none, 410 once
        it expired)."""
        job = await services.visible_job(db_session, caller, job_id)
        return services.result_download(runtime.settings, job, file)
