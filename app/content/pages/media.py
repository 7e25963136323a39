"""Media pages: `/media/<name>` serves stored files to everyone; `/admin/media` is the library
(viewers read, editors upload and delete). The rules live in `app.content.services.media`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote
from uuid import UUID

import anyio
from litestar import Controller, Request, Response, get, post
from litestar.datastructures import UploadFile
from litestar.params import FromPath, FromQuery
from litestar.response import File

from app.accounts.guards import roles
from app.accounts.models import Role
from app.accounts.services.audit import CurrentActor
from app.content.services.media import (
    HARD_MAX_BYTES,
    UPLOAD_MAX_BYTES,
    InvalidMedia,
    MediaError,
    MediaNotFound,
    delete_media,
    find_stored,
    get_media,
    human_size,
    is_image,
    list_media,
    markdown_reference,
    media_url,
    store_upload,
    stored_path,
)
from app.core.db import DbSession
from app.core.errors import field_errors
from app.core.pagination import PageNumber, PageRequest
from app.core.runtime import AppRuntime, Runtime
from app.core.templating import MultipartForm, redirect, render

PER_PAGE = 24
PICKER_PER_PAGE = 12
ONE_YEAR = 365 * 24 * 3600
KINDS = (("", "Images and PDFs"), ("image", "Images"), ("pdf", "PDFs"))
NOTICES = {
    "uploaded": "The file was uploaded.",
    "deleted": "The file was deleted.",
}
PICKER_NOTICES = {"uploaded": "The file was uploaded: choose it below to insert it."}
UPLOAD_LIMIT = HARD_MAX_BYTES + 1024 * 1024


def media_dir(runtime: Runtime) -> Path:
    return runtime.settings.app.media_dir


SANDBOX = "sandbox; default-src 'none'; frame-ancestors 'none'"
"""A stored file opened on its own is a document without script, plugins, forms or
requests, on an opaque origin: nothing in it can act on the site."""


def content_disposition(name: str, inline: bool) -> str:
    """`inline` (shown) or `attachment` (saved) with the display name: plain ASCII in
    `filename`, the exact name in `filename*` (RFC 6266) when they differ."""
    fallback = "".join(ch if 32 <= ord(ch) < 127 and ch not in '"\\' else "_" for ch in name)
    value = f'{"inline" if inline else "attachment"}; filename="{fallback}"'
    if fallback != name:
        value += f"; filename*=UTF-8''{quote(name, safe='')}"
    return value


class MediaFilesController(Controller):
    path = "/media"
    include_in_schema = False
    guards = [roles.public]

    @get("/{name:str}", name="media:file")
    async def serve(
        self, request: Request, runtime: AppRuntime, db_session: DbSession, name: FromPath[str]
    ) -> Response[Any]:
        """A stored file with its checked type. Names are random and never reused, so
        caches may keep it for a year; anything but a stored name is a 404. Only verified
        images are shown inline; everything is served in a CSP sandbox."""
        media = await find_stored(db_session, name)
        if media is None:
            raise MediaNotFound("No such media file.")
        path = stored_path(media_dir(runtime), media)
        if not await anyio.Path(path).is_file():
            raise MediaNotFound("No such media file.")
        if request.headers.get("hx-request"):
            # A link in a boosted page: htmx would swap the file's bytes into the page.
            # The browser loads it itself instead (shows an image, saves anything else).
            redirect_to = {"HX-Redirect": media_url(media), "Cache-Control": "no-store"}
            return Response(b"", headers={**redirect_to, "Vary": "HX-Request"})
        return File(
            path,
            media_type=media.content_type,
            headers={
                "Content-Disposition": content_disposition(media.original_name, is_image(media)),
                "Content-Security-Policy": SANDBOX,
                "Cache-Control": f"public, max-age={ONE_YEAR}, immutable",
                "X-Content-Type-Options": "nosniff",
                "Vary": "HX-Request",
            },
        )


@dataclass(frozen=True)
class LibraryView:
    """One way to show the library: the page itself, or the editor's media picker."""

    route: str
    template: str
    block: str
    per_page: int
    notices: dict[str, str]


LIBRARY = LibraryView("admin:media", "content/media/list.html", "results", PER_PAGE, NOTICES)
PICKER = LibraryView(
    "admin:media:picker", "content/media/picker.html", "picker", PICKER_PER_PAGE, PICKER_NOTICES
)
"""The editor's picker: an htmx fragment of the library (search, pages, upload) whose
items insert their Markdown at the cursor (static/js/editor.js)."""


def _library_context(
    request: Request, found: Any, params: dict[str, Any], max_bytes: int
) -> dict[str, Any]:
    return {
        "page": found,
        "params": params,
        "may_change": request.scope["user"].role >= Role.editor,
        "max_size": human_size(max_bytes),
        "markdown_reference": markdown_reference,
        "media_url": media_url,
        "is_image": is_image,
        "human_size": human_size,
    }


async def _found_media(
    db_session: DbSession, params: dict[str, Any], per_page: int
) -> tuple[Any, dict[str, Any]]:
    """One page of the library for `params` (q, kind, page), and the params it shows."""
    page = PageRequest.of(params.get("page"), per_page, default=per_page)
    try:
        found = await list_media(db_session, params.get("q"), params.get("kind"), page)
    except MediaError:  # only a hand-made URL gets here: the form offers valid kinds
        params = {**params, "kind": ""}
        found = await list_media(db_session, params.get("q"), None, page)
    return found, params


