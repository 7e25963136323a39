"""What an importer of one kind (users, content) provides to the `import` job."""

from __future__ import annotations

from collections.abc import Hashable
from typing import ClassVar, Generic, TypeVar
from zoneinfo import ZoneInfo

from sqlalchemy.ext.asyncio import AsyncSession

from app.accounts.models import Role
from app.accounts.services.audit import Actor
from app.core.errors import DomainError
from app.core.store import Store
from app.core.zones import DEFAULT_ZONE, zone_named
from app.jobs.jobs.imports.csvfile import Columns, Row

T = TypeVar("T")

COLUMN_OF_FIELD = {"body_markdown": "body", "published_at": "publish_at", "display_name": "name"}
"""Where a service's field name differs from the CSV column it comes from."""


def reason(problem: DomainError) -> str:
    """A service's refusal as a reason on a row: `column: message`."""
    if not problem.field:
        return problem.message
    return f"{COLUMN_OF_FIELD.get(problem.field, problem.field)}: {problem.message}"


class Importer(Generic[T]):
    """Checks rows and writes the valid ones; `T` is a checked row (it keeps its `Row` as
    `.row`)."""

    columns: ClassVar[Columns]

    def __init__(self, store: Store, zone: ZoneInfo | None = None) -> None:
        self.store = store
        self.zone = zone or zone_named(DEFAULT_ZONE)
        """The site's time zone: times without an offset are read in it, as forms read
        them."""

    def check(self, row: Row, role: Role) -> T:
        """The row as it would be written, with a reason in `row.reasons` for every rule
        it breaks (not only the first): only a row without reasons is written. `role` is
        the importing user's."""
        raise NotImplementedError

    def key(self, item: T) -> tuple[str, Hashable]:
        """What no two rows of a file may share: (its name for people, the value); an
        empty value (nothing given to compare) is never a duplicate."""
        raise NotImplementedError

    async def conflicts(self, session: AsyncSession, items: list[T]) -> None:
        """Add a reason to each row that clashes with what the database holds."""
        raise NotImplementedError

    async def write(
        self,
        session: AsyncSession,
        actor: Actor,
        role: Role,
        items: list[T],
        context: dict[str, str],
    ) -> None:
        """Write every row (all valid) in the caller's transaction."""
        raise NotImplementedError
