"""The guestbook's JSON API under /api/plugins/guestbook/: approved entries for anyone,
a new entry from anyone (pending until approved), approval and removal for editors."""

from __future__ import annotations

from typing import Any

from keel.plugin import (
    Context,
    FromPath,
    FromQuery,
    JSONBody,
    PageNumber,
    PageRequest,
    PerPage,
    Request,
    delete,
    get,
    post,
    public,
    requires_editor,
)

from .entries import approve_entry, delete_entry, entries_page, sign_guestbook


@get("/entries", guards=[public])
async def list_entries(
    ctx: Context, page: FromQuery[PageNumber] = 1, per_page: FromQuery[PerPage] = 20
) -> dict[str, Any]:
    """GET /entries?page=&per_page=: approved entries, newest first."""
    found = await entries_page(ctx, approved=True, page=PageRequest.of(page, per_page))
    return found.envelope([entry.as_json() for entry in found.items])


@post("/entries", guards=[public], status_code=201)
async def add_entry(
    request: Request[Any, Any, Any], ctx: Context, data: JSONBody[dict[str, Any]]
) -> dict[str, Any]:
    """POST /entries {"name", "message"}: 201 with the entry (its `id`, `status` pending
    unless approval is off); 422 naming each field that is blank or too long; 429 when
    the caller's address signed too often."""
    return (await sign_guestbook(ctx, request, data)).as_json()


@post("/entries/{entry_id:int}/approve", guards=[requires_editor], status_code=200)
async def approve(ctx: Context, entry_id: FromPath[int]) -> dict[str, Any]:
    """POST /entries/{id}/approve (editors and admins): the entry, now shown; 404 if none."""
    return (await approve_entry(ctx, entry_id)).as_json()


@delete("/entries/{entry_id:int}", guards=[requires_editor])
async def remove(ctx: Context, entry_id: FromPath[int]) -> None:
    """DELETE /entries/{id} (editors and admins): 204; 404 if there is no such entry."""
    await delete_entry(ctx, entry_id)


ROUTES = [list_entries, add_entry, approve, remove]
