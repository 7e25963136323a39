"""Route groups and template folders a plugin adds and removes while Keel runs, seen
through HTTP on a running app (both legs): app/core/routing.py, app/core/templating.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from litestar import Litestar, Request, Router, get
from litestar.exceptions import TemplateNotFoundException
from litestar.response import Response

from app.accounts.guards import roles
from app.core.registry import RegistryClash
from app.core.routing import RouteGroup
from app.core.templating import TEMPLATE_FOLDERS, TemplateFolder, render

PLUGIN = "hello"


def hello_group(path: str) -> RouteGroup:
    def build() -> Router:
        @get("/", name="hello:page", guards=[roles.public])
        async def page(request: Request) -> Response[str]:
            """The plugin's page, rendered from the plugin's template folder."""
            return render(request, "hello/page.html", {"greeting": "Hello from a plugin"})

        return Router(path=path, route_handlers=[page])

    return RouteGroup(PLUGIN, build)


@pytest.fixture
def hello_templates(tmp_path: Path) -> Iterator[Callable[[], None]]:
    folder = tmp_path / "templates"
    (folder / "hello").mkdir(parents=True)
    (folder / "hello" / "page.html").write_text(
        "<a href=\"{{ url_for('hello:page') }}\">{{ greeting }}</a>"
    )
    add = lambda: TEMPLATE_FOLDERS.add(PLUGIN, TemplateFolder(PLUGIN, folder))  # noqa: E731
    add()
    yield add
    TEMPLATE_FOLDERS.remove(PLUGIN)


async def test_a_route_group_answers_once_added_and_is_a_404_once_removed(
    app: Litestar, client: httpx.AsyncClient, hello_templates: Callable[[], None]
) -> None:
    groups = app.state.routing.groups
    assert (await client.get("/hello")).status_code == 404  # (remembered by the router's cache)
    schema = (await client.get("/schema/openapi.json")).json()

    groups.add(PLUGIN, hello_group("/hello"))
    page = await client.get("/hello")
    assert page.status_code == 200, page.text
    assert page.text == '<a href="/hello">Hello from a plugin</a>'
    assert "/hello" in (await client.get("/schema/openapi.json")).json()["paths"]

    assert groups.remove(PLUGIN)
    assert (await client.get("/hello")).status_code == 404
    assert (await client.get("/schema/openapi.json")).json()["paths"] == schema["paths"]
    assert (await client.get("/api/v1/site")).status_code == 200  # Keel's routes stay

    groups.add(PLUGIN, hello_group("/greetings"))  # the templates' remembered URL follows
    assert (await client.get("/hello")).status_code == 404
    moved = await client.get("/greetings")
    assert moved.status_code == 200 and moved.text == '<a href="/greetings">Hello from a plugin</a>'


async def test_a_route_group_serving_a_path_keel_serves_is_refused(
    app: Litestar, client: httpx.AsyncClient
) -> None:
    groups = app.state.routing.groups
    generation = app.state.routing.generation
    with pytest.raises(RegistryClash, match="route group 'hello' serves /api/v1/site"):
        groups.add(PLUGIN, hello_group("/api/v1/site"))
    assert PLUGIN not in groups
    site = await client.get("/api/v1/site")
    assert site.status_code == 200 and site.json()["title"] == "Keel"
    assert app.state.routing.generation > generation  # rebuilt as it was


async def test_a_template_folder_removed_while_keel_runs_is_no_longer_read(
    app: Litestar, client: httpx.AsyncClient, hello_templates: Callable[[], None]
) -> None:
    app.state.routing.groups.add(PLUGIN, hello_group("/hello"))
    assert (await client.get("/hello")).status_code == 200  # compiled and kept
    TEMPLATE_FOLDERS.remove(PLUGIN)
    with pytest.raises(TemplateNotFoundException):
        app.template_engine.get_template("hello/page.html")
    hello_templates()
    assert app.template_engine.get_template("hello/page.html") is not None
