"""`hello`: an API route, a page with its own template, an admin page, a slow route and
one that fails, and dashboard widgets (one of each: fine, slow, failing, plain text); it
imports nothing of Keel but `keel.plugin`."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from keel.plugin import (
    Context,
    Job,
    JobContext,
    Plugin,
    PluginContext,
    Redirect,
    Request,
    Response,
    Schedule,
    Widget,
    get,
    post,
    public,
    requires_admin,
    requires_editor,
)

from .greetings import greeting_for


@get("/greeting", guards=[public])
async def greeting(ctx: Context) -> dict[str, str]:
    return {"greeting": greeting_for(ctx.name), "version": ctx.version}


@get("/slow", guards=[public])
async def slow() -> dict[str, str]:
    await asyncio.sleep(5)
    return {"slept": "yes"}


@get("/fail", guards=[public])
async def fail() -> dict[str, str]:
    raise RuntimeError("the hello plugin fails on purpose")


@get("/editors", guards=[requires_editor])
async def editors_only() -> dict[str, str]:
    return {"for": "editors"}


@get("/", guards=[public])
async def home(request: Request, ctx: Context) -> Response[str]:
    return ctx.render(request, "hello/home.html", {"greeting": greeting_for("visitor")})


@get("/slow", guards=[public])
async def slow_page() -> str:
    await asyncio.sleep(5)
    return "never"


@get("/fail", guards=[public])
async def failing_page() -> str:
    raise RuntimeError("the hello page fails on purpose")


@post("/sign", guards=[public])
async def sign(request: Request) -> Redirect:
    form = await request.form()
    return Redirect(f"/p/hello/?name={form.get('name', '')}", status_code=303)


@get("/", guards=[requires_admin])
async def admin_home(request: Request, ctx: Context) -> Response[str]:
    return ctx.render(request, "hello/admin.html", {"settings": ctx.settings})


async def count_greetings(ctx: PluginContext, job: JobContext) -> dict[str, str]:
    """Counts greetings (a job of the plugin's own)."""
    return {"counted": ctx.name, "by": str(job.payload.get("by", ""))}


async def greeting_widget(ctx: PluginContext, request: Request) -> Response[str]:
    return ctx.render(request, "hello/widget.html", {"greeting": greeting_for("dashboard")})


async def slow_widget(ctx: PluginContext, request: Request) -> str:
    await asyncio.sleep(5)
    return "never"


async def failing_widget(ctx: PluginContext, request: Request) -> str:
    raise RuntimeError("the hello widget fails on purpose")


async def text_widget(ctx: PluginContext, request: Request) -> str:
    return "<b>plain text</b>"


class Hello(Plugin):
    api_routes = [greeting, slow, fail, editors_only]
    pages = [home, slow_page, failing_page, sign]
    admin_pages = [admin_home]
    admin_menu_label = "Hello"
    jobs = [Job("hello.count", count_greetings)]
    schedules = [Schedule("hello.hourly", "hello.count", every=timedelta(hours=1))]
    widgets = [
        Widget("Greeting", greeting_widget),
        Widget("Slow", slow_widget),
        Widget("Failing", failing_widget),
        Widget("Text", text_widget),
    ]

    async def on_activate(self, ctx: PluginContext) -> None:
        ctx.log.info("hello activated")

    async def on_install(self, ctx: PluginContext) -> None:
        await asyncio.sleep(5)  # past its time limit: the host stops it

    async def on_uninstall(self, ctx: PluginContext) -> None:
        raise RuntimeError("cannot say goodbye")