async def _store_form_file(
    runtime: Runtime, db_session: DbSession, actor: CurrentActor, data: dict[str, Any]
) -> tuple[dict[str, str], dict[str, str]]:
    """Store the form's file: the form to show again (alt text kept) and its errors, none
    when the file was stored."""
    upload = data.get("file")
    alt_text = value if isinstance(value := data.get("alt_text"), str) else ""
    form = {"alt_text": alt_text}
    try:
        if not isinstance(upload, UploadFile) or not upload.filename:
            raise InvalidMedia("Choose a file to upload.", "file")
        await store_upload(
            db_session,
            actor,
            media_dir(runtime),
            await UPLOAD_MAX_BYTES.read(db_session),
            upload.filename,
            upload,
            alt_text,
        )
    except MediaError as exc:
        return form, field_errors(exc)
    finally:
        if isinstance(upload, UploadFile):
            await upload.close()
    return form, {}


class MediaAdminController(Controller):
    path = "/media"
    include_in_schema = False

    async def _library(
        self,
        request: Request,
        db_session: DbSession,
        params: dict[str, Any],
        *,
        view: LibraryView = LIBRARY,
        form: dict[str, str] | None = None,
        errors: dict[str, str] | None = None,
        notice: str | None = None,
        status_code: int = 200,
    ) -> Response[str]:
        found, params = await _found_media(db_session, params, view.per_page)
        max_bytes = await UPLOAD_MAX_BYTES.read(db_session)
        context = _library_context(request, found, params, max_bytes)
        context.update(
            form=form or {},
            errors=errors or {},
            notice=view.notices.get(notice or ""),
            kinds=KINDS,
        )
        return render(request, view.template, context, block=view.block, status_code=status_code)

    async def _upload(
        self,
        request: Request,
        runtime: AppRuntime,
        db_session: DbSession,
        actor: CurrentActor,
        data: dict[str, Any],
        view: LibraryView,
    ) -> Response[Any]:
        """Store the form's file, then back to `view` with the new file first; a refused
        file shows the form again with the message beside its field."""
        form, errors = await _store_form_file(runtime, db_session, actor, data)
        if errors:
            params = {"q": "", "kind": "", "page": None}
            return await self._library(
                request, db_session, params, view=view, form=form, errors=errors, status_code=400
            )
        return redirect(request.app.route_reverse(view.route) + "?notice=uploaded")

    @get("/", name="admin:media", guards=[roles.viewer])
    async def index(
        self,
        request: Request,
        db_session: DbSession,
        q: FromQuery[str] = "",
        kind: FromQuery[str] = "",
        page: FromQuery[PageNumber] = 1,
        notice: FromQuery[str | None] = None,
    ) -> Response[str]:
        """The library, newest first; htmx searches and pages get only the results block."""
        params = {"q": q, "kind": kind, "page": page if page > 1 else None}
        return await self._library(request, db_session, params, notice=notice)

    @post(
        "/",
        name="admin:media:upload",
        guards=[roles.editor],
        request_max_body_size=UPLOAD_LIMIT,
    )
    async def upload(
        self,
        request: Request,
        runtime: AppRuntime,
        db_session: DbSession,
        actor: CurrentActor,
        data: MultipartForm,
    ) -> Response[Any]:
        """Store one file, then back to the library; a refused file shows the form again."""
        return await self._upload(request, runtime, db_session, actor, data, LIBRARY)

    @get("/picker", name="admin:media:picker", guards=[roles.viewer])
    async def picker(
        self,
        request: Request,
        db_session: DbSession,
        q: FromQuery[str] = "",
        kind: FromQuery[str] = "",
        page: FromQuery[PageNumber] = 1,
        notice: FromQuery[str | None] = None,
    ) -> Response[str]:
        """The editor's media picker: htmx gets the fragment, a browser the whole page."""
        params = {"q": q, "kind": kind, "page": page if page > 1 else None}
        return await self._library(request, db_session, params, view=PICKER, notice=notice)

    @post(
        "/picker",
        name="admin:media:picker_upload",
        guards=[roles.editor],
        request_max_body_size=UPLOAD_LIMIT,
    )
    async def picker_upload(
        self,
        request: Request,
        runtime: AppRuntime,
        db_session: DbSession,
        actor: CurrentActor,
        data: MultipartForm,
    ) -> Response[Any]:
        """Upload from the picker: back to the picker with the new file first."""
        return await self._upload(request, runtime, db_session, actor, data, PICKER)

    @get("/{media_id:uuid}/delete", name="admin:media:delete", guards=[roles.editor])
    async def confirm_delete(
        self, request: Request, db_session: DbSession, media_id: FromPath[UUID]
    ) -> Response[str]:
        """Ask first: entries that reference the file show a broken image or link after."""
        media = await get_media(db_session, media_id)
        context = {
            "media": media,
            "url": media_url(media),
            "is_image": is_image(media),
            "reference": markdown_reference(media),
        }
        return render(request, "content/media/delete.html", context)

    @post("/{media_id:uuid}/delete", name="admin:media:delete_submit", guards=[roles.editor])
    async def delete(
        self,
        request: Request,
        runtime: AppRuntime,
        db_session: DbSession,
        actor: CurrentActor,
        media_id: FromPath[UUID],
    ) -> Response[bytes]:
        await delete_media(db_session, actor, media_dir(runtime), media_id)
        location = request.app.route_reverse("admin:media") + "?notice=deleted"
        return redirect(location)
