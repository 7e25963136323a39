"""The link check's admin page (/admin/plugins/linkcheck/), its Check now button, its
dashboard widget and its API (/api/plugins/linkcheck/report)."""

from __future__ import annotations

from typing import Any

from keel.plugin import (
    Context,
    FromQuery,
    PageNumber,
    PageRequest,
    PluginContext,
    Redirect,
    Request,
    Response,
    get,
    post,
    requires_admin,
    requires_editor,
    requires_viewer,
)

from .report import PER_PAGE, broken_links, summary

CHECK_JOB = "linkcheck.check"
NOTICES = {"queued": "A check is queued: it starts as soon as a worker is free."}


@get("/", guards=[requires_viewer], name="linkcheck:report")
async def report_page(
    request: Request[Any, Any, Any], ctx: Context, page: FromQuery[PageNumber] = 1
) -> Response[str]:
    """The broken links with the entries that link to them, the last run and its counts."""
    user = request.scope.get("user")
    context: dict[str, Any] = {
        "summary": await summary(ctx),
        "broken": await broken_links(ctx, PageRequest.of(page, PER_PAGE)),
        "notice": NOTICES.get(request.query_params.get("notice", "")),
        "may_check": user is not None and user.role.name in ("editor", "admin"),
        "interval_minutes": ctx.settings.get("interval_minutes"),
        "params": {},
    }
    return ctx.render(request, "linkcheck/report.html", context)


@post("/check", guards=[requires_editor], name="linkcheck:check")
async def check_now(request: Request[Any, Any, Any], ctx: Context) -> Redirect:
    """Check now: a run at once, whatever the interval (queued for the caller, audited)."""
    await ctx.submit_job(request, CHECK_JOB, {"force": True})
    return Redirect(f"/admin/plugins/{ctx.name}/?notice=queued", status_code=303)


@get("/report", guards=[requires_admin], name="linkcheck:api_report")
async def report_api(ctx: Context, page: FromQuery[PageNumber] = 1) -> dict[str, Any]:
    """The last run, the counts and one page of broken links (`?page=`, 20 a page)."""
    found = await summary(ctx)
    broken = await broken_links(ctx, PageRequest.of(page, PER_PAGE))
    run = found.last_run
    return {
        "last_run": None
        if run is None
        else {
            "started_at": run.started_at.isoformat(),
            "finished_at": None if run.finished_at is None else run.finished_at.isoformat(),
            "entries": run.entries,
            "checked": run.checked,
        },
        "links": found.links,
        "checked": found.checked,
        "broken": found.broken,
        "items": [link.as_json() for link in broken.items],
        "total": broken.total,
        "page": broken.page,
        "per_page": PER_PAGE,
    }


async def broken_links_widget(ctx: PluginContext, request: Request[Any, Any, Any]) -> Any:
    """The dashboard's panel: how many links are broken, and when the last run was."""
    return ctx.render(request, "linkcheck/widget.html", {"summary": await summary(ctx)})


ADMIN_PAGES = [report_page, check_now]
API_ROUTES = [report_api]
