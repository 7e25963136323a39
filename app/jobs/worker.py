"""The `keel worker` loop: heartbeats, bounded concurrency and a graceful stop.

The durable queue arrives with the jobs issue; what exists now is the process shape every
handler will run in: it announces itself in the store, stops claiming on SIGTERM/SIGINT,
gives running work a grace period, and exits cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from app.core.store import Store, StoreUnavailable
from app.settings import WorkerSettings

log = logging.getLogger("keel.worker")


@dataclass(frozen=True)
class PeriodicTask:
    name: str
    every_seconds: float
    run: Callable[[], Awaitable[None]]


HEARTBEAT_PREFIX = "workers:"


class Worker:
    def __init__(
        self,
        settings: WorkerSettings,
        store: Store,
        *,
        queues: tuple[str, ...] = ("default",),
        concurrency: int | None = None,
        mode: str = "process",
        periodic: tuple[PeriodicTask, ...] = (),
    ) -> None:
        self.settings = settings
        self.store = store
        self.queues = queues
        self.concurrency = concurrency or settings.concurrency
        self.mode = mode
        self.id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.started_at = time.time()
        self.running: set[asyncio.Task[Any]] = set()
        self._slots = asyncio.Semaphore(self.concurrency)
        self._stopping = asyncio.Event()
        self.periodic = periodic
        self._last_run: dict[str, float] = {}

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def request_stop(self) -> None:
        """Stop claiming new work; running work gets the grace period to finish."""
        if not self._stopping.is_set():
            log.info("worker stopping", extra={"worker_id": self.id, "running": len(self.running)})
            self._stopping.set()

    async def start_task(self, work: Coroutine[Any, Any, Any]) -> bool:
        """Run `work` in a free slot; refused (and closed) once stopping has begun."""
        if self.stopping:
            work.close()
            return False
        await self._slots.acquire()
        task = asyncio.create_task(work)
        self.running.add(task)
        task.add_done_callback(self._finished)
        return True

    def _finished(self, task: asyncio.Task[Any]) -> None:
        self.running.discard(task)
        self._slots.release()
        if not task.cancelled() and task.exception() is not None:
            log.error("worker task failed", exc_info=task.exception(), extra={"worker_id": self.id})

    async def heartbeat(self) -> None:
        record = {
            "id": self.id,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "mode": self.mode,
            "queues": list(self.queues),
            "concurrency": self.concurrency,
            "running": len(self.running),
            "started_at": self.started_at,
            "last_seen": time.time(),
        }
        try:
            await self.store.set(
                HEARTBEAT_PREFIX + self.id,
                json.dumps(record),
                ttl=self.settings.heartbeat_interval * 3,
            )
        except StoreUnavailable as exc:
            log.warning(
                "worker heartbeat not stored", extra={"worker_id": self.id, "error": repr(exc)}
            )

    async def run(self) -> None:
        """Heartbeat until asked to stop, then drain running work within the grace period."""
        log.info(
            "worker started",
            extra={
                "worker_id": self.id,
                "queues": list(self.queues),
                "concurrency": self.concurrency,
            },
        )
        while not self.stopping:
            await self.heartbeat()
            await self._run_due_periodic_tasks()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.settings.heartbeat_interval)
        await self._drain()
        with contextlib.suppress(*StoreUnavailable):
            await self.store.delete(HEARTBEAT_PREFIX + self.id)
        log.info("worker stopped", extra={"worker_id": self.id})

    async def _run_due_periodic_tasks(self) -> None:
        """Small housekeeping that must happen regularly (the job scheduler comes later)."""
        now = time.monotonic()
        for task in self.periodic:
            if now - self._last_run.get(task.name, 0.0) >= task.every_seconds:
                self._last_run[task.name] = now
                try:
                    await task.run()
                except Exception:  # a failed round is retried at the next interval
                    log.exception("periodic task failed", extra={"task": task.name})

    async def _drain(self) -> None:
        if not self.running:
            return
        pending = set(self.running)
        _, still_running = await asyncio.wait(pending, timeout=self.settings.shutdown_grace)
        for task in still_running:
            task.cancel()
        if still_running:
            log.warning(
                "worker released unfinished tasks after the grace period",
                extra={"worker_id": self.id, "released": len(still_running)},
            )
            await asyncio.gather(*still_running, return_exceptions=True)


async def list_workers(store: Store) -> list[dict[str, Any]]:
    """Heartbeats of the workers alive now, newest first."""
    workers = []
    for key in await store.keys(HEARTBEAT_PREFIX + "*"):
        raw = await store.get(key)
        if raw:
            workers.append(json.loads(raw))
    return sorted(workers, key=lambda w: w["started_at"], reverse=True)


def housekeeping(sessionmaker: Any, store: Store) -> tuple[PeriodicTask, ...]:
    """The periodic tasks every worker runs."""
    from app.content.services import flush_view_counts

    async def views() -> None:
        await flush_view_counts(sessionmaker, store)

    return (PeriodicTask("flush-view-counts", 30.0, views),)
