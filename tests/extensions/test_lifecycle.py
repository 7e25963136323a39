"""A plugin's life through the admin API, the admin pages and the CLI:
app/extensions/services/lifecycle.py, app/extensions/api.py, app/extensions/pages.py and
`keel plugins` (both legs; the PostgreSQL boundary is in test_isolation.py)."""

from __future__ import annotations

import io
import shutil
import zipfile
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from litestar import Litestar
from sqlalchemy import select

from app.accounts.models import AuditEntry, User
from app.asgi import create_app
from app.extensions.models import PluginRecord
from app.extensions.services import archive, signing
from app.extensions.services.host import PluginHost
from app.settings import Settings
from tests.accounts.test_users_api import api_as, assert_problem
from tests.conftest import run_keel, signed_in, with_app_settings

SHIPPED = Path(__file__).parent / "plugins"


@pytest.fixture
def plugins_dir(tmp_path: Path) -> Path:
    """A PLUGINS_DIR of this test's own, holding a copy of the test plugins (a test may
    change their files)."""
    folder = tmp_path / "plugins"
    shutil.copytree(SHIPPED, folder)
    return folder


@pytest.fixture
async def site(
    settings: Settings, accounts: dict[str, User], plugins_dir: Path
) -> AsyncIterator[Litestar]:
    """The app over `plugins_dir` (without its lifespan: tests sync the plugin host)."""
    app = create_app(with_app_settings(settings, plugins_dir=plugins_dir))
    yield app
    await app.state.runtime.service(PluginHost).stop()
    await app.state.runtime.close()


async def synced(app: Litestar) -> None:
    await app.state.runtime.service(PluginHost).sync()


async def audit_actions(app: Litestar) -> list[str]:
    async with app.state.sessionmaker() as session:
        query = select(AuditEntry.action).where(AuditEntry.action.like("plugin.%"))
        return list((await session.scalars(query.order_by(AuditEntry.created_at))).all())


async def row(app: Litestar, name: str) -> PluginRecord | None:
    async with app.state.sessionmaker() as session:
        return await session.get(PluginRecord, name)


async def test_install_activate_deactivate_and_uninstall_through_the_api(
    site: Litestar, accounts: dict
) -> None:
    async with api_as(site, accounts["admin"]) as admin:
        listed = (await admin.get("/api/v1/plugins")).json()
        notes = next(item for item in listed["items"] if item["name"] == "notes")
        assert notes["status"] == "available" and notes["version"] == "1.0.0"

        installed = await admin.post("/api/v1/plugins/notes/install")
        assert installed.status_code == 200, installed.text
        assert installed.json()["status"] == "installed"
        assert (await admin.get("/api/plugins/notes/notes")).status_code == 404

        activated = await admin.post("/api/v1/plugins/notes/activate")
        assert activated.json()["status"] == "active"
        await synced(site)
        listed_notes = await admin.get("/api/plugins/notes/notes")
        assert listed_notes.status_code == 200, listed_notes.text
        assert listed_notes.json() == {"greeting": "Hello", "notes": ["installed"]}  # its hook

        assert (await admin.post("/api/v1/plugins/notes/deactivate")).json()["status"] == (
            "inactive"
        )
        await synced(site)
        assert (await admin.get("/api/plugins/notes/notes")).status_code == 404

        refused = await admin.post("/api/v1/plugins/notes/uninstall", json={})
        assert_problem(refused, 400, "confirm")
        assert (await row(site, "notes")) is not None
        gone = await admin.post("/api/v1/plugins/notes/uninstall", json={"confirm": True})
        assert gone.status_code == 204
    assert await row(site, "notes") is None
    assert await audit_actions(site) == [
        "plugin.installed",
        "plugin.activated",
        "plugin.deactivated",
        "plugin.uninstalled",
    ]


async def test_viewers_and_editors_are_refused(site: Litestar, accounts: dict) -> None:
    for role in ("viewer", "editor"):
        async with api_as(site, accounts[role]) as client:
            assert_problem(await client.get("/api/v1/plugins"), 403)
            assert_problem(await client.post("/api/v1/plugins/notes/install"), 403)
    assert await row(site, "notes") is None


async def test_changed_files_block_activation_until_an_admin_accepts_them(
    site: Litestar, accounts: dict, plugins_dir: Path
) -> None:
    async with api_as(site, accounts["admin"]) as admin:
        await admin.post("/api/v1/plugins/notes/install")
        code = plugins_dir / "notes" / "notes" / "plugin.py"
        code.write_text(code.read_text() + "\n# changed on disk\n")
        listed = (await admin.get("/api/v1/plugins/notes")).json()
        assert listed["files_changed"] is True
        blocked = await admin.post("/api/v1/plugins/notes/activate")
        assert "changed since it was installed" in assert_problem(blocked, 409)["detail"]
        assert (await row(site, "notes")).status == "installed"

        accepted = await admin.post("/api/v1/plugins/notes/accept")
        assert accepted.status_code == 200 and accepted.json()["files_changed"] is False
        assert (await admin.post("/api/v1/plugins/notes/activate")).json()["status"] == "active"
    assert "plugin.accepted" in await audit_actions(site)


