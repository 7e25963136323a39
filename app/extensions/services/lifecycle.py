"""A plugin's life: upload, install, activate, deactivate, accept, update, uninstall.

The `plugin_registry` row is the truth every process follows. Each step checks everything
it can before it changes anything, and writes the row with its audit entry and a new
`generation` in one transaction: the caller's, except for install and update, whose
storage work (schema, role, migrations: their own transactions, which need the row
committed) runs between two short transactions of their own. After the COMMIT the
`plugins.changed` event tells every process (`PluginHost` publishes it on the store, and
every process polls as well). A plugin hook that
fails or overruns its time limit leaves the plugin in `error` with the message (its storage
taken back at install, so never half-installed); the step then returns normally, so the
error row commits, and the caller answers with the message. Nothing a plugin does takes
Keel down.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.services.audit import Actor, record
from app.core.errors import Conflict, InvalidField, InvalidFields, NotFound
from app.core.events import Event, Events, emit
from app.core.registry import KEEL
from app.core.runtime import Runtime
from app.core.store import Store
from app.extensions.models import PluginRecord, PluginStatus
from app.extensions.services import archive, isolation, manifest, signing
from app.extensions.services.host import (
    PluginHookFailed,
    PluginHost,
    PluginLoadFailed,
    RegistryRow,
    announce,
)
from app.settings import Settings

PLUGINS_CHANGED = "plugins.changed"
"""Event (app/core/events.py), once per transaction: a plugin row changed; after the
COMMIT every process syncs the plugins it runs."""

HookRunner = Callable[[PluginRecord, str, tuple[Any, ...]], Awaitable[None]]
"""Runs one hook of a plugin (`on_install`...) under its time limit; raises `HookFailed`."""


class HookFailed(Exception):
    """A plugin hook raised or ran past its time limit; the message says which and why."""


class PluginNotFound(NotFound):
    pass


class PluginConflict(Conflict):
    """The plugin's state refuses the step (installed already, files changed, active)."""


class PluginRefused(InvalidField):
    """What was sent cannot be a plugin here (manifest, compatibility, signature, zip): 422."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message, field, status=422)


@dataclass(frozen=True)
class PluginView:
    """A plugin as an admin sees it: its row when installed, its folder when present."""

    name: str
    record: PluginRecord | None
    found: manifest.PluginManifest | None
    problem: str | None = None
    """Why the folder's plugin.toml cannot be read."""
    files_changed: bool = False
    """The files on disk differ from the checksum recorded at install (activation blocked)."""


def _now() -> datetime:
    return datetime.now(UTC)


def _named(name: str) -> str:
    """`name` when it can be a plugin's (a-z, 0-9, _: never a path); else no such plugin."""
    if not manifest.NAME.fullmatch(name):
        raise PluginNotFound("No plugin has that name: a-z, 0-9 and _, starting with a letter.")
    return name


def _folder(settings: Settings, name: str) -> Path:
    return settings.app.plugins_dir / _named(name)


async def get_plugin(session: AsyncSession, name: str) -> PluginRecord:
    found = await session.get(PluginRecord, _named(name))
    if found is None:
        raise PluginNotFound(f"No plugin called {name!r} is installed.")
    return found


async def list_plugins(session: AsyncSession, settings: Settings) -> list[PluginView]:
    """Every installed plugin and every plugin folder not installed yet, by name."""
    rows = {row.name: row for row in await session.scalars(select(PluginRecord))}
    manifests, problems = manifest.discover_plugins(settings.app.plugins_dir)
    on_disk = {found.name: found for found in manifests}
    views: dict[str, PluginView] = {}
    for name in sorted(set(rows) | set(on_disk)):
        row, found = rows.get(name), on_disk.get(name)
        changed = bool(row and found and signing.checksum(found.path) != row.checksum)
        views[name] = PluginView(name, row, found, files_changed=changed)
    for problem in problems:
        name = problem.path.parent.name
        if name not in views:
            views[name] = PluginView(name, rows.get(name), None, problem.message)
    return [views[name] for name in sorted(views)]


async def get_view(session: AsyncSession, settings: Settings, name: str) -> PluginView:
    """One plugin as `list_plugins` shows it (installed, or a folder not installed yet)."""
    _named(name)
    for view in await list_plugins(session, settings):
        if view.name == name:
            return view
    raise PluginNotFound(f"No plugin called {name!r}.")


