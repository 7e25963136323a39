"""The guestbook's pages: the public page (approved entries and the form to sign) under
/p/guestbook/, and the moderation page under /admin/plugins/guestbook/."""

from __future__ import annotations

from typing import Any

from keel.plugin import (
    Context,
    FromPath,
    FromQuery,
    InvalidFields,
    PageNumber,
    PageRequest,
    Redirect,
    Request,
    Response,
    TooManyRequests,
    get,
    post,
    public,
    requires_editor,
)

from .entries import (
    RATE_WINDOW_SECONDS,
    approve_entry,
    delete_entry,
    entries_page,
    sign_guestbook,
)

NOTICES = {
    "pending": "Thank you for signing! Your entry shows here once an editor approves it.",
    "approved": "Thank you for signing!",
}
ADMIN_NOTICES = {"approved": "Entry approved: visitors see it now.", "deleted": "Entry deleted."}


async def _public_page(
    request: Request[Any, Any, Any],
    ctx: Context,
    *,
    page: int = 1,
    form: dict[str, str] | None = None,
    errors: dict[str, str] | None = None,
    status_code: int = 200,
) -> Response[str]:
    context = {
        "entries": await entries_page(ctx, approved=True, page=PageRequest.of(page, None)),
        "form": form or {},
        "errors": errors or {},
        "notice": NOTICES.get(request.query_params.get("signed", "")),
        "needs_approval": ctx.settings.get("needs_approval", True),
        "params": {},
    }
    return ctx.render(request, "guestbook/page.html", context, status_code=status_code)


@get("/", guards=[public], name="guestbook:page")
async def guestbook_page(
    request: Request[Any, Any, Any], ctx: Context, page: FromQuery[PageNumber] = 1
) -> Response[str]:
    """/p/guestbook/: the approved entries, newest first, and the form to sign."""
    return await _public_page(request, ctx, page=page)


@post("/", guards=[public], name="guestbook:sign")
async def sign(request: Request[Any, Any, Any], ctx: Context) -> Response[Any]:
    """The form: a redirect back to the page on success; else the page again with each
    problem beside its field and what the visitor wrote kept."""
    posted = await request.form()
    form = {field: str(posted.get(field) or "") for field in ("name", "message")}
    try:
        entry = await sign_guestbook(ctx, request, form)
    except InvalidFields as exc:
        return await _public_page(request, ctx, form=form, errors=exc.errors, status_code=400)
    except TooManyRequests as exc:
        minutes = max(round(exc.retry_after / 60), 1)
        per_hour = ctx.settings.get("entries_per_hour")
        window = RATE_WINDOW_SECONDS // 60
        message = (
            f"You have signed {per_hour} times within {window} minutes already. "
            f"Please try again in about {minutes} minute{'' if minutes == 1 else 's'}."
        )
        errors = {"form": message}
        return await _public_page(request, ctx, form=form, errors=errors, status_code=429)
    return Redirect(f"/p/{ctx.name}/?signed={entry.status}", status_code=303)


# -- moderation ------------------------------------------------------------------------------


@get("/", guards=[requires_editor], name="guestbook:moderate")
async def moderation_page(
    request: Request[Any, Any, Any], ctx: Context, page: FromQuery[PageNumber] = 1
) -> Response[str]:
    """/admin/plugins/guestbook/: the entries waiting for approval (oldest first), each
    with approve and delete buttons, and the latest approved ones."""
    context = {
        "pending": await entries_page(ctx, approved=False, page=PageRequest.of(page, None)),
        "latest": await entries_page(ctx, approved=True, page=PageRequest(1, 10)),
        "notice": ADMIN_NOTICES.get(request.query_params.get("notice", "")),
        "needs_approval": ctx.settings.get("needs_approval", True),
        "plugin": ctx.name,
        "params": {},
    }
    return ctx.render(request, "guestbook/moderate.html", context)


@post("/entries/{entry_id:int}/approve", guards=[requires_editor], name="guestbook:approve")
async def approve(ctx: Context, entry_id: FromPath[int]) -> Redirect:
    await approve_entry(ctx, entry_id)
    return Redirect(f"/admin/plugins/{ctx.name}/?notice=approved", status_code=303)


@post("/entries/{entry_id:int}/delete", guards=[requires_editor], name="guestbook:delete")
async def remove(ctx: Context, entry_id: FromPath[int]) -> Redirect:
    await delete_entry(ctx, entry_id)
    return Redirect(f"/admin/plugins/{ctx.name}/?notice=deleted", status_code=303)


PAGES = [guestbook_page, sign]
ADMIN_PAGES = [moderation_page, approve, remove]
