"""Points in time a request carries, checked once: in UTC, within the years Keel handles.

Python's `datetime` ends with the year 9999: `9999-12-31T23:00-05:00` is a valid ISO 8601
time, and it overflows when it is converted to UTC (as the database column does) or a day
is added to it. Every time that comes in (a body field, a query parameter, a form field,
a CSV cell) goes through `utc_time` (or `parse_time` / `parse_day` for text), which refuses
anything outside EARLIEST..LATEST with a 400 that names the field; within them a time can
be converted and moved by days without leaving the type.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

from app.core.errors import InvalidField
from app.core.zones import DATE_AND_TIME

EARLIEST = datetime(1000, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 1, 1, tzinfo=UTC)
"""The first moment past the range (exclusive)."""
OUT_OF_RANGE = f"Give a time between the years {EARLIEST.year} and {LATEST.year - 1}."
NOT_A_TIME = (
    "Enter a date and time as YYYY-MM-DD HH:MM (ISO 8601), in UTC unless an offset follows "
    "(2030-01-31T09:00+02:00)."
)
NOT_A_DAY = "Enter a date as YYYY-MM-DD."
NOT_A_LOCAL_TIME = "Enter a date and time as YYYY-MM-DD HH:MM."


class InvalidTime(InvalidField):
    """A time or date a request carries cannot be read, or is outside EARLIEST..LATEST."""


def utc_time(moment: datetime, field: str) -> datetime:
    """`moment` in UTC (a time without an offset is UTC already); InvalidTime naming `field`
    when it is outside the range."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        moment = moment.astimezone(UTC)
    except OverflowError:
        raise InvalidTime(OUT_OF_RANGE, field) from None
    if not EARLIEST <= moment < LATEST:
        raise InvalidTime(OUT_OF_RANGE, field)
    return moment


def parse_time(text: str, field: str) -> datetime:
    """An ISO 8601 time (`2030-01-31T09:00Z`, `2030-01-31 09:00`; without an offset, UTC)."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidTime(NOT_A_TIME, field) from None
    return utc_time(moment, field)


def parse_day(text: str, field: str) -> date:
    """A date as YYYY-MM-DD, within the range (a day may be added to it)."""
    try:
        day = date.fromisoformat(text.strip())
    except ValueError:
        raise InvalidTime(NOT_A_DAY, field) from None
    if not EARLIEST.date() <= day < LATEST.date():
        raise InvalidTime(OUT_OF_RANGE, field)
    return day


def parse_local_time(text: str, field: str, zone: ZoneInfo) -> datetime:
    """A time typed in a form, read in `zone` unless it carries its own offset; in UTC.

    A wall time the zone skips (the hour the clocks go forward) is InvalidTime naming
    `field`; one it has twice (the hour they go back) is the first of the two, as a
    calendar does it."""
    try:
        typed = datetime.fromisoformat(text.strip())
    except ValueError:
        raise InvalidTime(NOT_A_LOCAL_TIME, field) from None
    if typed.tzinfo is not None:
        return utc_time(typed, field)
    if not EARLIEST.replace(tzinfo=None) < typed < LATEST.replace(tzinfo=None):
        raise InvalidTime(OUT_OF_RANGE, field)
    here = typed.replace(tzinfo=zone, fold=0)
    moment = utc_time(here, field)
    if moment.astimezone(zone).replace(tzinfo=None) != typed:
        raise InvalidTime(
            f"{typed.strftime(DATE_AND_TIME)} does not exist in {zone.key}: the clocks skip "
            "that hour. Give a time before or after it.",
            field,
        )
    return moment
