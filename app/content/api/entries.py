"""`/api/v1/content`: entries for API clients, under the same rules as the admin pages.

Reads are open to anyone, but only editors and admins see entries that are not public;
everyone else (anonymous callers, viewers) sees exactly what a visitor of the site sees.
"""

from __future__ import annotations

from typing import Any, TypeVar
from uuid import UUID

import msgspec
from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.datastructures import ResponseHeader
from litestar.enums import MediaType
from litestar.params import FromPath, FromQuery, JSONBody
from litestar.serialization import encode_json, get_serializer

from app.accounts.guards import roles
from app.accounts.models import Role
from app.accounts.services.audit import CurrentActor
from app.content.models import Entry
from app.content.schemas import (
    EntryCreate,
    EntryOut,
    EntrySummaryOut,
    EntrySummaryPageOut,
    EntryUpdate,
    PublishIn,
    RevisionOut,
)
from app.content.services.entries import (
    ContentNotFound,
    EntryFilters,
    EntryInput,
    delete_entry,
    get_entry,
    list_revisions,
    publish_entry,
    save_entry,
    unpublish_entry,
)
from app.content.services.list_cache import KeptList, ListCache
from app.content.services.page_cache import PUBLIC_CACHE
from app.content.services.public import visible_to_public
from app.content.services.reads import current_content_generation, entry_row_by_id
from app.content.services.reads import list_entries as read_entries
from app.core.db import DbSession
from app.core.fields import FieldNames, Fields, Selected, selected
from app.core.pagination import PageNumber, PageRequest, PerPage
from app.core.reads import Reads
from app.core.runtime import runtime_of

T = TypeVar("T")


def _given(value: T | None, current: T) -> T:
    """A PATCH field: the new value when the client sent one, else the current value."""
    return current if value is None else value


def _sees_everything(request: Request) -> bool:
    user = request.scope.get("user")
    return user is not None and user.has(Role.editor)


async def _visible_entry(request: Request, db_session: DbSession, entry_id: UUID) -> Entry:
    """The entry, or a 404 when the caller may not see it (never a hint that it exists)."""
    entry = await get_entry(db_session, entry_id)
    if not _sees_everything(request) and not visible_to_public(entry):
        raise ContentNotFound("No such entry.")
    return entry


LIST_ETAG = ResponseHeader(
    name="ETag",
    description="For editors and admins: the list's version (weak once compressed). Sent "
    "back in If-None-Match, it answers 304 without a body until an entry or tag changes.",
    documentation_only=True,
)


async def _listed(
    reads: Reads, filters: EntryFilters, page: PageRequest, chosen: Fields | None
) -> EntrySummaryPageOut | Selected:
    summary = chosen is None or chosen.within(EntrySummaryOut)
    found = await read_entries(
        reads,
        filters,
        page,
        EntrySummaryOut.from_row if summary else EntryOut.from_row,
        summary=summary,
    )
    if chosen is None:
        return EntrySummaryPageOut(list(found.items), found.total, found.page, found.per_page)
    return found.envelope([chosen.pick(item) for item in found.items])


def _kept_answer(request: Request, kept: KeptList) -> Response[Any]:
    """A kept list as the answer, or 304 when the client holds it already (its ETag,
    weak once compressed, stands for every encoding: RFC 9110 8.8.1)."""
    headers = {"etag": kept.etag}
    held = [
        tag.strip().removeprefix("W/")
        for tag in request.headers.get("if-none-match", "").split(",")
    ]
    if kept.etag in held or "*" in held:
        return Response(b"", status_code=304, headers=headers)
    return Response(kept.body, media_type=MediaType.JSON, headers=headers)


