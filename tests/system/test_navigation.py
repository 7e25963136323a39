"""The admin menu (app/system/services/navigation.py) as each role sees it, with a plugin's section
added and removed while Keel runs (both legs)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from litestar import Litestar, Router, get

from app.accounts.guards import roles
from app.accounts.models import Role, User
from app.core.routing import RouteGroup
from app.system.services.navigation import ADMIN_MENU, AdminLink
from tests.conftest import signed_in

PLUGIN = "hello"
KEEL_FOR_EVERYONE = ["Dashboard", "Analytics", "Content", "Media", "Users", "Jobs"]
KEEL_FOR_ADMINS = ["API keys", "Audit log", "Outbox", "Plugins", "Settings", "System"]


def hello_admin() -> Router:
    @get("/", name="hello:admin", guards=[roles.editor])
    async def page() -> str:
        """The plugin's admin page."""
        return "hello"

    return Router(path="/admin/hello", route_handlers=[page])


async def menu(app: Litestar, user: User) -> list[str]:
    async with signed_in(app, user) as browser:
        page = await browser.get("/admin")
    assert page.status_code == 200, page.text
    nav = page.text.split('<nav aria-label="Admin">')[1].split("</nav>")[0]
    return re.findall(r">([^<]+)</a>", nav)[: -3 if "Notifications" in nav else -1]


@pytest.fixture
def hello_link() -> Iterator[AdminLink]:
    link = ADMIN_MENU.add(PLUGIN, AdminLink("hello", "Hello", "hello:admin", Role.editor))
    yield link
    ADMIN_MENU.remove(PLUGIN)


async def test_each_role_sees_keels_sections_as_before(
    app: Litestar, accounts: dict[str, User]
) -> None:
    assert await menu(app, accounts["viewer"]) == KEEL_FOR_EVERYONE
    assert await menu(app, accounts["editor"]) == KEEL_FOR_EVERYONE
    assert await menu(app, accounts["admin"]) == KEEL_FOR_EVERYONE + KEEL_FOR_ADMINS


async def test_a_section_added_while_keel_runs_shows_for_its_role_until_removed(
    app: Litestar, accounts: dict[str, User], hello_link: AdminLink
) -> None:
    app.state.routing.groups.add(PLUGIN, RouteGroup(PLUGIN, hello_admin))
    assert await menu(app, accounts["editor"]) == [*KEEL_FOR_EVERYONE, "Hello"]
    assert await menu(app, accounts["viewer"]) == KEEL_FOR_EVERYONE
    async with signed_in(app, accounts["editor"]) as browser:
        page = await browser.get("/admin")
    assert '<a href="/admin/hello" >Hello</a>' in page.text

    app.state.routing.groups.remove(PLUGIN)  # its pages gone first: the menu leaves it out
    assert await menu(app, accounts["editor"]) == KEEL_FOR_EVERYONE
    app.state.routing.groups.add(PLUGIN, RouteGroup(PLUGIN, hello_admin))
    ADMIN_MENU.remove(PLUGIN)
    assert await menu(app, accounts["editor"]) == KEEL_FOR_EVERYONE