def _changed(session: AsyncSession, row: PluginRecord) -> None:
    row.generation = (row.generation or 0) + 1
    row.updated_at = _now()
    emit(session, PLUGINS_CHANGED, once=True)


def _verified(settings: Settings, folder: Path) -> tuple[str, str | None]:
    """The folder's checksum and signature (see `_trusted`)."""
    checksum = signing.checksum(folder)
    return checksum, _trusted(settings, checksum, signing.read_signature(folder))


def _trusted(settings: Settings, checksum: str, signature: str | None) -> str | None:
    """`signature`, refused when it does not verify against a trusted key, or when it is
    missing and unsigned plugins are not allowed."""
    keys = settings.plugins.trusted_keys
    if signature is not None:
        if not signing.verify(checksum, signature, keys):
            raise PluginRefused(
                "The plugin's signature does not match its files or no trusted key made it.",
                "signature",
            )
    elif not settings.plugins.allow_unsigned:
        raise PluginRefused(
            "This plugin is not signed, and unsigned plugins may not be installed here "
            "(PLUGIN_ALLOW_UNSIGNED).",
            "signature",
        )
    return signature


def _read(settings: Settings, name: str) -> manifest.PluginManifest:
    path = _folder(settings, name) / "plugin.toml"  # a name that is no path, checked
    if not path.is_file():
        raise PluginNotFound(f"There is no plugin folder {name!r} under PLUGINS_DIR.")
    found = manifest.read_manifest(path)
    manifest.check_compatible(found, manifest.running_keel_version())
    return found


async def upload(
    session: AsyncSession, runtime: Runtime, actor: Actor, data: bytes
) -> PluginRecord:
    """An uploaded zip: checked whole before anything is written, unpacked under
    PLUGINS_DIR and kept in the row (every replica unpacks it from there); not installed."""
    settings = runtime.settings
    uploaded = archive.read_upload(data, settings.plugins)
    name = uploaded.manifest.name
    row = await session.get(PluginRecord, name)
    if row is not None and row.status not in (PluginStatus.uploaded, PluginStatus.error):
        raise PluginConflict(
            f"{name!r} is installed; uninstall it first, or update it from its folder.", "file"
        )
    manifest.check_compatible(uploaded.manifest, manifest.running_keel_version())
    checksum = archive.uploaded_checksum(uploaded, data)
    signature = _trusted(settings, checksum, uploaded.signature)
    archive.extract(uploaded, data, settings.app.plugins_dir, replace=True)
    row = _fill(row, uploaded.manifest, PluginStatus.uploaded, checksum, signature)
    row.archive = data
    session.add(row)
    _changed(session, row)
    record(session, actor, "plugin.uploaded", "plugin", name, version=row.version)
    return row


def _fill(
    row: PluginRecord | None,
    found: manifest.PluginManifest,
    status: PluginStatus,
    checksum: str,
    signature: str | None,
) -> PluginRecord:
    now = _now()
    if row is None:
        row = PluginRecord(name=found.name, installed_at=now, generation=0, settings={})
    row.version = found.version
    row.display_name = found.display_name
    row.description = found.description
    row.author = found.author
    row.manifest = found.to_json()
    row.status = status.value
    row.checksum = checksum
    row.signature = signature
    row.error = None
    row.updated_at = now
    if not row.settings:
        row.settings = manifest.settings_defaults(found.settings_schema)
    return row


async def install(runtime: Runtime, actor: Actor, name: str, hooks: HookRunner) -> PluginRecord:
    """Validate the manifest and the files, make the plugin's storage, run its migrations
    and `on_install`. On a failing step the storage is taken back and the row says `error`.
    It runs in transactions of its own, not the caller's: the row commits before the
    storage work (the migrations' own transactions refer to it) and again after it, each
    time with its audit entry."""
    settings = runtime.settings
    async with runtime.sessionmaker() as reading:
        row = await reading.get(PluginRecord, _named(name))
    if row is not None and row.status not in (PluginStatus.uploaded, PluginStatus.error):
        raise PluginConflict(f"{name!r} is installed already.")
    found = _read(settings, name)
    checksum, signature = _verified(settings, found.path)

    async def begin(own: AsyncSession) -> PluginRecord:
        started = _fill(
            await own.get(PluginRecord, name), found, PluginStatus.error, checksum, signature
        )
        started.error = "install did not finish"  # until it does, nothing of it runs
        started.installed_at = _now()
        own.add(started)
        return started

    row = await _own_transaction(runtime, begin)
    try:
        await isolation.create_storage(runtime.engine, name)
        await isolation.run_migrations(runtime.sessionmaker, name, found.path)
        await hooks(row, "on_install", ())
    except (HookFailed, Conflict, InvalidField) as exc:
        await isolation.drop_storage(runtime.engine, name)
        return await _own_transaction(runtime, _failed_in(actor, name, "install", exc))

    async def finish(own: AsyncSession) -> PluginRecord:
        done = await get_plugin(own, name)
        done.status, done.error = PluginStatus.installed.value, None
        _changed(own, done)
        record(own, actor, "plugin.installed", "plugin", name, version=done.version)
        return done

    return await _own_transaction(runtime, finish)