class ContentController(Controller):
    path = "/content"
    tags = ["content"]

    @get(
        "/",
        name="api:content:list",
        guards=[roles.public],
        opt=PUBLIC_CACHE,
        response_headers=[LIST_ETAG],
    )
    async def index(
        self,
        request: Request,
        kind: FromQuery[str | None] = None,
        status: FromQuery[str | None] = None,
        author_id: FromQuery[UUID | None] = None,
        tag: FromQuery[str | None] = None,
        q: FromQuery[str | None] = None,
        page: FromQuery[PageNumber] = 1,
        per_page: FromQuery[PerPage] = 20,
        fields: FieldNames = None,
    ) -> Response[EntrySummaryPageOut | Selected]:
        """Entries of `kind` (page|post) and `status`, by `author_id`, tagged `tag`, with
        `q` in the title or slug; most recently changed first. Each item is a summary (no
        bodies), or the `fields` of `EntryOut` named. Editors' and admins' answers carry a
        strong ETag (If-None-Match answers 304 while no entry or tag changed)."""
        chosen = Fields.parse(fields, EntryOut)
        filters = EntryFilters(
            kind=kind or None,
            status=status or None,
            author_id=author_id,
            tag=tag or None,
            q=q or None,
            public_only=not _sees_everything(request),
        )
        runtime = runtime_of(request.app.state)
        asked = PageRequest.of(page, per_page)
        if filters.public_only:  # changes with the clock too: the page cache keeps it
            return Response(await _listed(runtime.reads, filters, asked, chosen))
        lists = runtime.service(ListCache)
        generation = await current_content_generation(runtime.reads)
        query = request.scope["query_string"]
        kept = lists.get(generation, query)
        if kept is None:
            found = await _listed(runtime.reads, filters, asked, chosen)
            serializer = get_serializer(request.route_handler.resolve_type_encoders())
            kept = lists.keep(generation, query, encode_json(found, serializer))
        return _kept_answer(request, kept)

    @get("/{entry_id:uuid}", name="api:content:get", guards=[roles.public], opt=PUBLIC_CACHE)
    async def show(
        self, request: Request, entry_id: FromPath[UUID], fields: FieldNames = None
    ) -> EntryOut | Selected:
        """The entry in full, or the `fields` named."""
        chosen = Fields.parse(fields, EntryOut)
        row = await entry_row_by_id(
            runtime_of(request.app.state).reads, entry_id, may_preview=_sees_everything(request)
        )
        if row is None:
            raise ContentNotFound("No such entry.")
        return selected(EntryOut.from_row(row), chosen)

    @post("/", name="api:content:create", guards=[roles.editor], status_code=201)
    async def create(
        self, db_session: DbSession, actor: CurrentActor, data: JSONBody[EntryCreate]
    ) -> EntryOut:
        """A new draft; the slug is made from the title when not given (409 when taken)."""
        entry = await save_entry(
            db_session,
            actor,
            EntryInput(
                kind=data.kind,
                title=data.title,
                slug=data.slug,
                body_markdown=data.body_markdown,
                excerpt=data.excerpt,
                meta_description=data.meta_description,
                tags=data.tags,
                nav_order=data.nav_order,
            ),
        )
        return EntryOut.of(entry)

    @patch("/{entry_id:uuid}", name="api:content:update", guards=[roles.editor])
    async def update(
        self,
        db_session: DbSession,
        actor: CurrentActor,
        entry_id: FromPath[UUID],
        data: JSONBody[EntryUpdate],
    ) -> EntryOut:
        """Change the fields given; every save keeps a revision."""
        entry = await get_entry(db_session, entry_id)
        changes = EntryInput(
            kind=entry.kind,
            title=_given(data.title, entry.title),
            slug=_given(data.slug, entry.slug),
            body_markdown=_given(data.body_markdown, entry.body_markdown),
            excerpt=_given(data.excerpt, entry.excerpt),
            meta_description=_given(data.meta_description, entry.meta_description),
            tags=_given(data.tags, [tag.name for tag in entry.tags]),
            nav_order=entry.nav_order if data.nav_order is msgspec.UNSET else data.nav_order,
        )
        return EntryOut.of(await save_entry(db_session, actor, changes, entry))

    @delete("/{entry_id:uuid}", name="api:content:delete", guards=[roles.editor], status_code=204)
    async def remove(
        self, db_session: DbSession, actor: CurrentActor, entry_id: FromPath[UUID]
    ) -> None:
        entry = await get_entry(db_session, entry_id)
        await delete_entry(db_session, actor, entry)

    @post(
        "/{entry_id:uuid}/publish",
        name="api:content:publish",
        guards=[roles.editor],
        status_code=200,
    )
    async def publish(
        self,
        db_session: DbSession,
        actor: CurrentActor,
        entry_id: FromPath[UUID],
        data: JSONBody[PublishIn | None] = None,
    ) -> EntryOut:
        """Publish now, or at `published_at` (with its offset): a future time schedules it.
        An entry published already keeps its date unless `published_at` is given."""
        entry = await get_entry(db_session, entry_id)
        at = data.published_at if data is not None else None
        entry = await publish_entry(db_session, actor, entry, at)
        return EntryOut.of(entry)

    @post(
        "/{entry_id:uuid}/unpublish",
        name="api:content:unpublish",
        guards=[roles.editor],
        status_code=200,
    )
    async def unpublish(
        self, db_session: DbSession, actor: CurrentActor, entry_id: FromPath[UUID]
    ) -> EntryOut:
        """Back to draft: invisible to visitors at once."""
        entry = await get_entry(db_session, entry_id)
        return EntryOut.of(await unpublish_entry(db_session, actor, entry))

    @get("/{entry_id:uuid}/revisions", name="api:content:revisions", guards=[roles.viewer])
    async def revisions(
        self, request: Request, db_session: DbSession, entry_id: FromPath[UUID]
    ) -> list[RevisionOut]:
        """Every saved version of the entry, newest first."""
        entry = await _visible_entry(request, db_session, entry_id)
        revisions = await list_revisions(db_session, entry.id)
        return msgspec.convert(revisions, list[RevisionOut], from_attributes=True)
