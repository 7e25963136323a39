"""`/admin/content`: pages and posts. Viewers read; editors and admins write and publish.

Every rule lives in app/content/services/entries.py; these handlers parse the form, call one
service and answer a redirect, or the form again with the message beside its field.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from litestar import Controller, MediaType, Request, Response, get, post
from litestar.params import FromPath, FromQuery

from app.accounts.guards import roles
from app.accounts.models import Role
from app.accounts.services.audit import CurrentActor
from app.content.models import Entry, Kind, Status
from app.content.services.entries import (
    ContentError,
    EntryFilters,
    EntryInput,
    InvalidContent,
    archive_entry,
    delete_entry,
    entry_authors,
    entry_input,
    get_entry,
    get_revision,
    keeps_publish_time,
    list_entries,
    list_revisions,
    publish_entry,
    restore_revision,
    save_entry,
    unpublish_entry,
)
from app.content.services.markdown import render_markdown
from app.content.services.public import (
    author_names,
    public_path,
    shown_status,
    visible_to_public,
)
from app.core.db import DbSession
from app.core.errors import field_errors, only_if_valid
from app.core.pagination import PageNumber, PageRequest
from app.core.templating import Form, redirect, render, render_list
from app.core.times import InvalidTime, parse_local_time
from app.core.zones import zone_of

PER_PAGE = 25
NOTICES = {
    "created": "The draft was created.",
    "saved": "Your changes were saved.",
    "published": "The entry is published.",
    "kept": "The entry was published already: its publish time is kept. Give a time to change it.",
    "scheduled": "The entry is scheduled.",
    "unpublished": "The entry is back to draft and hidden from visitors.",
    "archived": "The entry is archived and hidden from visitors.",
    "restored": "The revision was restored (as a new revision).",
    "deleted": "The entry was deleted.",
}
FORM_TEMPLATE = "content/admin/form.html"


@dataclass(frozen=True)
class DiffRow:
    """One line of a comparison: `same`, `removed` (revision only) or `added` (current only)."""

    change: str
    old_number: int | None
    new_number: int | None
    text: str


def diff_lines(old: str, new: str) -> list[DiffRow]:
    """A line diff of a revision's text (`old`) against the current text (`new`)."""
    before, after = old.splitlines(), new.splitlines()
    rows: list[DiffRow] = []
    matcher = difflib.SequenceMatcher(a=before, b=after, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            rows += [
                DiffRow("same", i + 1, j1 + k + 1, before[i]) for k, i in enumerate(range(i1, i2))
            ]
            continue
        rows += [DiffRow("removed", i + 1, None, before[i]) for i in range(i1, i2)]
        rows += [DiffRow("added", None, j + 1, after[j]) for j in range(j1, j2)]
    return rows


def _may_change(request: Request) -> bool:
    return request.scope["user"].has(Role.editor)


def _edit_url(request: Request, entry_id: UUID, notice: str | None = None) -> str:
    url = request.app.route_reverse("admin:content_edit", entry_id=entry_id)
    return f"{url}?notice={notice}" if notice else url


def _form_values(entry: Entry) -> dict[str, str]:
    return {
        "kind": entry.kind,
        "title": entry.title,
        "slug": entry.slug,
        "body_markdown": entry.body_markdown,
        "excerpt": entry.excerpt if entry.excerpt_written else "",
        "meta_description": entry.meta_description if entry.meta_description_written else "",
        "tags": ", ".join(tag.name for tag in entry.tags),
        "nav_order": "" if entry.nav_order is None else str(entry.nav_order),
    }


def _entry_input(data: dict[str, str], kind: str) -> EntryInput:
    """What the editor's form describes; a nav order that is not a number is InvalidContent."""
    entry, problem = entry_input(data, kind)
    return only_if_valid(entry, [problem] if problem else [])


def _publish_time(request: Request, data: dict[str, str]) -> datetime | None:
    """The form's `datetime-local` value, read in the site's time zone (the form says
    which); empty means now."""
    text = (data.get("published_at") or "").strip()
    return parse_local_time(text, "published_at", zone_of(request.state)) if text else None


async def _entry_page(
    request: Request,
    db_session: DbSession,
    entry: Entry | None,
    form: dict[str, str],
    errors: dict[str, str],
    *,
    status_code: int = 200,
    notice: str | None = None,
) -> Response[str]:
    """The new-entry form (`entry` None) or one entry's page with its actions."""
    author = None
    if entry is not None and entry.author_id is not None:
        author = (await author_names(db_session, [entry])).get(entry.author_id)
    public_url = None
    if entry is not None:
        public_url = public_path(entry.kind, entry.slug) + (
            "" if visible_to_public(entry) else "?preview=1"
        )
    context = {
        "entry": entry,
        "form": form,
        "errors": errors,
        "kinds": [kind.value for kind in Kind],
        "may_change": _may_change(request),
        "author": author,
        "public_url": public_url,
        "notice": NOTICES.get(notice or ""),
        "statuses": Status,
        "status_of": shown_status,
    }
    return render(request, FORM_TEMPLATE, context, status_code=status_code)


class ContentAdminController(Controller):
    path = "/content"
    include_in_schema = False

    @get("/", name="admin:content", guards=[roles.viewer])
    async def index(
        self,
        request: Request,
        db_session: DbSession,
        q: FromQuery[str] = "",
        kind: FromQuery[str] = "",
        status: FromQuery[str] = "",
        author: FromQuery[str] = "",
        tag: FromQuery[str] = "",
        page: FromQuery[PageNumber] = 1,
        notice: FromQuery[str | None] = None,
    ) -> Response[str]:
        """The list; htmx requests (filters, pages) get only the results block."""
        params = {"q": q, "kind": kind, "status": status, "author": author, "tag": tag}
        authors = await entry_authors(db_session)
        found, error = None, None
        try:
            try:
                author_id = UUID(author) if author else None
            except ValueError:
                raise InvalidContent("Choose an author from the list.", "author") from None
            filters = EntryFilters(
                kind=kind or None,
                status=status or None,
                author_id=author_id,
                tag=tag.strip() or None,
                q=q.strip() or None,
            )
            found = await list_entries(db_session, filters, PageRequest.of(page, PER_PAGE))
        except ContentError as exc:  # only a hand-made URL gets here
            error = exc.message
        context = {
            "page": found,
            "error": error,
            "params": params,
            "kinds": [k.value for k in Kind],
            "statuses": [s.value for s in Status],
            "authors": authors,
            "may_change": _may_change(request),
            "notice": NOTICES.get(notice or ""),
            "status_of": shown_status,
        }
        return render_list(
            request,
            "content/admin/list.html",
            context,
            params=params,
            page=found.page if found else None,
            invalid=bool(error),
        )

    @get("/new", name="admin:content_new", guards=[roles.editor])
    async def new(
        self, request: Request, db_session: DbSession, kind: FromQuery[str] = Kind.post.value
    ) -> Response[str]:
        return await _entry_page(request, db_session, None, {"kind": kind}, {})

    @post("/", name="admin:content_create", guards=[roles.editor])
    async def create(
        self, request: Request, db_session: DbSession, actor: CurrentActor, data: Form
    ) -> Response[Any]:
        try:
            entry = await save_entry(
                db_session,
                actor,
                _entry_input(data, data.get("kind", "")),
            )
        except ContentError as exc:
            errors = field_errors(exc)
            return await _entry_page(request, db_session, None, data, errors, status_code=400)
        return redirect(_edit_url(request, entry.id, "created"))

    @get("/{entry_id:uuid}", name="admin:content_edit", guards=[roles.viewer])
    async def edit(
        self,
        request: Request,
        db_session: DbSession,
        entry_id: FromPath[UUID],
        notice: FromQuery[str | None] = None,
    ) -> Response[str]:
        entry = await get_entry(db_session, entry_id)
        return await _entry_page(request, db_session, entry, _form_values(entry), {}, notice=notice)

    @post("/{entry_id:uuid}", name="admin:content_update", guards=[roles.editor])
    async def update(
        self,
        request: Request,
        db_session: DbSession,
        actor: CurrentActor,
        entry_id: FromPath[UUID],
        data: Form,
    ) -> Response[Any]:
        """Save the text; every save keeps a revision."""
        entry = await get_entry(db_session, entry_id)
        try:
            await save_entry(db_session, actor, _entry_input(data, entry.kind), entry)
        except ContentError as exc:
            errors = field_errors(exc)
            form = {**data, "kind": entry.kind}
            return await _entry_page(request, db_session, entry, form, errors, status_code=400)
        return redirect(_edit_url(request, entry_id, "saved"))

    @post("/{entry_id:uuid}/publish", name="admin:content_publish", guards=[roles.editor])
    async def publish(
        self,
        request: Request,
        db_session: DbSession,
        actor: CurrentActor,
        entry_id: FromPath[UUID],
        data: Form,
    ) -> Response[Any]:
        """Publish now, or schedule when the time given (in the site's zone) is in the future."""
        entry = await get_entry(db_session, entry_id)
        try:
            at = _publish_time(request, data)
            kept = keeps_publish_time(entry, at)
            entry = await publish_entry(db_session, actor, entry, at)
        except (ContentError, InvalidTime) as exc:
            errors = field_errors(exc)
            form = {**_form_values(entry), "published_at": data.get("published_at", "")}
            return await _entry_page(request, db_session, entry, form, errors, status_code=400)
        return redirect(_edit_url(request, entry_id, "kept" if kept else entry.status))

    @post("/{entry_id:uuid}/unpublish", name="admin:content_unpublish", guards=[roles.editor])
    async def unpublish(
        self, request: Request, db_session: DbSession, actor: CurrentActor, entry_id: FromPath[UUID]
    ) -> Response[bytes]:
        entry = await get_entry(db_session, entry_id)
        await unpublish_entry(db_session, actor, entry)
        return redirect(_edit_url(request, entry_id, "unpublished"))

    @post("/{entry_id:uuid}/archive", name="admin:content_archive", guards=[roles.editor])
    async def archive(
        self, request: Request, db_session: DbSession, actor: CurrentActor, entry_id: FromPath[UUID]
    ) -> Response[bytes]:
        entry = await get_entry(db_session, entry_id)
        await archive_entry(db_session, actor, entry)
        return redirect(_edit_url(request, entry_id, "archived"))

    @get("/{entry_id:uuid}/delete", name="admin:content_delete_confirm", guards=[roles.editor])
    async def delete_confirm(
        self, request: Request, db_session: DbSession, entry_id: FromPath[UUID]
    ) -> Response[str]:
        entry = await get_entry(db_session, entry_id)
        return render(request, "content/admin/confirm_delete.html", {"entry": entry})

    @post("/{entry_id:uuid}/delete", name="admin:content_delete", guards=[roles.editor])
    async def delete(
        self, request: Request, db_session: DbSession, actor: CurrentActor, entry_id: FromPath[UUID]
    ) -> Response[bytes]:
        entry = await get_entry(db_session, entry_id)
        await delete_entry(db_session, actor, entry)
        return redirect(request.app.route_reverse("admin:content") + "?notice=deleted")

    @get("/{entry_id:uuid}/revisions", name="admin:content_revisions", guards=[roles.viewer])
    async def revisions(
        self, request: Request, db_session: DbSession, entry_id: FromPath[UUID]
    ) -> Response[str]:
        entry = await get_entry(db_session, entry_id)
        context = {"entry": entry, "revisions": await list_revisions(db_session, entry.id)}
        return render(request, "content/admin/revisions.html", context)

    @get(
        "/{entry_id:uuid}/revisions/{revision_id:uuid}",
        name="admin:content_revision",
        guards=[roles.viewer],
    )
    async def revision(
        self,
        request: Request,
        db_session: DbSession,
        entry_id: FromPath[UUID],
        revision_id: FromPath[UUID],
    ) -> Response[str]:
        """A revision compared with the current text, line by line."""
        entry = await get_entry(db_session, entry_id)
        revision = await get_revision(db_session, entry, revision_id)
        context = {
            "entry": entry,
            "revision": revision,
            "rows": diff_lines(revision.body_markdown, entry.body_markdown),
            "may_change": _may_change(request),
        }
        return render(request, "content/admin/revision.html", context)

    @post(
        "/{entry_id:uuid}/revisions/{revision_id:uuid}/restore",
        name="admin:content_restore",
        guards=[roles.editor],
    )
    async def restore(
        self,
        request: Request,
        db_session: DbSession,
        actor: CurrentActor,
        entry_id: FromPath[UUID],
        revision_id: FromPath[UUID],
    ) -> Response[bytes]:
        entry = await get_entry(db_session, entry_id)
        await restore_revision(db_session, actor, entry, revision_id)
        return redirect(_edit_url(request, entry_id, "restored"))

    @post("/preview", name="admin:content_preview", guards=[roles.editor], status_code=200)
    async def preview(self, data: Form) -> Response[str]:
        """The editor's live preview: the Markdown rendered and sanitized as a save would."""
        html = render_markdown(data.get("body_markdown", ""))
        return Response(html, media_type=MediaType.HTML, headers={"Vary": "HX-Request"})
