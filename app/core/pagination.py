"""One way to page through lists, for pages and the API alike."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Generic, TypeVar
from urllib.parse import urlencode

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.numbers import INT64_MAX, INT64_MIN, parameter_bounds

T = TypeVar("T")
U = TypeVar("U")
MAX_PER_PAGE = 100

_PAGE = "From 1 (a smaller number means 1); a page past the last one is empty."
_PER_PAGE = f"1 to {MAX_PER_PAGE}; a number outside means the nearer one."
PageNumber = Annotated[int, parameter_bounds(INT64_MIN, INT64_MAX, _PAGE)]
PerPage = Annotated[int, parameter_bounds(INT64_MIN, INT64_MAX, _PER_PAGE)]
"""`?page=` and `?per_page=`: any number a BIGINT holds (more is a 400), clamped by
`PageRequest.of`, whose offset never leaves a BIGINT either."""


@dataclass(frozen=True)
class PageRequest:
    page: int = 1
    per_page: int = 20

    @classmethod
    def of(cls, page: int | None, per_page: int | None, default: int = 20) -> PageRequest:
        """Clamp what a client asked for to sane bounds."""
        return cls(max(page or 1, 1), min(max(per_page or default, 1), MAX_PER_PAGE))

    @property
    def offset(self) -> int:
        """Rows before this page. Past what a BIGINT holds it stays there: no table has that
        many rows, so the page is empty, as any page past the last one is."""
        return min((self.page - 1) * self.per_page, INT64_MAX)


@dataclass(frozen=True)
class Page(Generic[T]):
    items: Sequence[T]
    total: int
    page: int
    per_page: int

    @property
    def pages(self) -> int:
        return max((self.total + self.per_page - 1) // self.per_page, 1)

    @property
    def has_previous(self) -> bool:
        return self.page > 1

    @property
    def has_next(self) -> bool:
        return self.page < self.pages

    def map(self, convert: Callable[[T], U]) -> Page[U]:
        """The same page with every item converted."""
        return Page([convert(item) for item in self.items], self.total, self.page, self.per_page)

    def envelope(self, items: Sequence[object]) -> dict[str, object]:
        """The API's list body: the items plus where they sit in the whole."""
        return {
            "items": list(items),
            "total": self.total,
            "page": self.page,
            "per_page": self.per_page,
        }


async def paginate(
    session: AsyncSession, statement: Select[Any], page: PageRequest, *, rows: bool = False
) -> Page[Any]:
    """One page of `statement`'s results and the count of them all.

    With `rows=True` the items are result rows (for statements that select several things),
    else the first column's values.
    """
    count = select(func.count()).select_from(statement.order_by(None).subquery())
    total = int(await session.scalar(count) or 0)
    result = await session.execute(statement.offset(page.offset).limit(page.per_page))
    items = list(result.all() if rows else result.scalars().all())
    return Page(items, total, page.page, page.per_page)


NOT_FILTERS = frozenset({"page", "sort"})
"""Parameters of a list that choose where to look, not what to keep."""


def filters_set(params: dict[str, object]) -> bool:
    """Whether a list's parameters narrow it down: an empty list then means "nothing
    matches", and without them "nothing yet" (a fresh site's lists say what to do first)."""
    return any(_given(value) for name, value in params.items() if name not in NOT_FILTERS)


def _given(value: object) -> bool:
    """A parameter with a value (an empty text, None or an unticked box is none)."""
    return value not in (None, "", False)


def query_string(params: dict[str, object], **changes: object) -> str:
    """`?a=1&b=2` from the current filters with some changed; empty values are dropped."""
    merged = {**params, **changes}
    kept = {k: v for k, v in merged.items() if _given(v)}
    return "?" + urlencode(kept) if kept else "?"
