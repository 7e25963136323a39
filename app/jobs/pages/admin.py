"""`/admin/jobs`: the queue for people: list with live progress, detail, enqueue, retry,
cancel, download, and the workers' heartbeats. Rules live in `app.jobs.services.jobs`."""

from __future__ import annotations

import time
from typing import Any

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import UploadFile
from litestar.params import FromPath, FromQuery
from litestar.plugins.htmx import HTMXRequest
from litestar.response import File

from app.accounts.guards import roles
from app.accounts.guards.identity import Caller, CurrentUser
from app.accounts.services.audit import CurrentActor
from app.content.services.media import human_size
from app.core.db import DbSession
from app.core.errors import DomainError, Forbidden, field_errors
from app.core.numbers import RowId
from app.core.pagination import PageNumber, PageRequest
from app.core.runtime import AppRuntime, Runtime
from app.core.templating import Form, MultipartForm, redirect, render, render_list, site_base
from app.jobs.jobs.imports.upload import submit_import
from app.jobs.models import FINISHED
from app.jobs.pages.forms import error_field, form_defaults, payload_fields, payload_from_form
from app.jobs.services import jobs as services
from app.jobs.services.registry import JobInputError, JobType, job_type, job_types
from app.jobs.services.worker import list_workers

PER_PAGE = 25
POLL_TRIGGER = "results"
"""Id of the element that polls to refresh the list (no history entry per poll)."""


def _chosen(user: Any, name: str | None) -> JobType | None:
    """The type the enqueue form shows: `name` if the user may run it; none at first (the
    form then lists every type with what it does)."""
    runnable = services.runnable_types(user, uploads=False)
    return next((kind for kind in runnable if kind.name == name), None)


