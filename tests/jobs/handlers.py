"""Job types for the tests (loaded with JOB_MODULES=tests.jobs.handlers).

`test.record` appends `start <id> <attempt>` and `done <id>` lines to the file named in its
payload (O_APPEND lines do not interleave), so a test can count how often each job ran.
"""

from __future__ import annotations

import asyncio
import os
from dataclasses import dataclass

from sqlalchemy import text

from app.accounts.models import Role
from app.jobs.services.registry import JobContext, JobFailed, job_handler


@dataclass
class Record:
    path: str
    sleep: float = 0.0
    steps: int = 1
    fail_first: int = 0
    """Raise on the first attempts, succeed afterwards."""


def append(path: str, line: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        os.write(fd, (line + "\n").encode())
    finally:
        os.close(fd)


@job_handler("test.record", timeout=30, max_attempts=3, payload=Record, role=Role.editor)
async def record(ctx: JobContext[Record]) -> dict[str, int]:
    """Append start/done lines to a file; optionally sleep in steps, reporting progress."""
    append(ctx.payload.path, f"start {ctx.job_id} {ctx.attempt}")
    if ctx.attempt <= ctx.payload.fail_first:
        raise RuntimeError(f"planned failure on attempt {ctx.attempt}")
    for step in range(ctx.payload.steps):
        if ctx.payload.sleep:
            await asyncio.sleep(ctx.payload.sleep / ctx.payload.steps)
        await ctx.progress(100 * (step + 1) / ctx.payload.steps, f"step {step + 1}")
    append(ctx.payload.path, f"done {ctx.job_id}")
    return {"job": ctx.job_id}


@job_handler("test.permanent", max_attempts=5)
async def permanent(ctx: JobContext[dict[str, object]]) -> None:
    """Fail in a way no retry can fix."""
    raise JobFailed("the input can never work")


@job_handler("test.slow", timeout=0.2, max_attempts=2)
async def slow(ctx: JobContext[dict[str, object]]) -> None:
    """Take longer than its timeout."""
    await asyncio.sleep(5)


@job_handler("test.file", role=Role.viewer)
async def file(ctx: JobContext[dict[str, object]]) -> dict[str, int]:
    """Attach a small CSV result."""
    ctx.attach("numbers.csv", "n\n1\n2\n", "text/csv")
    return {"rows": 2}


@job_handler("test.odd_result")
async def odd_result(ctx: JobContext[dict[str, object]]) -> object:
    """Return a result PostgreSQL's JSON refuses (a NUL character) or no JSON at all."""
    if ctx.payload.get("kind") == "nul":
        return {"text": "before\x00after"}
    return {"when": object()}


@job_handler("test.database_error", max_attempts=2)
async def database_error(ctx: JobContext[dict[str, object]]) -> None:
    """Fail inside the database, as a bad import row once did: the error's text holds the
    statement and its parameters."""
    async with ctx.sessionmaker() as session, session.begin():
        statement = text("INSERT INTO no_such_table (secret) VALUES (:secret)")
        await session.execute(statement, {"secret": "hunter2"})
