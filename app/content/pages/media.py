"""Media pages: `/media/<name>` serves stored files to everyone; `/admin/media` is the library
(viewers read, editors upload and delete). The rules live in `app.content.services.media`."""

from __future__ import annotations

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
ONE_YEAR = 365 * 24 * 3600
KINDS = (("", "Images and PDFs"), ("image", "Images"), ("pdf", "PDFs"))
NOTICES = {
    "uploaded": "The file was uploaded.",
    "deleted": "The file was deleted.",
}


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


class MediaAdminController(Controller):
    path = "/media"
    include_in_schema = False

    async def _library(
        self,
        request: Request,
        db_session: DbSession,
        params: dict[str, Any],
        *,
        form: dict[str, str] | None = None,
        errors: dict[str, str] | None = None,
        notice: str | None = None,
        status_code: int = 200,
    ) -> Response[str]:
        page = PageRequest.of(params.get("page"), PER_PAGE, default=PER_PAGE)
        try:
            found = await list_media(db_session, params.get("q"), params.get("kind"), page)
        except MediaError:  # only a hand-made URL gets here: the form offers valid kinds
            params = {**params, "kind": ""}
            found = await list_media(db_session, params.get("q"), None, page)
        max_bytes = await UPLOAD_MAX_BYTES.read(db_session)
        context = _library_context(request, found, params, max_bytes)
        context.update(
            form=form or {}, errors=errors or {}, notice=NOTICES.get(notice or ""), kinds=KINDS
        )
        return render(
            request, "content/media/list.html", context, block="results", status_code=status_code
        )

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
        request_max_body_size=HARD_MAX_BYTES + 1024 * 1024,
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
            params = {"q": "", "kind": "", "page": None}
            errors = field_errors(exc)
            return await self._library(
                request, db_session, params, form=form, errors=errors, status_code=400
            )
        finally:
            if isinstance(upload, UploadFile):
                await upload.close()
        location = request.app.route_reverse("admin:media") + "?notice=uploaded"
        return redirect(location)

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
