"""A redis-server of a test's own, for fault tests: paused (SIGSTOP), resumed or stopped
without touching the shared one on 6379."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import pytest

from app.settings import Settings
from tests.conftest import IN_CI, free_port


@dataclass
class PrivateValkey:
    process: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def pause(self) -> None:
        """The server stops answering but keeps its connections: a hung Valkey."""
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def refuse_writes(self, refuse: bool = True) -> None:
        """Full (`maxmemory` reached, no eviction): it answers, reads work, every command
        that would take memory is refused with an OOM error. `False` lifts the limit."""
        limit = "1" if refuse else "0"
        for name, value in (("maxmemory-policy", "noeviction"), ("maxmemory", limit)):
            subprocess.run(
                ["redis-cli", "-p", str(self.port), "config", "set", name, value],
                check=True,
                capture_output=True,
            )

    def settings(self, settings: Settings, **store: object) -> Settings:
        """`settings` (either leg's database) with this server as the store."""
        changes = {"url": self.url, "key_prefix": f"keeltest{os.getpid()}:", **store}
        return replace(settings, store=replace(settings.store, **changes))


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as connection:
            connection.sendall(b"PING\r\n")
            return connection.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def private_valkey() -> Iterator[PrivateValkey]:
    """A fresh redis-server without persistence on a free port, stopped afterwards."""
    if shutil.which("redis-server") is None:
        message = "fault tests need redis-server on the PATH"
        if IN_CI:
            pytest.fail(message + " (CI=true: a missing service is a failure)", pytrace=False)
        pytest.skip(message)
    port = free_port()
    no_persistence = ["--save", "", "--appendonly", "no"]
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", *no_persistence],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 10
        while not _answers_ping(port):
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("the private redis-server did not start")
            time.sleep(0.02)
        yield PrivateValkey(process, port)
    finally:
        process.send_signal(signal.SIGCONT)
        process.terminate()
        process.wait(10)
