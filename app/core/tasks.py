"""Ending background tasks: cancel them and wait until each has ended, never forever."""

from __future__ import annotations

import asyncio
import io
import logging
from typing import Any

log = logging.getLogger("keel.tasks")

END_SECONDS = 10.0
"""How long a cancelled task may take to end (its clean-up) before it is left running."""


def stop_if_cancelled() -> None:
    """At the top of each round of a background loop: end the task (cancelled) if it was
    asked to stop during the last round. asyncio cancels a task once, and a cancellation
    that meets a database or store command can come out of it as another error (the
    connection torn down mid-command), which the loop's `except Exception` takes for a failed
    round: without this the loop goes on until `cancel_and_wait` gives up on it."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def cancel_and_wait(*tasks: asyncio.Task[Any] | None, within: float = END_SECONDS) -> None:
    """Cancel `tasks` (None is skipped) and return once each has ended. A task's own end
    (cancelled, or an error, which is logged) is not raised here; a cancellation of the
    caller is. A task still running after `within` seconds swallowed its cancellation: it
    is logged with where it stands and left, so a stop never hangs on it."""
    pending = [task for task in tasks if task is not None]
    if not pending:
        return
    for task in pending:
        task.cancel()
    done, stuck = await asyncio.wait(pending, timeout=within)
    for task in done:
        if not task.cancelled() and task.exception() is not None:
            log.warning("background task failed", exc_info=task.exception())
    for task in stuck:
        stack = io.StringIO()
        task.print_stack(file=stack)
        log.error(
            "background task did not end when cancelled",
            extra={"task": task.get_name(), "stack": stack.getvalue()},
        )
