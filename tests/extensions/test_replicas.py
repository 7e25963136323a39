"""Replicas that share the database (and the store) but no disk: each process's plugin host
unpacks an uploaded plugin from the zip the registry keeps, and runs only the files an admin
accepted (app/extensions/services/host.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path

import pytest
from litestar import Litestar

from app.asgi import create_app
from app.extensions.services import archive, isolation
from app.extensions.services.host import PluginHost
from app.settings import Settings
from tests.accounts.test_users_api import api_as
from tests.conftest import client_for, with_app_settings
from tests.extensions.test_host import status_within

NOTES = Path(__file__).parent / "plugins" / "notes"
LIST = "/api/plugins/notes/notes"
CODE = Path("notes") / "notes" / "plugin.py"


def host_of(app: Litestar) -> PluginHost:
    return app.state.runtime.service(PluginHost)


@asynccontextmanager
async def replica(
    settings: Settings, plugins_dir: Path, *, following: bool = False
) -> AsyncIterator[Litestar]:
    """An app over a PLUGINS_DIR of its own; `following`: with its lifespan (the host's
    follow loop runs), else tests sync its host themselves."""
    app = create_app(with_app_settings(settings, plugins_dir=plugins_dir))
    async with AsyncExitStack() as stack:
        if following:
            await stack.enter_async_context(app.lifespan())
        try:
            yield app
        finally:
            await host_of(app).stop()
            await isolation.drop_storage(app.state.runtime.engine, "notes")
    await app.state.runtime.close()


async def upload_and_activate(app: Litestar, admin_user: object) -> None:
    """Upload the notes plugin's zip, install and activate it, all through `app`."""
    data = archive.pack_folder(NOTES)
    async with api_as(app, admin_user) as admin:  # type: ignore[arg-type]
        uploaded = await admin.post(
            "/api/v1/plugins", files={"file": ("notes.zip", data, "application/zip")}
        )
        assert uploaded.status_code == 201, uploaded.text
        installed = await admin.post("/api/v1/plugins/notes/install")
        assert installed.json()["status"] == "installed", installed.text
        activated = await admin.post("/api/v1/plugins/notes/activate")
        assert activated.json()["status"] == "active", activated.text


async def reactivate(app: Litestar, admin_user: object) -> None:
    """A new generation of the row, through `app`."""
    async with api_as(app, admin_user) as admin:  # type: ignore[arg-type]
        assert (await admin.post("/api/v1/plugins/notes/deactivate")).status_code == 200
        assert (await admin.post("/api/v1/plugins/notes/activate")).status_code == 200


async def test_a_replica_without_the_files_unpacks_them_from_the_registry_and_serves(
    settings: Settings, accounts: dict, tmp_path: Path
) -> None:
    async with (
        replica(settings, tmp_path / "first") as first,
        replica(settings, tmp_path / "second") as second,
    ):
        await upload_and_activate(first, accounts["admin"])
        assert not (tmp_path / "second" / "notes").exists()  # nothing shared on disk
        async with client_for(second) as client:
            assert (await client.get(LIST)).status_code == 404
            await host_of(second).sync()
            served = await client.get(LIST)
        assert served.status_code == 200, served.text
        assert served.json() == {"greeting": "Hello", "notes": ["installed"]}
        assert (tmp_path / "second" / CODE).read_bytes() == (
            NOTES / CODE.relative_to("notes")
        ).read_bytes()


async def test_files_changed_on_a_replica_are_unpacked_again_at_the_next_generation(
    settings: Settings, accounts: dict, tmp_path: Path
) -> None:
    async with (
        replica(settings, tmp_path / "first") as first,
        replica(settings, tmp_path / "second") as second,
    ):
        await upload_and_activate(first, accounts["admin"])
        await host_of(second).sync()
        tampered = tmp_path / "second" / CODE
        tampered.write_text(tampered.read_text() + '\nraise RuntimeError("tampered")\n')
        await reactivate(first, accounts["admin"])
        await host_of(second).sync()
        assert "notes" in host_of(second).loaded
        assert "tampered" not in tampered.read_text()  # the zip's files again
        assert "notes" not in host_of(second).figures  # no failed load on the way
        async with client_for(second) as client:
            assert (await client.get(LIST)).status_code == 200


async def test_a_replica_that_cannot_get_the_accepted_files_does_not_load_the_plugin(
    settings: Settings, accounts: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with (
        replica(settings, tmp_path / "first") as first,
        replica(settings, tmp_path / "second") as second,
    ):
        await upload_and_activate(first, accounts["admin"])
        host = host_of(second)

        def refuse(*args: object, **kwargs: object) -> None:
            raise archive.ArchiveRefused("the disk is full", "file")

        monkeypatch.setattr(archive, "unpack_archive", refuse)
        assert not await host.sync()
        assert "notes" not in host.loaded
        assert host.figures["notes"].load_failures == 1
        assert "no plugin folder" in (host.figures["notes"].last_error or "")
        async with client_for(second) as client:
            assert (await client.get(LIST)).status_code == 404


async def test_a_following_replica_serves_an_upload_made_elsewhere_within_2_s(
    services_settings: Settings, services_accounts: dict, tmp_path: Path
) -> None:
    """PostgreSQL and Valkey shared, each replica's disk its own."""
    async with (
        replica(services_settings, tmp_path / "first") as first,
        replica(services_settings, tmp_path / "second", following=True) as second,
    ):
        await upload_and_activate(first, services_accounts["admin"])
        await status_within(second, LIST, 200, 2.0)
        assert (tmp_path / "second" / "notes" / "plugin.toml").is_file()


async def test_a_replica_without_the_files_can_activate_an_uploaded_plugin(
    settings: Settings, accounts: dict, tmp_path: Path
) -> None:
    """The admin's request may reach any replica: the one that took the upload is not the
    only one that can activate it."""
    first_dir, second_dir = tmp_path / "first", tmp_path / "second"
    first_dir.mkdir()
    second_dir.mkdir()
    data = archive.pack_folder(Path(__file__).parent / "plugins" / "notes")
    first = create_app(with_app_settings(settings, plugins_dir=first_dir))
    second = create_app(with_app_settings(settings, plugins_dir=second_dir))
    try:
        async with api_as(first, accounts["admin"]) as admin:
            uploaded = await admin.post(
                "/api/v1/plugins", files={"file": ("notes.zip", data, "application/zip")}
            )
            assert uploaded.status_code == 201, uploaded.text
            assert (await admin.post("/api/v1/plugins/notes/install")).status_code == 200
        async with api_as(second, accounts["admin"]) as admin:
            activated = await admin.post("/api/v1/plugins/notes/activate")
            assert activated.status_code == 200, activated.text
            assert activated.json()["status"] == "active"
        assert (second_dir / "notes" / "plugin.toml").is_file()
    finally:
        for app in (first, second):
            await app.state.runtime.service(PluginHost).stop()
            await app.state.runtime.close()
