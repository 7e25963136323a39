"""The site's time zone on pages: which zone a request's pages show times in, and times
written and read in it (the forms' side, reading typed times, is app/core/times.py).

Stored times and the JSON API stay in UTC; only what a person reads or types is local.
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from datetime import UTC, datetime
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

ZONE_KEY = "keel.time_zone"
"""Where a request's state holds the site's time zone for the pages it renders
(`hold_zone`; filled before a page's handler runs, app/content/pages/public.py)."""
DEFAULT_ZONE = "UTC"
DATE_AND_TIME = "%Y-%m-%d %H:%M"
LOCAL_INPUT = "%Y-%m-%dT%H:%M"
"""What a `datetime-local` input holds."""


def zone_problem(name: str) -> str | None:
    """Why `name` is not a time zone Keel can use (an IANA name such as Europe/Berlin), or
    None when it is one."""
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return "Enter a time zone by its IANA name, such as Europe/Berlin, America/New_York or UTC."
    return None


@cache
def zone_named(name: str) -> ZoneInfo:
    """The zone called `name`; UTC when there is none of that name (a zone removed from the
    system's database since it was chosen: pages still show a time, in UTC)."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo(DEFAULT_ZONE)


def hold_zone(state: MutableMapping[str, Any], name: str) -> None:
    """Pages rendered for the request of `state` (`request.state`) show times in the zone
    called `name`."""
    state[ZONE_KEY] = zone_named(name)


def zone_of(state: Mapping[str, Any] | None) -> ZoneInfo:
    """The zone held for a request (UTC when none was: an API request, an e-mail)."""
    held = state.get(ZONE_KEY) if state is not None else None
    return held if isinstance(held, ZoneInfo) else zone_named(DEFAULT_ZONE)


def zone_abbreviation(moment: datetime) -> str:
    """CET, EDT, UTC; a zone without letters for its time (`+03`) as UTC+03."""
    name = moment.tzname() or ""
    return f"UTC{name}" if name[:1] in "+-" else name


def local_time(moment: datetime, zone: ZoneInfo, form: str = DATE_AND_TIME) -> str:
    """`moment` as a reader in `zone` sees it: `2027-03-01 09:00 CET`; a form with no hour
    in it (a date) gets no zone after it."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # stored times are UTC
    here = moment.astimezone(zone)
    shown = here.strftime(form)
    return f"{shown} {zone_abbreviation(here)}" if "%H" in form else shown


def local_input(moment: datetime | None, zone: ZoneInfo) -> str:
    """A `datetime-local` input's value for `moment`, in `zone` ("" for none)."""
    if moment is None:
        return ""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(zone).strftime(LOCAL_INPUT)
