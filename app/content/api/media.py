"""`/api/v1/media`: upload (multipart), list and delete media files. The rules live in
`app.content.services.media`; viewers list, editors upload and delete."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any
from uuid import UUID

import msgspec
from litestar import Controller, Response, delete, get, post
from litestar.datastructures import UploadFile
from litestar.enums import RequestEncodingType
from litestar.params import Body, FromPath, FromQuery

from app.accounts.guards import roles
from app.accounts.guards.identity import Caller
from app.accounts.services.audit import CurrentActor
from app.content.models import Media
from app.content.services.media import (
    HARD_MAX_BYTES,
    UPLOAD_MAX_BYTES,
    delete_media,
    list_media,
    markdown_reference,
    media_url,
    store_upload,
)
from app.core.db import DbSession
from app.core.fields import FieldNames, Fields, selected_each
from app.core.pagination import PageNumber, PageRequest, PerPage
from app.core.runtime import AppRuntime


@dataclass
class MediaUpload:
    file: UploadFile
    alt_text: str = ""


class MediaOut(msgspec.Struct):
    id: UUID
    url: str
    markdown: str
    original_name: str
    content_type: str
    size: int
    width: int | None
    height: int | None
    alt_text: str
    uploaded_by: str | None
    created_at: datetime

    @classmethod
    def of(cls, media: Media, uploaded_by: str | None) -> MediaOut:
        """Not a plain copy: `url` and `markdown` are made, `uploaded_by` comes from a join."""
        return cls(
            id=media.id,
            url=media_url(media),
            markdown=markdown_reference(media),
            original_name=media.original_name,
            content_type=media.content_type,
            size=media.size,
            width=media.width,
            height=media.height,
            alt_text=media.alt_text,
            uploaded_by=uploaded_by,
            created_at=media.created_at,
        )


class MediaController(Controller):
    path = "/media"
    tags = ["media"]

    @get("/", name="api:media:list", guards=[roles.viewer])
    async def list_files(
        self,
        db_session: DbSession,
        q: FromQuery[str | None] = None,
        kind: FromQuery[str | None] = None,
        page: FromQuery[PageNumber] = 1,
        per_page: FromQuery[PerPage] = 20,
        fields: FieldNames = None,
    ) -> dict[str, Any]:
        """Media, newest first; `q` searches names and alt texts, `kind` is image or pdf."""
        chosen = Fields.parse(fields, MediaOut)
        found = await list_media(db_session, q, kind, PageRequest.of(page, per_page))
        files = [MediaOut.of(item.media, item.uploaded_by) for item in found.items]
        return found.envelope(selected_each(files, chosen))

    @post(
        "/",
        name="api:media:upload",
        status_code=201,
        guards=[roles.editor],
        request_max_body_size=HARD_MAX_BYTES + 1024 * 1024,
    )
    async def upload(
        self,
        runtime: AppRuntime,
        db_session: DbSession,
        actor: CurrentActor,
        caller: Caller,
        data: Annotated[MediaUpload, Body(media_type=RequestEncodingType.MULTI_PART)],
    ) -> Response[MediaOut]:
        """Upload one image (PNG, JPEG, GIF, WebP) or PDF as the `file` part; the type is
        read from the content, and the size limit is the `upload_max_bytes` setting."""
        try:
            media = await store_upload(
                db_session,
                actor,
                runtime.settings.app.media_dir,
                await UPLOAD_MAX_BYTES.read(db_session),
                data.file.filename,
                data.file,
                data.alt_text,
            )
        finally:
            await data.file.close()
        return Response(MediaOut.of(media, caller.username), status_code=201)

    @delete("/{media_id:uuid}", name="api:media:delete", status_code=204, guards=[roles.editor])
    async def delete_file(
        self,
        runtime: AppRuntime,
        db_session: DbSession,
        actor: CurrentActor,
        media_id: FromPath[UUID],
    ) -> None:
        """Delete the file and its record; URLs to it answer 404 from then on."""
        await delete_media(db_session, actor, runtime.settings.app.media_dir, media_id)
