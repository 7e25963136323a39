"""`keel plugins new NAME`: a working plugin to start from, in PLUGINS_DIR/NAME. It has one
of each thing a plugin usually needs (an API route, a public page with its template and
stylesheet, an admin page, a table with its migration, a setting, an install hook), and
imports nothing of Keel but `keel.plugin`; its tests (`tests/`) run on Keel's test kit,
`keel.testing`."""

from __future__ import annotations

from pathlib import Path

from app.core.errors import Conflict
from app.extensions.services.isolation import valid_plugin_name
from app.extensions.services.manifest import read_manifest


class PluginExists(Conflict):
    pass


def scaffold(plugins_dir: Path, name: str) -> Path:
    """Write the plugin's files; refuses a name a manifest would refuse, or a folder that
    exists. Returns the folder."""
    valid_plugin_name(name)
    folder = plugins_dir / name
    if folder.exists():
        raise PluginExists(f"{folder} exists already.")
    title = name.replace("_", " ").title()
    class_name = title.replace(" ", "")
    files = {
        "plugin.toml": MANIFEST,
        f"{name}/__init__.py": "",
        f"{name}/plugin.py": PLUGIN,
        "migrations/0001_messages.py": MIGRATION,
        f"templates/{name}/index.html": PAGE,
        f"templates/{name}/admin.html": ADMIN,
        f"static/{name}.css": STYLE,
        "tests/conftest.py": CONFTEST,
        f"tests/test_{name}.py": TESTS,
    }
    for relative, text in files.items():
        path = folder / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        text = text.replace("__title_class__", class_name).replace("__title__", title)
        path.write_text(text.replace("__name__", name))
    read_manifest(folder / "plugin.toml")  # what it wrote is a plugin Keel accepts
    return folder


MANIFEST = """[plugin]
name = "__name__"
version = "0.1.0"
display_name = "__title__"
description = "A new plugin: say what it does here."
author = ""
keel = ">=0.1,<1"
entry_point = "__name__.plugin:__title_class__Plugin"
capabilities = ["api", "pages", "admin", "storage", "settings"]
time_limit = 5

[settings.properties.greeting]
type = "string"
title = "Greeting"
description = "Shown at the top of the plugin's page."
maxLength = 100
default = "Hello from __title__"
"""

PLUGIN = '''"""__title__: a Keel plugin. It imports nothing of Keel but `keel.plugin` (see
docs/plugins.md)."""

from __future__ import annotations

from sqlalchemy import Column, Integer, String, insert, select

from keel.plugin import (
    Context,
    JSONBody,
    Plugin,
    PluginContext,
    Request,
    Response,
    get,
    post,
    public,
    requires_admin,
)


def messages(ctx: PluginContext):  # type: ignore[no-untyped-def]
    """The plugin's table (made by migrations/0001_messages.py)."""
    return ctx.storage.table(
        "messages", Column("id", Integer, primary_key=True), Column("text", String(200))
    )


async def recent(ctx: PluginContext) -> list[str]:
    table = messages(ctx)
    async with ctx.session() as session:
        rows = await session.execute(select(table.c.text).order_by(table.c.id.desc()).limit(20))
        return list(rows.scalars())


@get("/messages", guards=[public])
async def list_messages(ctx: Context) -> dict[str, object]:
    """GET /api/plugins/__name__/messages"""
    return {"items": await recent(ctx)}


@post("/messages", guards=[requires_admin], status_code=201)
async def add_message(ctx: Context, data: JSONBody[dict[str, str]]) -> dict[str, str]:
    """POST /api/plugins/__name__/messages {"text": "..."} (admins)"""
    text = str(data.get("text", ""))[:200]
    async with ctx.session() as session:
        await session.execute(insert(messages(ctx)).values(text=text))
    return {"text": text}


@get("/", guards=[public])
async def page(request: Request, ctx: Context) -> Response[str]:
    """/p/__name__/"""
    context = {"greeting": ctx.settings.get("greeting"), "messages": await recent(ctx)}
    return ctx.render(request, "__name__/index.html", context)


@get("/", guards=[requires_admin])
async def admin_page(request: Request, ctx: Context) -> Response[str]:
    """/admin/plugins/__name__/"""
    return ctx.render(request, "__name__/admin.html", {"messages": await recent(ctx)})


class __title_class__Plugin(Plugin):
    api_routes = [list_messages, add_message]
    pages = [page]
    admin_pages = [admin_page]
    admin_menu_label = "__title__"

    async def on_install(self, ctx: PluginContext) -> None:
        async with ctx.session() as session:
            await session.execute(insert(messages(ctx)).values(text="Installed."))
'''

