"""Changing the runtime settings (app/site_settings): every value checked before any is
written, every change audited with its old and new value. A change is seen by every
process at once (settings are read from the database on every use) and, for the settings
public pages show, by the page cache too (`write_setting` starts a new generation)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.services.audit import Actor, record
from app.core.errors import InvalidFields, NotFound
from app.site_settings.services import (
    SETTINGS,
    SettingDefinition,
    SettingError,
    read_settings,
    write_setting,
)


class SettingNotFound(NotFound):
    pass


@dataclass(frozen=True)
class SettingView:
    """A setting as the API and the form show it."""

    name: str
    title: str
    help: str
    type: str
    """`string`, `integer` or `boolean`."""
    value: Any
    default: Any
    minimum: int | None
    maximum: int | None
    max_length: int | None

    @classmethod
    def of(cls, definition: SettingDefinition[Any], value: Any) -> SettingView:
        kinds = {str: "string", int: "integer", bool: "boolean"}
        return cls(
            name=definition.name,
            title=definition.title,
            help=definition.help,
            type=kinds[definition.type],
            value=value,
            default=definition.default,
            minimum=definition.minimum,
            maximum=definition.maximum,
            max_length=definition.max_length,
        )


async def list_settings(session: AsyncSession) -> list[SettingView]:
    """Every registered setting (Keel's and active plugins'), with its current value."""
    values = await read_settings(session)
    return [SettingView.of(definition, values[name]) for name, definition in SETTINGS.items()]


async def get_setting(session: AsyncSession, name: str) -> SettingView:
    definition = SETTINGS.get(name)
    if definition is None:
        raise SettingNotFound(f"There is no setting called {name!r}.")
    return SettingView.of(definition, await definition.read(session))


async def change_settings(
    session: AsyncSession, actor: Actor, values: Mapping[str, Any]
) -> list[SettingView]:
    """Write every value of `values` (by setting name) that differs from the current one,
    or nothing: every value is checked first, and all their problems are raised at once
    (`InvalidFields`, 422, by setting name). Returns the settings that changed."""
    unknown = [name for name in values if SETTINGS.get(name) is None]
    if unknown:
        raise SettingNotFound(f"There is no setting called {unknown[0]!r}.")
    current = await read_settings(session)
    checked: dict[str, Any] = {}
    problems: dict[str, str] = {}
    for name, raw in values.items():
        try:
            checked[name] = SETTINGS[name].coerce(raw)
        except SettingError as exc:
            problems[name] = f"{SETTINGS[name].title}: {exc.message}"
    if problems:
        raise InvalidFields(problems)
    changed: list[SettingView] = []
    for name, value in checked.items():
        if value == current[name]:
            continue
        await write_setting(session, name, value, actor.user_id)
        record(session, actor, "setting.changed", "setting", name, old=current[name], new=value)
        changed.append(SettingView.of(SETTINGS[name], value))
    return changed
