"""Ending background tasks at shutdown: cancel, wait for each to end, never hang on one."""

from __future__ import annotations

import asyncio
import contextlib
import logging

import pytest

from app.core.tasks import cancel_and_wait


async def test_every_task_is_cancelled_and_has_ended_when_it_returns() -> None:
    ended: list[str] = []

    async def loop(name: str) -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.sleep(0.01)  # clean-up that itself awaits
            ended.append(name)

    tasks = [asyncio.create_task(loop(name)) for name in ("a", "b")]
    await asyncio.sleep(0)
    await cancel_and_wait(*tasks, None)
    assert sorted(ended) == ["a", "b"] and all(task.cancelled() for task in tasks)


async def test_a_task_that_failed_is_logged_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    async def broken() -> None:
        raise RuntimeError("boom")

    task = asyncio.create_task(broken())
    await asyncio.sleep(0)
    with caplog.at_level(logging.WARNING, logger="keel.tasks"):
        await cancel_and_wait(task)
    assert "boom" in caplog.text


async def test_a_task_that_swallows_its_cancellation_is_logged_and_left_after_the_bound(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            with contextlib.suppress(asyncio.CancelledError):  # the bug guarded against
                await asyncio.sleep(3600)

    task = asyncio.create_task(stubborn(), name="stubborn-loop")
    await asyncio.sleep(0)
    started = asyncio.get_running_loop().time()
    try:
        with caplog.at_level(logging.ERROR, logger="keel.tasks"):
            await cancel_and_wait(task, within=0.2)
        assert asyncio.get_running_loop().time() - started < 2
        (record,) = [r for r in caplog.records if r.name == "keel.tasks"]
        assert record.task == "stubborn-loop" and "stubborn" in record.stack
    finally:
        release.set()
        task.cancel()
        await asyncio.wait([task])


async def test_a_cancellation_of_the_caller_still_reaches_the_caller() -> None:
    async def slow_to_end() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            await asyncio.sleep(0.5)

    inner = asyncio.create_task(slow_to_end())
    await asyncio.sleep(0)
    outer = asyncio.create_task(cancel_and_wait(inner))
    await asyncio.sleep(0.05)
    outer.cancel()
    with pytest.raises(asyncio.CancelledError):
        await outer
    await asyncio.wait([inner])
