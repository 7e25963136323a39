"""The shared store: memory (embedded) and Valkey (services) behave the same."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from app.core.store import Store, StoreUnavailable, ValkeyStore, create_store
from app.settings import Settings, StoreSettings
from tests.conftest import free_port
from tests.private_valkey import private_valkey


async def test_values_round_trip_and_can_be_deleted(store: Store) -> None:
    await store.set("greeting", "hello")
    assert await store.get("greeting") == b"hello"
    assert await store.delete("greeting", "never-set") == 1
    assert await store.get("greeting") is None


async def test_values_expire_after_their_ttl(store: Store) -> None:
    await store.set("short", b"x", ttl=0.05)
    await store.set("long", b"y", ttl=30)
    await asyncio.sleep(0.1)
    assert await store.get("short") is None
    assert await store.get("long") == b"y"


async def test_counters_increment_and_keep_their_first_expiry(store: Store) -> None:
    assert await store.incr("hits", ttl=0.2) == 1
    assert await store.incr("hits", amount=4, ttl=30) == 5
    await asyncio.sleep(0.3)
    assert await store.get("hits") is None, "a later incr must not extend the window"


async def test_keys_are_listed_by_pattern(store: Store) -> None:
    await store.set("workers:a", "1")
    await store.set("workers:b", "1")
    await store.set("other", "1")
    assert sorted(await store.keys("workers:*")) == ["workers:a", "workers:b"]


async def test_two_clients_of_one_valkey_share_state(services_settings: Settings) -> None:
    """What one process writes, another reads (the memory store is per process by design)."""
    shared = services_settings.store
    first, second = create_store(shared), create_store(shared)
    await first.set("shared", "yes")
    assert await second.get("shared") == b"yes"
    await first.close()
    await second.close()


async def test_an_unreachable_valkey_fails_fast() -> None:
    store = ValkeyStore(
        StoreSettings(url=f"redis://127.0.0.1:{free_port()}/0", connect_timeout=0.5)
    )
    with pytest.raises(StoreUnavailable):
        await asyncio.wait_for(store.get("x"), 5)
    await store.close()


@contextlib.asynccontextmanager
async def silent_server() -> AsyncIterator[int]:
    """A TCP server that accepts connections and never answers: a hung Valkey."""
    connections: list[asyncio.StreamWriter] = []

    async def accept(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in connections:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_hung_valkey_times_out_instead_of_stalling() -> None:
    async with silent_server() as port:
        store = ValkeyStore(StoreSettings(url=f"redis://127.0.0.1:{port}/0", socket_timeout=0.3))
        with pytest.raises(StoreUnavailable):
            # A generous outer bound: without the socket timeout this would wait forever.
            await asyncio.wait_for(store.get("x"), 5)
        await store.close()


async def test_a_paused_valkey_is_skipped_until_a_probe_gets_an_answer() -> None:
    """After one command times out, the next ones fail at once instead of each waiting for
    the socket timeout; a background ping puts the store back in use as soon as it answers.
    (Loose bounds: ten commands that each waited would take 20 s; speed is for bench/.)"""
    with private_valkey() as valkey:
        store = ValkeyStore(StoreSettings(url=valkey.url, socket_timeout=2.0))
        try:
            await store.set("kept", "yes")
            valkey.pause()
            with pytest.raises(StoreUnavailable):
                await store.get("kept")  # this one waits for its socket timeout
            started = time.monotonic()
            for _ in range(10):
                with pytest.raises(StoreUnavailable):
                    await store.incr("counted")
            assert time.monotonic() - started < 5, "the paused store was not skipped"
            valkey.resume()
            await asyncio.wait_for(store.answering(), 15)
            assert await store.get("kept") == b"yes"
            assert await store.get("counted") is None, "a skipped command never ran"
        finally:
            valkey.resume()
            await store.close()


async def test_a_store_that_answers_is_answering(store: Store) -> None:
    await asyncio.wait_for(store.answering(), 1)
