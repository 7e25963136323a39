"""The guestbook's tests run on Keel's test kit (keel.testing): each test gets `site`, a
Keel with the guestbook installed and active, on each storage leg, and `guestbook`, the
steps the tests take again and again."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from keel.testing import PluginSite, site_fixture

ENTRIES = "/api/plugins/guestbook/entries"
PAGE = "/p/guestbook/"
MODERATION = "/admin/plugins/guestbook/"

site = site_fixture(Path(__file__).parents[1])


class Guestbook:
    """What the tests do over and over, as visitors and editors do it."""

    def __init__(self, site: PluginSite) -> None:
        self.site = site

    async def listed(self) -> list[str]:
        """The names on the public list (approved entries), newest first."""
        async with self.site.client() as anyone:
            answer = await anyone.get(ENTRIES)
        assert answer.status_code == 200, answer.text
        return [item["name"] for item in answer.json()["items"]]

    async def sign(
        self, client: httpx.AsyncClient, name: str, message: str = "Lovely site!"
    ) -> int:
        """Sign through the API as `client`; the new entry's id."""
        answer = await client.post(ENTRIES, json={"name": name, "message": message})
        assert answer.status_code == 201, answer.text
        return int(answer.json()["id"])

    async def pending_ids(self) -> list[int]:
        """The ids of the entries waiting for approval, read from the plugin's table."""
        table = self.site.module("guestbook.entries").entries_table(self.site.ctx)
        async with self.site.ctx.session() as session:
            rows = await session.execute(table.select().where(table.c.approved.is_(False)))
            return [row.id for row in rows]


@pytest.fixture
def guestbook(site: PluginSite) -> Guestbook:
    return Guestbook(site)
