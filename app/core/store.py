"""The shared key-value store: Valkey in production, process memory in embedded mode.

Everything that must be shared between processes (sessions, rate limits, cache
generations, worker heartbeats) goes through this one small interface.

When Valkey does not answer (a command times out or cannot connect), the store is taken
for down: every command fails at once with `StoreDown` (one of `StoreUnavailable`) instead
of waiting for its own socket timeout, while one background ping at a time asks whether
it answers again; the first answer puts it back in use (`Breaker`). Every caller already
copes with StoreUnavailable; `answering()` lets background loops wait for the store's
return instead of retrying on timers of their own.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import functools
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from typing import Any, Concatenate, ParamSpec, Protocol, TypeVar

from valkey.asyncio import Valkey
from valkey.exceptions import ConnectionError as ValkeyConnectionError
from valkey.exceptions import OutOfMemoryError, ReadOnlyError, ValkeyError
from valkey.exceptions import TimeoutError as ValkeyTimeoutError

from app.core.tasks import cancel_and_wait, stop_if_cancelled
from app.settings import StoreSettings

StoreUnavailable = (
    ValkeyConnectionError,
    ValkeyTimeoutError,
    ConnectionError,
    TimeoutError,
    OSError,
)
"""Exceptions that mean the store did not answer in time."""

StoreRefused = (OutOfMemoryError, ReadOnlyError)
"""Answers that refuse a write because of the server's state: full under `maxmemory`
without eviction, or a read-only replica. An outage of its writes, not a bug."""

StoreError = (ValkeyError, *StoreUnavailable)
"""Any failed store command: no answer (StoreUnavailable), or an answer that refuses it
(Valkey full under `maxmemory` without eviction, a read-only replica, a wrong password).
For callers that only save work with the store and must go on either way."""

log = logging.getLogger("keel.store")

PROBE_SECONDS = 0.25
"""While the store is taken for down, the pause between the background probe's pings (each
waits at most the socket timeout, so a paused server is asked about once a second)."""


UNANSWERED, SKIPPED, REFUSED = "unanswered", "skipped", "refused"
"""Why a store command failed (`keel_store_failures_total`'s reasons): it got no answer in
time, it was skipped while the store was taken for down, or the store answered with an
error (full, read-only, a wrong password)."""
Failures = Counter[tuple[str, str]]
"""Failed commands by (command, reason)."""


class StoreDown(ValkeyConnectionError):
    """Raised at once, without a round trip, while the store is taken for down."""


class Breaker:
    """The store's circuit breaker: open from the first command that did not reach the
    store until a background ping gets an answer. While open, commands raise StoreDown at
    once, so a request during an outage pays nothing for the store it cannot use."""

    def __init__(
        self, ping: Callable[[], Awaitable[object]], probe_every: float = PROBE_SECONDS
    ) -> None:
        self._ping = ping
        self.probe_every = probe_every
        self._closed = asyncio.Event()
        self._closed.set()
        self._probe: asyncio.Task[None] | None = None
        self._opened_at = 0.0

    @property
    def is_open(self) -> bool:
        return not self._closed.is_set()

    def check(self) -> None:
        if not self._closed.is_set():
            raise StoreDown("the store is not answering; skipped until a probe gets an answer")

    def trip(self, exc: BaseException) -> None:
        """A command did not reach the store: open, and start probing (once)."""
        if not self._closed.is_set():
            return
        self._closed.clear()
        self._opened_at = time.monotonic()
        log.warning(
            "store not answering; skipped until it answers a ping",
            extra={"error": f"{type(exc).__name__}: {exc}"},
        )
        self._probe = asyncio.get_running_loop().create_task(self._probe_until_answered())

    async def wait_closed(self) -> None:
        await self._closed.wait()

    async def _probe_until_answered(self) -> None:
        while True:
            stop_if_cancelled()
            await asyncio.sleep(self.probe_every)
            with contextlib.suppress(Exception):  # not answering yet: ask again
                await self._ping()
                break
        self._closed.set()
        down = round(time.monotonic() - self._opened_at, 3)
        log.info("store answering again", extra={"down_seconds": down})

    async def close(self) -> None:
        probe, self._probe = self._probe, None
        await cancel_and_wait(probe)


P = ParamSpec("P")
R = TypeVar("R")


def _through_breaker(
    command: Callable[Concatenate[ValkeyStore, P], Coroutine[Any, Any, R]],
) -> Callable[Concatenate[ValkeyStore, P], Coroutine[Any, Any, R]]:
    """Skip the command while the breaker is open; open it when the command fails to
    reach the store."""

    name = command.__name__

    @functools.wraps(command)
    async def guarded(self: ValkeyStore, *args: P.args, **kwargs: P.kwargs) -> R:
        self._admit(name)
        try:
            return await command(self, *args, **kwargs)
        except StoreError as exc:
            self._failed(name, exc)
            raise

    return guarded


class Store(Protocol):
    kind: str

    async def get(self, key: str) -> bytes | None: ...
    async def set(self, key: str, value: bytes | str, ttl: float | None = None) -> None: ...
    async def delete(self, *keys: str) -> int: ...
    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int: ...
    async def keys(self, pattern: str) -> list[str]: ...
    async def memory_used(self) -> int | None:
        """Bytes the store holds in memory (None: it cannot tell)."""
        ...

    async def ping(self) -> None: ...
    async def close(self) -> None: ...
    async def take(self, key: str) -> bytes | None: ...
    async def publish(self, channel: str, message: str) -> None: ...
    def listen(self, channel: str) -> AsyncIterator[bytes]: ...
    def take_failures(self) -> Failures: ...
    async def incr_hashes(
        self,
        hashes: Mapping[str, Mapping[str, int | float]],
        ttls: Mapping[str, float] | None = None,
    ) -> None: ...
    async def read_fields(self, key: str) -> dict[str, float]: ...
    async def take_fields(self, key: str) -> dict[str, float]: ...
    async def answering(self) -> None:
        """Return once the store is believed to answer: at once, unless a command just
        failed to reach it; then as soon as the store's probe gets an answer."""
        ...


class MemoryStore:
    """A dict with expiry times, for one process. Refused when more than one worker runs."""

    kind = "memory"

    def __init__(self) -> None:
        self._data: dict[str, tuple[bytes, float | None]] = {}
        self._lock = asyncio.Lock()
        self._subscribers: dict[str, set[asyncio.Queue[bytes]]] = {}
        self._fields: dict[str, dict[str, float]] = {}

    def take_failures(self) -> Failures:
        return Counter()  # process memory does not fail

    def _live(self, key: str) -> bytes | None:
        entry = self._data.get(key)
        if entry is None:
            return None
        value, expires = entry
        if expires is not None and expires <= time.monotonic():
            del self._data[key]
            return None
        return value

    async def get(self, key: str) -> bytes | None:
        return self._live(key)

    async def set(self, key: str, value: bytes | str, ttl: float | None = None) -> None:
        data = value.encode() if isinstance(value, str) else value
        self._data[key] = (data, time.monotonic() + ttl if ttl else None)

    async def delete(self, *keys: str) -> int:
        return sum(self._data.pop(key, None) is not None for key in keys)

    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        async with self._lock:
            current = self._live(key)
            value = int(current or 0) + amount
            expires = self._data[key][1] if current is not None else None
            if current is None and ttl:
                expires = time.monotonic() + ttl
            self._data[key] = (str(value).encode(), expires)
            return value

    async def keys(self, pattern: str) -> list[str]:
        values = [key for key in list(self._data) if self._live(key)]
        return [key for key in [*values, *self._fields] if fnmatch.fnmatchcase(key, pattern)]

    async def ping(self) -> None:
        return None

    async def memory_used(self) -> int | None:
        """The values' bytes (what the dict itself takes is not counted)."""
        return sum(len(value) for value, _ in self._data.values())

    async def close(self) -> None:
        self._data.clear()
        self._fields.clear()

    async def take(self, key: str) -> bytes | None:
        """Read and delete in one step."""
        value = self._live(key)
        self._data.pop(key, None)
        return value

    async def publish(self, channel: str, message: str) -> None:
        for queue in self._subscribers.get(channel, set()):
            queue.put_nowait(message.encode())

    async def listen(self, channel: str) -> AsyncIterator[bytes]:
        queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._subscribers.setdefault(channel, set()).add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._subscribers[channel].discard(queue)

    async def incr_hashes(
        self,
        hashes: Mapping[str, Mapping[str, int | float]],
        ttls: Mapping[str, float] | None = None,
    ) -> None:
        """Add to numeric fields of several hashes at once (kept while the process runs:
        the expiry `ttls` gives is Valkey's)."""
        for key, amounts in hashes.items():
            fields = self._fields.setdefault(key, {})
            for field, amount in amounts.items():
                fields[field] = fields.get(field, 0) + amount

    async def read_fields(self, key: str) -> dict[str, float]:
        return dict(self._fields.get(key, {}))

    async def take_fields(self, key: str) -> dict[str, float]:
        """Read and delete a hash in one step."""
        return self._fields.pop(key, {})

    async def answering(self) -> None:
        return None


_INCR_WITH_TTL = """
local count = redis.call('INCRBY', KEYS[1], ARGV[1])
if redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return count
"""


class ValkeyStore:
    """Valkey (or Redis) with connect and socket timeouts, behind a circuit breaker: a hung
    server costs one socket timeout, then nothing until it answers again."""

    kind = "valkey"

    def __init__(self, settings: StoreSettings) -> None:
        self.prefix = settings.key_prefix
        self.client = Valkey.from_url(
            settings.url,
            socket_connect_timeout=settings.connect_timeout,
            socket_timeout=settings.socket_timeout,
            health_check_interval=30,
            retry_on_timeout=False,
        )
        self._incr_with_ttl = self.client.register_script(_INCR_WITH_TTL)
        self.breaker = Breaker(self.client.ping)
        self.failures: Failures = Counter()
        """Failed commands not yet handed to a tally (`take_failures`)."""

    def _admit(self, command: str) -> None:
        """Let `command` through unless the store is taken for down (counted as skipped)."""
        try:
            self.breaker.check()
        except StoreDown:
            self.failures[(command, SKIPPED)] += 1
            raise

    def _failed(self, command: str, exc: BaseException) -> None:
        """Count a failed command; one that got no answer takes the store for down."""
        if isinstance(exc, StoreUnavailable):
            self.failures[(command, UNANSWERED)] += 1
            self.breaker.trip(exc)
        else:
            self.failures[(command, REFUSED)] += 1

    def take_failures(self) -> Failures:
        """What failed since the last call (counted again from nothing)."""
        taken, self.failures = self.failures, Counter()
        return taken

    def _key(self, key: str) -> str:
        return self.prefix + key

    @_through_breaker
    async def get(self, key: str) -> bytes | None:
        return await self.client.get(self._key(key))

    @_through_breaker
    async def set(self, key: str, value: bytes | str, ttl: float | None = None) -> None:
        await self.client.set(self._key(key), value, px=int(ttl * 1000) if ttl else None)

    @_through_breaker
    async def delete(self, *keys: str) -> int:
        if not keys:
            return 0
        return int(await self.client.delete(*(self._key(key) for key in keys)))

    @_through_breaker
    async def incr(self, key: str, amount: int = 1, ttl: float | None = None) -> int:
        """Add `amount`; with `ttl`, the key expires `ttl` seconds after it was made (a later
        call never extends it). One script, one command: cheaper than a MULTI/EXEC pipeline,
        and the API rate limit runs it on every request (docs/performance.md)."""
        if not ttl:
            return int(await self.client.incrby(self._key(key), amount))
        return int(await self._incr_with_ttl(keys=[self._key(key)], args=[amount, int(ttl * 1000)]))

    @_through_breaker
    async def keys(self, pattern: str) -> list[str]:
        found = [key async for key in self.client.scan_iter(match=self._key(pattern), count=500)]
        return [key.decode()[len(self.prefix) :] for key in found]

    async def ping(self) -> None:
        """A health check (/health/ready, `keel check`): asks the server itself, never the
        breaker, and leaves the breaker as it is."""
        await self.client.ping()

    @_through_breaker
    async def memory_used(self) -> int | None:
        used = (await self.client.info("memory")).get("used_memory")
        return int(used) if used is not None else None

    async def close(self) -> None:
        await self.breaker.close()
        await self.client.aclose()

    async def answering(self) -> None:
        await self.breaker.wait_closed()

    @_through_breaker
    async def take(self, key: str) -> bytes | None:
        """Read and delete in one step (GETDEL), so concurrent takers never both get it."""
        return await self.client.getdel(self._key(key))

    @_through_breaker
    async def publish(self, channel: str, message: str) -> None:
        await self.client.publish(self._key(channel), message)

    async def listen(self, channel: str) -> AsyncIterator[bytes]:
        """Messages on `channel` until cancelled; raises StoreUnavailable when cut off (at
        once while the store is taken for down)."""
        self._admit("listen")
        pubsub = self.client.pubsub(ignore_subscribe_messages=True)
        try:
            await pubsub.subscribe(self._key(channel))
            while True:
                stop_if_cancelled()
                message = await pubsub.get_message(timeout=1.0)
                if message is not None and message.get("type") == "message":
                    yield message["data"]
        except StoreError as exc:
            self._failed("listen", exc)
            raise
        finally:
            with contextlib.suppress(Exception):
                await pubsub.aclose()

    @_through_breaker
    async def incr_hashes(
        self,
        hashes: Mapping[str, Mapping[str, int | float]],
        ttls: Mapping[str, float] | None = None,
    ) -> None:
        """Add to fields of several hashes in one round trip, all or none (MULTI/EXEC); a
        hash in `ttls` expires that many seconds after its last addition."""
        if not any(hashes.values()):
            return
        async with self.client.pipeline(transaction=True) as pipe:
            for key, amounts in hashes.items():
                full = self._key(key)
                for field, amount in amounts.items():
                    if isinstance(amount, int):
                        pipe.hincrby(full, field, amount)
                    else:
                        pipe.hincrbyfloat(full, field, amount)
                if ttls and key in ttls and amounts:
                    pipe.pexpire(full, int(ttls[key] * 1000))
            await pipe.execute()

    @_through_breaker
    async def read_fields(self, key: str) -> dict[str, float]:
        raw = await self.client.hgetall(self._key(key))
        return {field.decode(): float(value) for field, value in raw.items()}

    @_through_breaker
    async def take_fields(self, key: str) -> dict[str, float]:
        """Read and delete a hash in one step (MULTI: HGETALL, DEL), so concurrent takers
        never both get it."""
        full = self._key(key)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hgetall(full)
            pipe.delete(full)
            raw, _ = await pipe.execute()
        return {field.decode(): float(value) for field, value in raw.items()}


def create_store(settings: StoreSettings) -> Store:
    return MemoryStore() if settings.is_memory else ValkeyStore(settings)
