"""The public page cache: an in-process level in front of the store, kept coherent by a
generation number that every process learns about through the store's pub/sub.

Anonymous GET responses of routes marked `opt={"public_cache": True}` are cached under
`page:<generation>:<path>?<query>`. Any change visitors could see calls `invalidate()`:
it increments the generation in the store and publishes it, so every replica drops its
in-process entries at once. If a message is missed, each process re-reads the generation
at most every `REVALIDATE_SECONDS` (the bounded staleness). A hit costs no store round
trip; a page the process holds is answered in front of the router (`PageCacheFront`).

When the store fails (it does not answer, or refuses a command: full, read-only), nothing
raises: pages are served uncached and `degraded` is set for /health/ready. A process that
saw the store fail owes a new generation (`Invalidations`): a change committed meanwhile,
here or in a process whose bump failed too, left no trace in the generation, so nothing
cached before the outage is used again. The bump is retried as soon as the store answers
(its probe, `Store.answering()`), and the cache is used again from the new generation on.
So an edit made during an outage reaches every process within moments of the store
answering again, not after the pages' TTL.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from app.core.clock import current_clock
from app.core.csrf import PUBLIC_PAGE_OPT
from app.core.errors import log_failure
from app.core.events import Event
from app.core.metrics import Metric, Tally, counter_key, stored
from app.core.store import Store, StoreError
from app.core.tasks import cancel_and_wait

log = logging.getLogger("keel.cache")
GENERATION_KEY = "cache:generation"
CHANNEL = "cache:invalidate"
REVALIDATE_SECONDS = 2.0
RETRY_SECONDS = 0.5
"""The least pause between two tries of an owed generation bump, and before a lost
invalidation channel is subscribed again."""
STOP_SECONDS = 2.0
"""How long a stopping process waits for the store to take a generation it still owes."""
LOCAL_ENTRIES = 2048
MEMO_SECONDS = 60.0
T = TypeVar("T")
PUBLIC_CACHE = {PUBLIC_PAGE_OPT: True}
"""The `opt` of a route whose anonymous GETs the page cache may keep (pages and API alike)."""
CACHE_REQUESTS = stored(
    Metric(
        "keel_page_cache_requests_total",
        "counter",
        "Requests of the routes the page cache serves, by result: hit (answered from the "
        "cache), miss (rendered and kept), bypass (rendered for a signed-in caller, a "
        "request the cache may not keep, or while the store fails).",
        ("result",),
    )
)
HIT, MISS, BYPASS = ("hit",), ("miss",), ("bypass",)
"""The label values of `CACHE_REQUESTS`."""


@dataclass
class CachedPage:
    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    etag: bytes
    expires: float
    view: str | None = None
    route: str | None = None
    """The route's path template (the request figures' label for hits served in front)."""
    encoded: dict[str, bytes] = field(default_factory=dict)
    """The body compressed at fill, by Content-Encoding (app/core/compression.py), so a
    hit does no compression work; empty for a small or already compressed body."""
    sent: dict[str | None, list[tuple[bytes, bytes]]] = field(default_factory=dict, compare=False)
    """The headers PageCacheFront sends with this page, by variant (made at its first hit
    in this process; never stored)."""


class PageCache:
    def __init__(
        self,
        store: Store,
        ttl: float,
        next_publication: Callable[[], Awaitable[float | None]] | None = None,
        figures: Tally | None = None,
    ) -> None:
        self.store = store
        self.figures = figures or Tally()
        """Where hits, misses and bypasses are counted (`count`): the process's tally."""
        self._hit_key = counter_key(CACHE_REQUESTS, HIT)
        self.ttl = ttl
        self.next_publication = next_publication
        """When the next scheduled entry becomes public (epoch seconds): no cached page
        may outlive that moment, or a scheduled post would appear late."""
        self.generation = 0
        self._prefix = "0:"
        """`{generation}:`, the start of the local keys of the current generation."""
        self.checked_at = 0.0
        self.invalidations = Invalidations(store, adopt=self._adopt)
        self.local: OrderedDict[str, CachedPage] = OrderedDict()
        self.memo: dict[str, tuple[int, float, Any]] = {}
        """Values derived from public content (site settings, the menu): generation, expiry
        and value, dropped with the generation like the pages."""
        self._publication: tuple[int, float | None] | None = None
        self._loading: dict[tuple[str, int | None], asyncio.Task[Any]] = {}
        """Loads in flight (memo values, the publication bound) by name and generation."""
        self._listener: asyncio.Task[None] | None = None

    def count(self, result: tuple[str]) -> None:
        """One request of a cached route answered as `result` (HIT, MISS, BYPASS)."""
        self.figures.add(CACHE_REQUESTS, result)

    # -- coherence ---------------------------------------------------------------------
    async def start(self) -> None:
        """Learn the generation and follow invalidations pushed by other processes."""
        await self.current_generation(force=True)
        self._listener = asyncio.create_task(self._follow())

    async def stop(self) -> None:
        await cancel_and_wait(self._listener)
        await self.invalidations.stop()

    @property
    def degraded(self) -> bool:
        """The store failed, and the new generation owed since is not stored yet: pages
        are rendered uncached meanwhile (/health/ready says so)."""
        return self.invalidations.owed

    def store_failed(self, exc: BaseException) -> None:
        """The store did not answer: use nothing cached until a new generation, started
        as soon as it answers (see the module docstring)."""
        self._forget()
        self.invalidations.owe(exc)

    async def _follow(self) -> None:
        while True:
            try:
                async for raw in self.store.listen(CHANNEL):
                    self._adopt(int(raw))
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # store gone: subscribe again once it answers
                self.store_failed(exc)
                log.warning("cache invalidation channel lost", extra={"error": repr(exc)})
                await asyncio.sleep(RETRY_SECONDS)
                await self.store.answering()

    def _adopt(self, generation: int) -> None:
        if generation != self.generation:
            self.generation = generation
            self._prefix = f"{generation}:"
            self._forget()
        self.checked_at = time.monotonic()

    async def current_generation(self, force: bool = False) -> int | None:
        """The generation, re-read from the store at most every REVALIDATE_SECONDS; None
        while a new one is owed (nothing cached may be used or kept)."""
        if self.invalidations.owed:
            return None
        if not force and time.monotonic() - self.checked_at < REVALIDATE_SECONDS:
            return self.generation
        try:
            raw = await self.store.get(GENERATION_KEY)
        except StoreError as exc:
            self.store_failed(exc)
            return None
        self._adopt(int(raw or 0))
        return self.generation

    async def on_public_change(self, _event: Event) -> None:
        """Subscribed to `PUBLIC_CHANGED` (app/core/events.py): visitors see something new."""
        await self.invalidate()

    async def invalidate(self) -> None:
        """Everything cached is stale now, on every replica (once the store answers, if it
        does not now)."""
        self._forget()
        await self.invalidations.bump()

    def _forget(self) -> None:
        self.local.clear()
        self.memo.clear()
        self._publication = None

    async def publication_bound(self) -> float | None:
        """When the next scheduled entry becomes public (epoch seconds): nothing cached may
        outlive it. Asked once per generation, and again once that moment has passed. Ask
        it before reading what will be kept: asked after, a publication that happened in
        between is already past, and the next one would let content from before it live on."""
        if self.next_publication is None:
            return None
        held = self._publication
        if (
            held is None
            or held[0] != self.generation
            or (held[1] or math.inf) <= current_clock().time()
        ):
            generation = self.generation
            moment = await self._once("publication", generation, self.next_publication)
            held = self._publication = (generation, moment)
        return held[1]

    async def remember(self, name: str, load: Callable[[], Awaitable[T]]) -> T:
        """`load()`'s value, kept in the process under the current generation (so any public
        change, on any replica, drops it) for at most MEMO_SECONDS and never past the next
        scheduled publication. Without the store's generation nothing is kept."""
        generation = await self.current_generation()
        held = self.memo.get(name)
        if held is not None and held[0] == generation and held[1] > current_clock().time():
            return held[2]

        async def load_and_keep() -> T:
            moment = await self.publication_bound() if generation is not None else None
            value = await load()
            if generation is not None:
                expires = current_clock().time() + MEMO_SECONDS
                self.memo[name] = (generation, min(expires, moment or expires), value)
            return value

        return await self._once("memo:" + name, generation, load_and_keep)

    async def _once(self, name: str, generation: int | None, load: Callable[[], Awaitable[T]]) -> T:
        """`load()` run once for every caller that asks while it runs (a new generation
        sends every request in flight here at once). It runs as its own task, so a caller
        that is cancelled (a client gone) does not cancel it for the others."""
        key = (name, generation)
        task = self._loading.get(key)
        if task is None:
            task = asyncio.ensure_future(load())
            self._loading[key] = task
            task.add_done_callback(partial(self._loaded, key))
        return await asyncio.shield(task)

    def _loaded(self, key: tuple[str, int | None], task: asyncio.Task[Any]) -> None:
        if self._loading.get(key) is task:
            del self._loading[key]
        if not task.cancelled():
            task.exception()  # retrieved: every waiter may have gone

    # -- entries -----------------------------------------------------------------------
    def held(self, key: str, now: float) -> CachedPage | None:
        """The page if this process holds it under a generation it knows to be current
        (learned within REVALIDATE_SECONDS and the store answering); no awaiting, no store
        round trip. None sends the request down the full path, which revalidates. `now`:
        the current clock's time."""
        if self.invalidations.owed or time.monotonic() - self.checked_at >= REVALIDATE_SECONDS:
            return None
        return self._local(self._prefix + key, now)

    def count_hit(self) -> None:
        """`count(HIT)` for the page cache front, without building the key each time."""
        self.figures.pending[self._hit_key] += 1

    def _local(self, full: str, now: float) -> CachedPage | None:
        """The page this process keeps under `full` (`{generation}:{key}`), unexpired."""
        page = self.local.get(full)
        if page is None or page.expires <= now:
            return None
        self.local.move_to_end(full)
        return page

    async def get(self, key: str, generation: int) -> CachedPage | None:
        """The page cached under `generation` (the current one, which the caller read)."""
        now = current_clock().time()
        full = f"{generation}:{key}"
        page = self._local(full, now)
        if page is not None:
            return page
        try:
            raw = await self.store.get("page:" + full)
        except StoreError as exc:
            self.store_failed(exc)
            return None
        if raw is None:
            return None
        page = _decode(raw)
        if page.expires <= now:
            return None
        self._remember(full, page)
        return page

    async def put(self, key: str, page: CachedPage, generation: int, moment: float | None) -> None:
        """Keep `page` under `generation` until at most `moment`, the generation and the
        publication bound read before its content was: a change or a publication between
        then and now would otherwise leave the old content in use until the TTL ran out."""
        if moment is not None:
            page.expires = min(page.expires, moment)
        if page.expires <= current_clock().time():
            return
        full = f"{generation}:{key}"
        self._remember(full, page)
        try:
            ttl = max(page.expires - current_clock().time(), 0.001)
            await self.store.set("page:" + full, _encode(page), ttl=ttl)
        except StoreError as exc:
            self.store_failed(exc)

    def _remember(self, key: str, page: CachedPage) -> None:
        self.local[key] = page
        self.local.move_to_end(key)
        while len(self.local) > LOCAL_ENTRIES:
            self.local.popitem(last=False)


