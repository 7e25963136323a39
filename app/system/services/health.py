"""Health of the process and its dependencies: for /health/ready and the admin dashboard."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field

from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine

from app.core import db as database
from app.core.store import Store


@dataclass
class ComponentHealth:
    name: str
    ok: bool
    latency_ms: float
    detail: str = ""


@dataclass
class Readiness:
    components: list[ComponentHealth] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return all(component.ok for component in self.components)

    @property
    def failing(self) -> list[str]:
        return [component.name for component in self.components if not component.ok]


async def _timed(name: str, probe: Awaitable[object], timeout: float) -> ComponentHealth:
    started = time.perf_counter()
    try:
        await asyncio.wait_for(probe, timeout)
    except TimeoutError:
        return ComponentHealth(name, False, _ms(started), f"no answer within {timeout:g}s")
    except Exception as exc:  # any failure of the probe means "not ready"
        return ComponentHealth(name, False, _ms(started), type(exc).__name__)
    return ComponentHealth(name, True, _ms(started))


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


async def check_readiness(engine: AsyncEngine, store: Store, timeout: float) -> Readiness:
    """Probe the database and the store concurrently, each within `timeout` seconds."""
    results = await asyncio.gather(
        _timed("database", database_answers(engine, timeout), timeout),
        _timed("store", store.ping(), timeout),
    )
    return Readiness(list(results))


async def database_answers(engine: AsyncEngine, timeout: float) -> None:
    """`SELECT 1` within `timeout`; once more, within what is left, when the connection it
    ran on turned out dead. Backends ended by a failover or an administrator leave dead
    connections in the pool until each is tried, and the database answers on the next one
    (a new connection, or one the pool checks first): one dead connection is no reason for
    a load balancer to drop the replica."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    try:
        await database.ping(engine, timeout)
    except (TimeoutError, PoolTimeoutError):
        raise  # no answer in time, or no connection free: trying again would not help
    except Exception as exc:
        if not database.is_unavailable(exc):
            raise
        await database.ping(engine, max(deadline - loop.time(), 0.001))