MIGRATION = '''"""The plugin's first table."""

from sqlalchemy import Column, Integer, String


def upgrade(connection, storage):  # type: ignore[no-untyped-def]
    storage.table("messages", Column("id", Integer, primary_key=True), Column("text", String(200)))
    storage.metadata.create_all(connection)
'''

PAGE = """{% extends "layouts/public.html" %}
{% block title %}__title__{% endblock %}
{% block content %}
<link rel="stylesheet" href="{{ plugin_static('__name__.css') }}">
<h1 class="__name__">{{ greeting }}</h1>
{% if messages %}
<ul>{% for text in messages %}<li>{{ text }}</li>{% endfor %}</ul>
{% else %}
<p>No messages yet.</p>
{% endif %}
{% endblock %}
"""

ADMIN = """{% extends "layouts/admin.html" %}
{% block title %}__title__ · Keel admin{% endblock %}
{% block content %}
<header class="page-header"><h1>__title__</h1></header>
<section class="panel">
  <p>{{ messages | length }} message{{ "" if messages | length == 1 else "s" }}.</p>
</section>
{% endblock %}
"""

STYLE = """.__name__ { color: #1d4ed8; }
"""

CONFTEST = '''"""Each test gets `site`: a Keel with this plugin installed and active, on each
storage leg (keel.testing; docs/plugins.md, "Testing your plugin")."""

from pathlib import Path

from keel.testing import site_fixture

site = site_fixture(Path(__file__).parents[1])
'''

TESTS = '''"""__title__'s tests: run them with `python -m pytest plugins/__name__/tests` from Keel's
folder (`make test` runs them too)."""

from keel.testing import PluginSite, assert_problem

MESSAGES = "/api/plugins/__name__/messages"


async def test_the_page_greets_visitors_and_lists_the_messages(site: PluginSite) -> None:
    async with site.client() as visitor:
        page = await visitor.get("/p/__name__/")
    assert page.status_code == 200
    assert "Hello from __title__" in page.text and "<li>Installed.</li>" in page.text


async def test_admins_add_messages_and_visitors_may_not(site: PluginSite) -> None:
    async with site.client() as visitor:
        assert_problem(await visitor.post(MESSAGES, json={"text": "Hi"}), 401)
    async with site.client("admin", token=True) as admin:
        added = await admin.post(MESSAGES, json={"text": "Hi"})
    assert added.status_code == 201
    async with site.client() as visitor:
        assert (await visitor.get(MESSAGES)).json() == {"items": ["Hi", "Installed."]}


async def test_the_greeting_is_a_setting(site: PluginSite) -> None:
    await site.configure(greeting="Welcome!")
    async with site.client() as visitor:
        assert "Welcome!" in (await visitor.get("/p/__name__/")).text


async def test_the_admin_page_is_for_admins(site: PluginSite) -> None:
    async with site.client("editor") as editor:
        assert (await editor.get("/admin/plugins/__name__/")).status_code == 403
    async with site.client("admin") as admin:
        page = await admin.get("/admin/plugins/__name__/")
    assert page.status_code == 200 and "1 message." in page.text
'''
