"""Finding the links of an entry's HTML, and asking each address whether it answers."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import urldefrag, urljoin, urlsplit

import httpx

LINK_ATTRIBUTES = {"a": "href", "img": "src"}
"""The elements whose addresses are checked, and the attribute holding each."""
CHECKED_SCHEMES = ("http", "https")
"""Anything else (mailto:, tel:, javascript:, data:, ...) is not a link to check."""
HEAD_REFUSED = (405, 501)
"""Answers to HEAD that mean "ask with GET" (Method Not Allowed, Not Implemented)."""
MAX_REDIRECTS = 5
"""A longer chain of redirects counts as broken."""
CONCURRENCY = 8
"""Links checked at the same time."""


class _LinkParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = LINK_ATTRIBUTES.get(tag)
        for name, value in attrs:
            if name == wanted and value:
                self.found.append(value)


def links_in(html: str, page_url: str) -> list[str]:
    """The distinct http(s) addresses that `html`'s links and images point to, resolved
    against `page_url` (where the entry is read) and without their #fragment; links to a
    place on the same page, and other schemes (mailto:, tel:, javascript:) are left out."""
    parser = _LinkParser()
    parser.feed(html)
    parser.close()
    found: dict[str, None] = {}
    for value in parser.found:
        value = value.strip()
        if not value or value.startswith("#"):
            continue
        address, _ = urldefrag(urljoin(page_url, value))
        try:
            parts = urlsplit(address)
        except ValueError:  # an address that is no URL at all ("http://[oops")
            continue
        if parts.scheme.lower() in CHECKED_SCHEMES and parts.hostname:
            found[address] = None
    return list(found)


@dataclass(frozen=True)
class Outcome:
    """What one address answered: its final status (after redirects), or why none came."""

    url: str
    status: int | None
    error: str | None = None

    @property
    def broken(self) -> bool:
        return self.error is not None or self.status is None or self.status >= 400


async def check_link(client: httpx.AsyncClient, url: str, timeout: float) -> Outcome:
    """HEAD (GET when HEAD is refused), redirects followed up to MAX_REDIRECTS, all within
    `timeout` seconds."""
    try:
        async with asyncio.timeout(timeout):
            response = await client.head(url)
            if response.status_code in HEAD_REFUSED:
                async with client.stream("GET", url) as response:
                    pass  # the status is enough: the body is never read
    except TimeoutError:
        return Outcome(url, None, f"no answer within {timeout:g} s")
    except httpx.TooManyRedirects:
        return Outcome(url, None, f"more than {MAX_REDIRECTS} redirects")
    except httpx.ConnectError:
        return Outcome(url, None, "could not connect")
    except (httpx.HTTPError, httpx.InvalidURL, ValueError) as exc:
        return Outcome(url, None, f"{type(exc).__name__}: {exc}"[:200])
    return Outcome(url, response.status_code)


async def check_links(
    urls: Iterable[str], *, timeout: float, deadline: float, user_agent: str
) -> list[Outcome]:
    """Check `urls`, CONCURRENCY at a time; a check starts only while it can end (its
    `timeout`) before `deadline` (a `time.monotonic()` value). The ones left unchecked are
    not in the answer."""
    pending = list(urls)
    outcomes: list[Outcome] = []
    limits = httpx.Limits(max_connections=CONCURRENCY)
    async with httpx.AsyncClient(
        follow_redirects=True,
        max_redirects=MAX_REDIRECTS,
        timeout=timeout,
        limits=limits,
        headers={"User-Agent": user_agent},
    ) as client:

        async def worker() -> None:
            while pending:
                if deadline - time.monotonic() < timeout:
                    return
                url = pending.pop(0)
                outcomes.append(await check_link(client, url, timeout))

        async with asyncio.TaskGroup() as group:
            for _ in range(CONCURRENCY):
                group.create_task(worker())
    return outcomes