class JobsAdminController(Controller):
    path = "/jobs"
    guards = [roles.viewer]
    include_in_schema = False

    @get("/", name="admin:jobs")
    async def index(
        self,
        request: HTMXRequest,
        runtime: AppRuntime,
        db_session: DbSession,
        caller: Caller,
        status: FromQuery[str] = "",
        type: FromQuery[str] = "",
        page: FromQuery[PageNumber] = 1,
    ) -> Response[str]:
        """Newest first; the results (jobs and workers) refresh every two seconds."""
        return await self._list_page(
            request, runtime, db_session, caller, {"status": status, "type": type}, page
        )

    async def _list_page(
        self,
        request: HTMXRequest,
        runtime: Runtime,
        db_session: DbSession,
        user: CurrentUser,
        params: dict[str, str],
        page: int | None,
        form: dict[str, str] | None = None,
        errors: dict[str, str] | None = None,
        import_form: dict[str, str] | None = None,
        import_errors: dict[str, str] | None = None,
    ) -> Response[str]:
        chosen = _chosen(user, (form or {}).get("type"))
        params = {k: v for k, v in params.items() if v}
        jobs, filter_error = None, None
        try:
            filters = services.JobFilters(status=params.get("status"), type=params.get("type"))
            jobs = await services.list_jobs(
                db_session, user, filters, PageRequest.of(page, PER_PAGE, default=PER_PAGE)
            )
        except DomainError as exc:
            filter_error = exc.message
        context = {
            "jobs": jobs,
            "params": params,
            "filter_error": filter_error,
            "statuses": services.STATUSES,
            "all_types": [kind.name for kind in job_types()],
            "runnable": services.runnable_types(user, uploads=False),
            "chosen": chosen,
            "chosen_fields": payload_fields(chosen) if chosen is not None else None,
            "may_import": user.has(job_type("import").role),
            "form": form or {**form_defaults(chosen), "priority": "0"},
            "errors": errors or {},
            "import_form": import_form or {},
            "import_errors": import_errors or {},
            "import_limits": runtime.settings.worker,
            "import_max_size": human_size(runtime.settings.worker.import_max_bytes),
            "workers": await list_workers(runtime.store),
            "queues": await services.queue_figures(db_session),
            "finished": FINISHED,
            "now": time.time(),
        }
        invalid = bool(filter_error or errors or import_errors)
        if request.htmx and request.htmx.trigger == POLL_TRIGGER:
            return render(request, "jobs/list.html", context, block="results")
        return render_list(
            request,
            "jobs/list.html",
            context,
            params=params,
            page=jobs.page if jobs else None,
            invalid=invalid,
        )

    @post("/", name="admin:jobs:create")
    async def create(
        self,
        request: HTMXRequest,
        runtime: AppRuntime,
        db_session: DbSession,
        actor: CurrentActor,
        caller: Caller,
        data: Form,
    ) -> Response[Any]:
        """Enqueue a job of the chosen type; errors come back beside the form's fields."""
        form = {k: v for k, v in data.items() if isinstance(v, str)}
        kind = _chosen(caller, form.get("type"))
        try:
            priority = int(form.get("priority") or 0)
        except ValueError:
            priority = None
        try:
            if priority is None:
                raise JobInputError("Priority must be a whole number.", "priority")
            if not form.get("type"):
                raise JobInputError("Choose a job type.", "type")
            payload = payload_from_form(job_type(form.get("type", "")), form)
            job = await services.submit_job(
                db_session,
                actor,
                caller,
                form.get("type", ""),
                payload,
                priority,
            )
        except DomainError as exc:
            if isinstance(exc, Forbidden):
                raise
            field = error_field(kind, exc) if isinstance(exc, JobInputError) else exc.field
            errors = {field or "form": exc.message}
            response = await self._list_page(
                request, runtime, db_session, caller, {}, None, form, errors
            )
            response.status_code = 400
            return response
        return redirect(request.app.route_reverse("admin:job", job_id=job.id))

    @get("/fields", name="admin:jobs:fields")
    async def fields(
        self, request: HTMXRequest, caller: Caller, type: FromQuery[str] = ""
    ) -> Response[str]:
        """The enqueue form's payload fields for `type` (htmx swaps them in on a change)."""
        kind = _chosen(caller, type)
        fields = payload_fields(kind) if kind is not None else None
        context = {
            "fields": fields,
            "form": form_defaults(kind),
            "kind": kind,
            "runnable": services.runnable_types(caller, uploads=False),
        }
        return render(request, "jobs/_fields_block.html", context, block=None)

    @post("/import", name="admin:jobs:import", request_max_body_size=services.UPLOAD_BODY_LIMIT)
    async def create_import(
        self,
        request: HTMXRequest,
        runtime: AppRuntime,
        db_session: DbSession,
        actor: CurrentActor,
        caller: Caller,
        data: MultipartForm,
    ) -> Response[Any]:
        """Upload a CSV file as a new import job; a refused file shows the form again with
        the reason beside its field."""
        kind = value if isinstance(value := data.get("kind"), str) else ""
        upload = data.get("file")
        try:
            if not isinstance(upload, UploadFile) or not upload.filename:
                raise JobInputError("Choose a CSV file to upload.", "file")
            job = await submit_import(
                db_session,
                runtime.settings,
                actor,
                caller,
                kind,
                await services.read_upload(upload, runtime.settings),
                upload.filename,
                site_base(request),
            )
        except DomainError as exc:
            if isinstance(exc, Forbidden):
                raise
            errors = field_errors(exc)
            response = await self._list_page(
                request, runtime, db_session, caller, {}, None, None, None, {"kind": kind}, errors
            )
            response.status_code = 413 if exc.status == 413 else 400
            return response
        finally:
            if isinstance(upload, UploadFile):
                await upload.close()
        return redirect(request.app.route_reverse("admin:job", job_id=job.id))

    @get("/{job_id:int}", name="admin:job")
    async def detail(
        self,
        request: HTMXRequest,
        runtime: AppRuntime,
        db_session: DbSession,
        caller: Caller,
        job_id: FromPath[RowId],
    ) -> Response[str]:
        """One job: payload, attempts, errors, result; refreshes itself until it finishes."""
        job = await services.visible_job(db_session, caller, job_id)
        expired = services.files_expired(runtime.settings, job)
        context = {"job": job, "finished": FINISHED, "files_expired": expired}
        return render(request, "jobs/detail.html", context, block="status")

    @post("/{job_id:int}/cancel", name="admin:job:cancel")
    async def cancel(
        self,
        request: Request,
        db_session: DbSession,
        actor: CurrentActor,
        caller: Caller,
        job_id: FromPath[RowId],
    ) -> Response[Any]:
        await services.cancel_job(db_session, actor, caller, job_id)
        return redirect(request.app.route_reverse("admin:job", job_id=job_id))

    @post("/{job_id:int}/retry", name="admin:job:retry")
    async def retry(
        self,
        request: Request,
        db_session: DbSession,
        actor: CurrentActor,
        caller: Caller,
        job_id: FromPath[RowId],
    ) -> Response[Any]:
        await services.retry_job(db_session, actor, caller, job_id)
        return redirect(request.app.route_reverse("admin:job", job_id=job_id))

    @get("/{job_id:int}/download", name="admin:job:download")
    async def download(
        self,
        request: Request,
        runtime: AppRuntime,
        db_session: DbSession,
        caller: Caller,
        job_id: FromPath[RowId],
        file: FromQuery[str | None] = None,
    ) -> File:
        job = await services.visible_job(db_session, caller, job_id)
        return services.result_download(runtime.settings, job, file)
