"""The read-only connections (app/core/reads.py) under load, on both legs."""

from __future__ import annotations

import asyncio
from dataclasses import replace

from sqlalchemy import text

from app.asgi import create_app
from app.core.reads import ReadQuery
from app.settings import Settings
from tests.conftest import client_for

SLOW_READ = {
    "postgresql": "SELECT pg_sleep(2)",
    "sqlite": "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 2000000) "
    "SELECT count(*) FROM n",
}
"""A read that holds its connection for a second or more."""


async def test_reads_that_wait_past_the_pool_timeout_say_the_service_is_busy(
    settings: Settings,
) -> None:
    """Like a full pool (item 17 of issue 12): 503 with Retry-After, "busy", not a 500 and
    not "the database is not answering"."""
    db = replace(settings.db, read_pool_size=1, pool_timeout=0.2)
    app = create_app(replace(settings, db=db))
    slow = ReadQuery(text(SLOW_READ["sqlite" if db.is_sqlite else "postgresql"]))
    try:
        holding = asyncio.create_task(app.state.reads.all(slow))  # the only connection
        await asyncio.sleep(0.05)
        async with client_for(app) as client:
            response = await client.get("/api/v1/content")
        await holding
        async with client_for(app) as client:  # given back: the same app reads again
            again = await client.get("/api/v1/content")
    finally:
        await app.state.reads.close()
        await app.state.engine.dispose()
        await app.state.store.close()
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"]
    assert response.json()["detail"].startswith("The service is busy right now")
    assert again.status_code == 200