async def _own_transaction(
    runtime: Runtime, work: Callable[[AsyncSession], Awaitable[PluginRecord]]
) -> PluginRecord:
    """`work` in a transaction of its own, committed, its events delivered after."""
    async with runtime.sessionmaker(expire_on_commit=False) as own:
        async with own.begin():
            done = await work(own)
        await runtime.events.deliver(own)
    return done


def _failed_in(
    actor: Actor, name: str, step: str, exc: Exception
) -> Callable[[AsyncSession], Awaitable[PluginRecord]]:
    async def fail(own: AsyncSession) -> PluginRecord:
        return _failed(own, actor, await get_plugin(own, name), step, exc)

    return fail


def _failed(
    session: AsyncSession, actor: Actor, row: PluginRecord, step: str, exc: Exception
) -> PluginRecord:
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    row.status = PluginStatus.error.value
    row.error = f"{step} failed: {message}"[:2000]
    _changed(session, row)
    record(session, actor, f"plugin.{step}_failed", "plugin", row.name, error=row.error)
    return row


def _unchanged_files(settings: Settings, row: PluginRecord) -> None:
    """The plugin's files here are the accepted ones; an uploaded plugin's are unpacked
    from its archive first when this process's folder lacks them (another replica took the
    upload) or differs from them."""
    folder = _folder(settings, row.name)
    present = (folder / "plugin.toml").is_file()
    if row.archive is not None and (not present or signing.checksum(folder) != row.checksum):
        archive.unpack_archive(row.archive, settings.app.plugins_dir, settings.plugins)
    if not (folder / "plugin.toml").is_file():
        raise PluginConflict(f"The files of {row.name!r} are missing from PLUGINS_DIR.")
    if signing.checksum(folder) != row.checksum:
        raise PluginConflict(
            f"The files of {row.name!r} changed since it was installed; an admin must accept "
            "the change before it can be activated."
        )


async def activate(
    session: AsyncSession, runtime: Runtime, actor: Actor, name: str, hooks: HookRunner
) -> PluginRecord:
    row = await get_plugin(session, name)
    if row.status == PluginStatus.active:
        return row
    if row.status == PluginStatus.uploaded:
        raise PluginConflict(f"{name!r} is uploaded but not installed yet.")
    _unchanged_files(runtime.settings, row)
    try:
        await hooks(row, "on_activate", ())
    except HookFailed as exc:
        return _failed(session, actor, row, "activate", exc)
    row.status = PluginStatus.active.value
    row.error = None
    _changed(session, row)
    record(session, actor, "plugin.activated", "plugin", name)
    return row


async def deactivate(
    session: AsyncSession, runtime: Runtime, actor: Actor, name: str, hooks: HookRunner
) -> PluginRecord:
    """Always takes effect: a failing `on_deactivate` is noted, the plugin stops anyway."""
    row = await get_plugin(session, name)
    if row.status != PluginStatus.active:
        return row
    note: str | None = None
    try:
        await hooks(row, "on_deactivate", ())
    except HookFailed as exc:
        note = str(exc)
    row.status = PluginStatus.inactive.value
    row.error = f"on_deactivate failed: {note}" if note else None
    _changed(session, row)
    record(session, actor, "plugin.deactivated", "plugin", name, hook_error=note)
    return row


async def accept(session: AsyncSession, runtime: Runtime, actor: Actor, name: str) -> PluginRecord:
    """Take the plugin's files as they are now (after an admin looked at the change): the
    checksum is recorded again, the signature checked again."""
    row = await get_plugin(session, name)
    folder = _folder(runtime.settings, name)
    if not (folder / "plugin.toml").is_file():
        raise PluginConflict(f"The files of {name!r} are missing from PLUGINS_DIR.")
    checksum, signature = _verified(runtime.settings, folder)
    previous = row.checksum
    row.checksum, row.signature = checksum, signature
    _changed(session, row)
    record(session, actor, "plugin.accepted", "plugin", name, old=previous, new=checksum)
    return row


