"""The guestbook shipped with Keel (plugins/guestbook) installed, activated and uninstalled
through the admin API as an admin would, and Keel's context around its page (both legs).
What the guestbook does is tested by its own tests, plugins/guestbook/tests/, on Keel's
test kit."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.accounts.models import User
from app.asgi import create_app
from app.extensions.services.host import PluginHost
from app.settings import ROOT, Settings
from keel.testing import PluginSite, plugin_site
from tests.accounts.test_users_api import api_as
from tests.conftest import client_for, with_app_settings

GUESTBOOK = ROOT / "plugins" / "guestbook"
ENTRIES = "/api/plugins/guestbook/entries"


async def test_an_admin_installs_the_guestbook_and_uninstalling_takes_its_entries(
    settings: Settings, accounts: dict[str, User], tmp_path: Path
) -> None:
    plugins_dir = tmp_path / "plugins"
    shutil.copytree(GUESTBOOK, plugins_dir / "guestbook")
    app = create_app(with_app_settings(settings, plugins_dir=plugins_dir))
    host = app.state.runtime.service(PluginHost)
    try:
        async with api_as(app, accounts["admin"]) as admin:
            installed = await admin.post("/api/v1/plugins/guestbook/install")
            assert installed.status_code == 200, installed.text
            activated = await admin.post("/api/v1/plugins/guestbook/activate")
            assert activated.json()["status"] == "active", activated.text
            await host.sync()
            async with client_for(app) as visitor:
                signed = await visitor.post(ENTRIES, json={"name": "Ada", "message": "Hi"})
                assert signed.status_code == 201, signed.text
            gone = await admin.post("/api/v1/plugins/guestbook/uninstall", json={"confirm": True})
            assert gone.status_code == 204, gone.text
            await host.sync()
            async with client_for(app) as visitor:
                assert (await visitor.get(ENTRIES)).status_code == 404
            await admin.post("/api/v1/plugins/guestbook/install")
            await admin.post("/api/v1/plugins/guestbook/activate")
            await host.sync()
            async with client_for(app) as visitor:
                assert (await visitor.get(ENTRIES)).json()["total"] == 0  # its data went
            await admin.post("/api/v1/plugins/guestbook/uninstall", json={"confirm": True})
    finally:
        await host.stop()
        await app.state.runtime.close()


@pytest.fixture
async def site(settings: Settings, tmp_path: Path) -> AsyncIterator[PluginSite]:
    """The guestbook installed and active on the test kit (with its own accounts)."""
    async with plugin_site(GUESTBOOK, settings, tmp_path / "site") as made:
        yield made


async def test_the_page_shows_the_site_s_title_and_menu_as_keel_s_own_pages_do(
    site: PluginSite,
) -> None:
    async with site.client("admin", token=True) as admin:
        titled = await admin.put("/api/v1/settings/site_title", json={"value": "Harbour Notes"})
        assert titled.status_code == 200, titled.text
        about = await admin.post(
            "/api/v1/content", json={"title": "About us", "kind": "page", "nav_order": 1}
        )
        assert about.status_code == 201, about.text
        published = await admin.post(f"/api/v1/content/{about.json()['id']}/publish", json={})
        assert published.status_code == 200, published.text
    async with site.client() as visitor:
        page = await visitor.get("/p/guestbook/")
    assert page.status_code == 200, page.text
    header = page.text.split('class="site-header"', 1)[1].split("</header>", 1)[0]
    assert "Harbour Notes" in header and 'href="/about-us"' in header