async def test_signatures_are_checked_against_the_trusted_keys(
    settings: Settings, accounts: dict, plugins_dir: Path
) -> None:
    private, public = signing.generate_keypair()
    other_private, _ = signing.generate_keypair()
    signing.write_signature(plugins_dir / "notes", private)
    strict = replace(
        with_app_settings(settings, plugins_dir=plugins_dir),
        plugins=replace(settings.plugins, trusted_keys=(public,), allow_unsigned=False),
    )
    app = create_app(strict)
    async with api_as(app, accounts["admin"]) as admin:
        assert (await admin.post("/api/v1/plugins/notes/install")).status_code == 200
        assert (await admin.get("/api/v1/plugins/notes")).json()["signed"] is True
        await admin.post("/api/v1/plugins/notes/uninstall", json={"confirm": True})

        signing.write_signature(plugins_dir / "notes", other_private)  # an untrusted key
        refused = await admin.post("/api/v1/plugins/notes/install")
        assert_problem(refused, 422, "signature")
        (plugins_dir / "notes" / signing.SIGNATURE_FILE).unlink()
        unsigned = await admin.post("/api/v1/plugins/notes/install")
        assert "not signed" in assert_problem(unsigned, 422, "signature")["detail"]
    assert await row(app, "notes") is None


async def test_an_uploaded_zip_installs_and_runs(
    site: Litestar, accounts: dict, plugins_dir: Path
) -> None:
    data = archive.pack_folder(plugins_dir / "notes")
    shutil.rmtree(plugins_dir / "notes")
    async with api_as(site, accounts["admin"]) as admin:
        uploaded = await admin.post(
            "/api/v1/plugins", files={"file": ("notes.zip", data, "application/zip")}
        )
        assert uploaded.status_code == 201, uploaded.text
        assert uploaded.json()["status"] == "uploaded"
        assert (plugins_dir / "notes" / "plugin.toml").is_file()
        assert (await admin.post("/api/v1/plugins/notes/install")).json()["status"] == "installed"
        await admin.post("/api/v1/plugins/notes/activate")
        await synced(site)
        assert (await admin.get("/api/plugins/notes/notes")).status_code == 200
    kept = await row(site, "notes")
    assert kept is not None and kept.archive == data  # every replica can unpack it


def folders(directory: Path) -> list[str]:
    return sorted(path.name for path in directory.iterdir())