async def update(runtime: Runtime, actor: Actor, name: str, hooks: HookRunner) -> PluginRecord:
    """The folder holds a new version: check it, run its new migrations and `on_update`
    (in transactions of its own, as `install`)."""
    async with runtime.sessionmaker() as reading:
        row = await get_plugin(reading, name)
    found = _read(runtime.settings, name)
    if found.version == row.version:
        raise PluginConflict(f"{name!r} {row.version} is installed already.")
    checksum, signature = _verified(runtime.settings, found.path)
    old_version, status = row.version, PluginStatus(row.status)
    try:
        await isolation.run_migrations(runtime.sessionmaker, name, found.path)
        await hooks(row, "on_update", (old_version,))
    except (HookFailed, Conflict, InvalidField) as exc:
        return await _own_transaction(runtime, _failed_in(actor, name, "update", exc))

    async def finish(own: AsyncSession) -> PluginRecord:
        done = _fill(await get_plugin(own, name), found, status, checksum, signature)
        _changed(own, done)
        record(own, actor, "plugin.updated", "plugin", name, old=old_version, new=found.version)
        return done

    return await _own_transaction(runtime, finish)


async def uninstall(
    session: AsyncSession,
    runtime: Runtime,
    actor: Actor,
    name: str,
    hooks: HookRunner,
    *,
    confirm: bool,
) -> None:
    """Remove the plugin and its data (its schema and role, its tables, its row)."""
    if not confirm:
        raise InvalidField("Uninstalling removes the plugin's data: confirm it.", "confirm")
    row = await get_plugin(session, name)
    note: str | None = None
    if row.status in (PluginStatus.active, PluginStatus.inactive, PluginStatus.installed):
        try:
            await hooks(row, "on_uninstall", ())
        except HookFailed as exc:
            note = str(exc)
    await isolation.drop_storage(runtime.engine, name)
    emit(session, PLUGINS_CHANGED, once=True)
    await session.delete(row)
    record(session, actor, "plugin.uninstalled", "plugin", name, hook_error=note)


async def save_settings(
    session: AsyncSession, actor: Actor, name: str, values: Mapping[str, Any]
) -> PluginRecord:
    """Validated against the manifest's settings schema; every error at once, by field."""
    row = await get_plugin(session, name)
    schema = row.manifest.get("settings")
    cleaned, errors = manifest.validate_settings(schema, values)
    if errors:
        raise InvalidFields(errors)
    old = dict(row.settings or {})
    row.settings = cleaned
    _changed(session, row)
    record(session, actor, "plugin.settings_changed", "plugin", name, old=old, new=cleaned)
    return row


def hooks_of(runtime: Runtime) -> HookRunner:
    """The process's way to run a plugin's hook for a lifecycle step: with the plugin this
    process runs, or one loaded for the step alone (install, activation), under the
    plugin's time limit."""
    host = runtime.service(PluginHost)

    async def run(row: PluginRecord, hook: str, args: tuple[Any, ...]) -> None:
        plugin = host.loaded.get(row.name)
        temporary = plugin is None or plugin.checksum != row.checksum
        if temporary:
            try:
                plugin = host.load(_registry_row(row))
            except PluginLoadFailed as exc:
                raise HookFailed(f"the plugin cannot be loaded: {exc}") from None
        assert plugin is not None
        try:
            await host.call_hook(plugin, hook, *args)
        except PluginHookFailed as exc:
            raise HookFailed(str(exc)) from None
        finally:
            if temporary:
                host.release(plugin)

    return run


def _registry_row(row: PluginRecord) -> RegistryRow:
    return RegistryRow(
        row.name,
        row.status,
        row.checksum,
        row.generation,
        row.manifest,
        row.version,
        dict(row.settings or {}),
    )


def subscribe_plugin_changes(events: Events, store: Store) -> None:
    """After a lifecycle step commits, tell every process (they also poll every second)."""

    async def tell(_event: Event) -> None:
        await announce(store)

    events.subscribe(KEEL, PLUGINS_CHANGED, tell, name="plugins.announce")
