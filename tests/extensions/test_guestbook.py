"""The guestbook shipped with Keel (plugins/guestbook) installed, activated and uninstalled
through the admin API as an admin would (both legs). What the guestbook does is tested by
its own tests, plugins/guestbook/tests/, on Keel's test kit."""

from __future__ import annotations

import shutil
from pathlib import Path

from app.accounts.models import User
from app.asgi import create_app
from app.extensions.services.host import PluginHost
from app.settings import ROOT, Settings
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