def _encode(page: CachedPage) -> bytes:
    head = {
        "status": page.status,
        "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in page.headers],
        "etag": page.etag.decode(),
        "expires": page.expires,
        "view": page.view,
        "route": page.route,
        "encoded": {coding: len(body) for coding, body in page.encoded.items()},
    }
    return b"".join((json.dumps(head).encode(), b"\n", page.body, *page.encoded.values()))


def _decode(raw: bytes) -> CachedPage:
    head, _, rest = raw.partition(b"\n")
    meta = json.loads(head)
    lengths: dict[str, int] = meta.get("encoded", {})
    offset = len(rest) - sum(lengths.values())
    body, encoded = rest[:offset], {}
    for coding, length in lengths.items():
        encoded[coding] = rest[offset : offset + length]
        offset += length
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in meta["headers"]]
    return CachedPage(
        meta["status"],
        headers,
        body,
        meta["etag"].encode(),
        meta["expires"],
        meta.get("view"),
        meta.get("route"),
        encoded,
    )


async def bump_generation(store: Store) -> int:
    """Make every cached page stale on every replica: a new generation, published."""
    generation = await store.incr(GENERATION_KEY)
    await store.publish(CHANNEL, str(generation))
    return generation


class Invalidations:
    """A process's generation bumps. One the store did not take is owed, never dropped:
    tried again as soon as the store answers (`Store.answering()`), until it is stored and
    published, and once more when the process stops. `adopt` receives each generation
    this process started."""

    def __init__(self, store: Store, adopt: Callable[[int], None] | None = None) -> None:
        self.store = store
        self.adopt = adopt
        self.owed = False
        self._owed_since = 0.0
        self._retry: asyncio.Task[None] | None = None

    async def on_public_change(self, _event: Event) -> None:
        """Subscribed to `PUBLIC_CHANGED` in a process that has no page cache of its own (a
        worker): what `PageCache.on_public_change` does in one."""
        await self.bump()

    async def bump(self) -> bool:
        """Start a new generation now; False when the store did not take it (then owed).
        Never raises for the store: it runs after a COMMIT, and the change is made."""
        try:
            generation = await bump_generation(self.store)
        except StoreError as exc:
            self.owe(exc)
            return False
        self._started(generation)
        return True

    def _started(self, generation: int) -> None:
        if self.owed:
            owed = round(time.monotonic() - self._owed_since, 3)
            log.info(
                "owed cache generation started",
                extra={"generation": generation, "owed_seconds": owed},
            )
        self.owed = False
        if self.adopt is not None:
            self.adopt(generation)

    def owe(self, exc: BaseException) -> None:
        """Start a new generation as soon as the store answers (and takes it)."""
        if not self.owed:
            message = "new cache generation owed; started when the store takes it"
            log_failure(log, message, exc, logging.WARNING)
            self._owed_since = time.monotonic()
        self.owed = True
        if self._retry is None or self._retry.done():
            self._retry = asyncio.get_running_loop().create_task(self._bump_when_answering())

    async def _bump_when_answering(self) -> None:
        while self.owed:
            await self.store.answering()
            if await self.bump():
                return
            await asyncio.sleep(RETRY_SECONDS)  # answering, but refusing (full, read-only)

    async def stop(self, within: float = STOP_SECONDS) -> None:
        """Stop retrying. A generation still owed is tried once more, waiting at most
        `within` seconds for the store to answer; one not stored is logged as an error,
        since the other processes may never learn of the change it stood for."""
        retry, self._retry = self._retry, None
        await cancel_and_wait(retry)
        if not self.owed:
            return
        try:
            async with asyncio.timeout(within):
                await self.store.answering()
                generation = await bump_generation(self.store)
        except StoreError as exc:  # TimeoutError (ours, or the store's) is one of them
            log.error(
                "stopping with a new cache generation owed and not stored: pages cached "
                "before a change made while the store failed may be served until their TTL",
                extra={
                    "owed_seconds": round(time.monotonic() - self._owed_since, 3),
                    "error": f"{type(exc).__name__}: {exc}",
                },
            )
            return
        self._started(generation)
