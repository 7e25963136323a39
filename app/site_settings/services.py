"""The typed registry of runtime settings and the functions every domain reads them with.

Values live in the `system_settings` table and are read from it on every call, so a change
made by one process is seen by every other at once. Public pages keep the `public` ones (the
site title and intro) in the process under the page cache's generation, which a change of
one of those bumps; a change of any other leaves every cached page in place. A setting that
was never written has its registered default.

Definitions live in `SETTINGS` (an `app.core.registry.Registry`): `define()` adds Keel's,
a plugin adds and removes its own while Keel runs; whatever lists settings lists what is
registered at the time of the request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar, cast
from uuid import UUID

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.db import dialect_insert
from app.core.events import mark_public_change
from app.core.reads import ReadQuery, Reads
from app.core.registry import KEEL, Registry
from app.core.zones import DEFAULT_ZONE, zone_problem
from app.site_settings.models import SystemSetting

Validator = Callable[[Any], str | None]


class SettingError(ValueError):
    """A setting name is unknown or a value does not fit it; `message` is for the user."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"{name}: {message}")
        self.name = name
        self.message = message


T = TypeVar("T", str, int, bool)


@dataclass(frozen=True)
class SettingDefinition(Generic[T]):
    """A runtime setting; code reads its value with `await DEFINITION.read(session)`."""

    name: str
    type: type[T]
    default: T
    help: str
    minimum: int | None = None
    maximum: int | None = None
    max_length: int | None = None
    validate: Validator | None = None
    public: bool = False
    """Shown on public pages: a change starts a new page cache generation (others never
    do, so the public pages keep only these, `public_settings`)."""
    label: str = ""
    """A short name for forms; the setting's name when empty."""

    @property
    def title(self) -> str:
        return self.label or self.name.replace("_", " ").capitalize()

    async def read(self, session: AsyncSession) -> T:
        """The current value (the default when never written), of this setting's type."""
        stored = await session.scalar(
            select(SystemSetting.value).where(SystemSetting.key == self.name)
        )
        return self.default if stored is None else cast(T, stored)  # coerced when written

    def coerce(self, raw: Any) -> Any:
        """Turn API or form input into a value of this setting's type, or raise SettingError."""
        value = _coerce(self, raw)
        if self.type is int and self.minimum is not None and value < self.minimum:
            raise SettingError(self.name, f"must be at least {self.minimum}")
        if self.type is int and self.maximum is not None and value > self.maximum:
            raise SettingError(self.name, f"must be at most {self.maximum}")
        if self.type is str and self.max_length is not None and len(value) > self.max_length:
            raise SettingError(self.name, f"must be at most {self.max_length} characters")
        if self.validate is not None and (problem := self.validate(value)):
            raise SettingError(self.name, problem)
        return value


def _coerce(definition: SettingDefinition[Any], raw: Any) -> Any:
    kind = definition.type
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in {"true", "1", "yes", "on"}:
            return True
        if text in {"false", "0", "no", "off", ""}:
            return False
        raise SettingError(definition.name, "must be true or false")
    if kind is int:
        if isinstance(raw, bool):
            raise SettingError(definition.name, "must be a whole number")
        try:
            return int(str(raw).strip()) if not isinstance(raw, int) else raw
        except ValueError:
            raise SettingError(definition.name, "must be a whole number") from None
    if not isinstance(raw, str):
        raise SettingError(definition.name, "must be text")
    return raw.strip()


SETTINGS: Registry[str, SettingDefinition[Any]] = Registry("setting", key=lambda d: d.name)


def define(definition: SettingDefinition[T], owner: str = KEEL) -> SettingDefinition[T]:
    """Register a setting (Keel's domains: at import time); its default must fit it."""
    definition.coerce(definition.default)
    return SETTINGS.add(owner, definition)


def _not_blank(value: str) -> str | None:
    return "must not be empty" if not value else None


SITE_TITLE = define(
    SettingDefinition(
        "site_title",
        str,
        "Keel",
        "The site's name, shown in the header and the browser tab.",
        label="Site title",
        max_length=100,
        validate=_not_blank,
        public=True,
    )
)
SITE_TAGLINE = define(
    SettingDefinition(
        "site_tagline",
        str,
        "",
        "A few words on what the site is about: shown beside the title in the header and in "
        "the browser tab of the home page, and given to search engines for the home page and "
        "the blog (the introduction is given when it is empty).",
        label="Tagline",
        max_length=150,
        public=True,
    )
)
SITE_INTRO = define(
    SettingDefinition(
        "site_intro",
        str,
        "A self-hosted site, running on Keel.",
        "One or two sentences under the title on the home page.",
        label="Introduction on the home page",
        max_length=500,
        public=True,
    )
)


TIME_ZONE = define(
    SettingDefinition(
        "time_zone",
        str,
        DEFAULT_ZONE,
        "The site's time zone, by its IANA name (Europe/Berlin, America/New_York): pages "
        "show times in it, and times typed into forms or imported from CSV without an "
        "offset are read in it. The API keeps UTC.",
        label="Time zone",
        max_length=64,
        validate=zone_problem,
        public=True,
    )
)


def definition_of(name: str) -> SettingDefinition[Any]:
    definition = SETTINGS.get(name)
    if definition is None:
        raise SettingError(name, "is not a known setting")
    return definition


async def read_setting(session: AsyncSession, name: str) -> Any:
    """The current value of the setting called `name` (for code that has only its name:
    the settings API, a plugin's form); Keel's code reads `DEFINITION.read(session)`."""
    return await definition_of(name).read(session)


_ALL = select(SystemSetting.key, SystemSetting.value)
ALL_SETTINGS = ReadQuery(_ALL)


async def read_settings(session: AsyncSession) -> dict[str, Any]:
    """Every registered setting with its current value, in one query."""
    return _with_defaults((await session.execute(_ALL)).all())


async def read_settings_from(reads: Reads) -> dict[str, Any]:
    """The same, for the hot read paths (app/core/reads.py)."""
    return _with_defaults((row["key"], row["value"]) for row in await reads.all(ALL_SETTINGS))


def public_settings(values: dict[str, Any]) -> dict[str, Any]:
    """The settings public pages show, of `values`: the only ones kept with their pages."""
    return {name: value for name, value in values.items() if SETTINGS[name].public}


def _with_defaults(rows: Iterable[Any]) -> dict[str, Any]:
    stored = {key: value for key, value in rows}
    return {name: stored.get(name, d.default) for name, d in SETTINGS.items()}


async def write_setting(
    session: AsyncSession, name: str, raw: Any, updated_by: UUID | None = None
) -> Any:
    """Validate and store a setting; returns the stored value. Raises SettingError."""
    definition = definition_of(name)
    value = definition.coerce(raw)
    if definition.public and value != await definition.read(session):
        mark_public_change(session)  # the site title or intro, on every public page
    now = datetime.now(UTC)
    statement = dialect_insert(session, SystemSetting).values(
        key=name, value=value, description=definition.help, updated_at=now, updated_by=updated_by
    )
    statement = statement.on_conflict_do_update(
        index_elements=[SystemSetting.key],
        set_={"value": value, "updated_at": now, "updated_by": updated_by},
    )
    await session.execute(statement)
    return value