def _zip(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as made:
        for name, content in entries.items():
            made.writestr(name, content)
    return buffer.getvalue()


async def test_a_hostile_zip_is_refused_and_writes_nothing(
    site: Litestar, accounts: dict, plugins_dir: Path
) -> None:
    manifest = (plugins_dir / "notes" / "plugin.toml").read_bytes().replace(b"notes", b"evil")
    before = folders(plugins_dir)
    hostile = {
        "escape": _zip({"evil/plugin.toml": manifest, "evil/../../outside.py": b"x"}),
        "absolute": _zip({"evil/plugin.toml": manifest, "/etc/evil.py": b"x"}),
        "no manifest": _zip({"evil/evil/__init__.py": b""}),
        "not a zip": b"this is not a zip file",
    }
    async with api_as(site, accounts["admin"]) as admin:
        for case, data in hostile.items():
            answer = await admin.post(
                "/api/v1/plugins", files={"file": ("evil.zip", data, "application/zip")}
            )
            assert answer.status_code in (400, 413, 422), case
            assert_problem(answer, answer.status_code, "file")
    assert folders(plugins_dir) == before
    assert await row(site, "evil") is None


async def test_a_failing_install_hook_leaves_the_plugin_in_error_and_takes_nothing_down(
    site: Litestar, accounts: dict, plugins_dir: Path
) -> None:
    hook = plugins_dir / "notes" / "notes" / "plugin.py"
    hook.write_text(
        hook.read_text().replace(
            "        async with ctx.session() as session:\n"
            '            await session.execute(insert(notes_table(ctx)).values(text="installed"))',
            "        raise RuntimeError('the disk is full')",
        )
    )
    async with api_as(site, accounts["admin"]) as admin:
        failed = await admin.post("/api/v1/plugins/notes/install")
        assert "the disk is full" in assert_problem(failed, 409)["detail"]
        shown = (await admin.get("/api/v1/plugins/notes")).json()
        assert shown["status"] == "error" and "the disk is full" in shown["error"]
        assert (await admin.get("/api/v1/site")).status_code == 200
    assert "plugin.install_failed" in await audit_actions(site)


async def test_settings_are_checked_against_the_manifest_schema(
    site: Litestar, accounts: dict
) -> None:
    async with api_as(site, accounts["admin"]) as admin:
        await admin.post("/api/v1/plugins/notes/install")
        wrong = await admin.put(
            "/api/v1/plugins/notes/settings",
            json={"values": {"greeting": "x" * 500, "shout": "maybe"}},
        )
        problem = assert_problem(wrong, 422)
        assert {error["field"] for error in problem["errors"]} == {"greeting", "shout"}
        saved = await admin.put(
            "/api/v1/plugins/notes/settings", json={"values": {"greeting": "Ahoy", "shout": True}}
        )
        assert saved.status_code == 200, saved.text
        assert saved.json()["settings"] == {"greeting": "Ahoy", "shout": True}


async def test_the_admin_page_lists_installs_and_uninstalls_with_confirmation(
    site: Litestar, accounts: dict
) -> None:
    async with signed_in(site, accounts["admin"]) as browser:
        page = await browser.get("/admin/plugins")
        assert page.status_code == 200 and 'data-plugin="notes"' in page.text
        confirm = await browser.get("/admin/plugins/-/notes/install")
        assert confirm.status_code == 200 and "Install" in confirm.text
        done = await browser.post("/admin/plugins/-/notes/install")
        assert done.status_code == 303
        assert "Installed" in (await browser.get("/admin/plugins")).text

        unconfirmed = await browser.post("/admin/plugins/-/notes/uninstall", data={"confirm": ""})
        assert unconfirmed.status_code == 400 and 'id="e-confirm"' in unconfirmed.text
        assert await row(site, "notes") is not None
        confirmed = await browser.post(
            "/admin/plugins/-/notes/uninstall", data={"confirm": "notes"}
        )
        assert confirmed.status_code == 303
    assert await row(site, "notes") is None


def test_the_cli_installs_activates_and_uninstalls(
    keel_env: dict[str, str], plugins_dir: Path
) -> None:
    env = {**keel_env, "PLUGINS_DIR": str(plugins_dir)}
    assert "notes" in run_keel("plugins", "list", env=env).stdout
    installed = run_keel("plugins", "install", "notes", env=env)
    assert installed.returncode == 0, installed.stderr
    assert "notes 1.0.0: installed" in installed.stdout
    assert "active" in run_keel("plugins", "activate", "notes", env=env).stdout
    refused = run_keel("plugins", "uninstall", "notes", env=env)
    assert refused.returncode != 0 and "--yes" in refused.stderr
    assert run_keel("plugins", "uninstall", "notes", "--yes", env=env).returncode == 0
    assert "available" in run_keel("plugins", "list", env=env).stdout


async def test_a_new_plugin_from_keel_plugins_new_installs_and_serves_every_part(
    keel_env: dict[str, str], settings: Settings, accounts: dict, tmp_path: Path
) -> None:
    plugins_dir = tmp_path / "made"
    env = {**keel_env, "PLUGINS_DIR": str(plugins_dir)}
    made = run_keel("plugins", "new", "demo_notes", env=env)
    assert made.returncode == 0, made.stderr
    assert run_keel("plugins", "new", "demo_notes", env=env).returncode != 0  # exists
    assert run_keel("plugins", "new", "Bad-Name", env=env).returncode != 0
    app = create_app(with_app_settings(settings, plugins_dir=plugins_dir))
    try:
        async with api_as(app, accounts["admin"]) as admin:
            assert (await admin.post("/api/v1/plugins/demo_notes/install")).status_code == 200
            assert (await admin.post("/api/v1/plugins/demo_notes/activate")).status_code == 200
            await synced(app)
            listed = await admin.get("/api/plugins/demo_notes/messages")
            assert listed.json() == {"items": ["Installed."]}
            added = await admin.post("/api/plugins/demo_notes/messages", json={"text": "Hi"})
            assert added.status_code == 201
        async with signed_in(app, accounts["admin"]) as browser:
            page = await browser.get("/p/demo_notes/")
            admin_page = await browser.get("/admin/plugins/demo_notes/")
        assert page.status_code == 200 and "Hello from Demo Notes" in page.text
        assert "<li>Hi</li>" in page.text
        assert admin_page.status_code == 200 and "2 messages" in admin_page.text
    finally:
        await app.state.runtime.service(PluginHost).stop()
        await app.state.runtime.close()


def test_a_plugin_name_is_never_a_path(keel_env: dict[str, str], tmp_path: Path) -> None:
    """A name that walks out of PLUGINS_DIR installed the plugin found there (and a very
    long one was a 500): names are a-z, 0-9 and _ at every entry."""
    plugins_dir, elsewhere = tmp_path / "plugins", tmp_path / "elsewhere"
    plugins_dir.mkdir()
    shutil.copytree(SHIPPED / "notes", elsewhere / "notes")
    env = {**keel_env, "PLUGINS_DIR": str(plugins_dir)}
    refused = run_keel("plugins", "install", "../elsewhere/notes", env=env)
    assert refused.returncode != 0 and "No plugin has that name" in refused.stderr
    assert "notes" not in run_keel("plugins", "list", env=env).stdout


async def test_an_unusable_name_is_a_404_on_every_step(site: Litestar, accounts: dict) -> None:
    async with api_as(site, accounts["admin"]) as admin:
        for step in ("install", "activate", "deactivate", "accept"):
            assert_problem(await admin.post(f"/api/v1/plugins/{'x' * 300}/{step}"), 404)
        assert_problem(await admin.get("/api/v1/plugins/Not-A-Name"), 404)
