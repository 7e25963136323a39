"""What the benchmark scripts share: environment, database, account, processes, percentiles.

Found as `bench.common` through the editable install (`make install`). See docs/performance.md.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from app.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
VALKEY_URL = "redis://127.0.0.1:6379/14"
LOGIN = "bench"
PASSWORD = "a long benchmark passphrase 42"


def environment(var_dir: Path, database: str | None = None, **settings: str) -> dict[str, str]:
    """This process's environment without the shell's database, store and secret settings:
    embedded mode (SQLite in `var_dir`, the in-process store) without `database`, else
    PostgreSQL `database` and Valkey under a key prefix of this run; `settings` on top."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "VALKEY_", "DB_"))}
    env.pop("SECRET_KEY", None)
    env.update(VAR_DIR=str(var_dir), APP_ENV="development", LOG_LEVEL="WARNING")
    if database is None:
        env["DATABASE_URL"] = f"sqlite+aiosqlite:///{var_dir}/keel.db"
    else:
        env.update(
            DATABASE_URL=f"postgresql+asyncpg://postgres@127.0.0.1:5432/{database}",
            VALKEY_URL=VALKEY_URL,
            VALKEY_KEY_PREFIX=f"keelbench{os.getpid()}:",
        )
    env.update(settings)
    return env


def settings_of(env: dict[str, str]) -> Settings:
    """Keel's settings for `env` alone (no `.env` file), for work done in this process."""
    from app.settings import Settings

    return Settings.from_env(env, env_file=Path("/nonexistent"))


def keel(*args: str) -> list[str]:
    """The command line of `keel ARGS` with this interpreter."""
    return [sys.executable, "-m", "app", *args]


def run_keel(env: dict[str, str], *args: str, stdin: str | None = None) -> None:
    """Run `keel ARGS` to the end; exit with its output when it fails."""
    done = subprocess.run(
        keel(*args), env=env, cwd=ROOT, input=stdin, text=True, capture_output=True, timeout=120
    )
    if done.returncode != 0:
        sys.exit(f"keel {' '.join(args)} failed:\n{done.stdout}{done.stderr}")


async def recreate_database(database: str) -> None:
    """Drop `database` (closing its connections) and create it empty."""
    import asyncpg

    connection = await asyncpg.connect(PG_ADMIN)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await connection.execute(f'CREATE DATABASE "{database}"')
    finally:
        await connection.close()


async def drop_database(database: str) -> None:
    """Drop `database`, closing its connections."""
    import asyncpg

    connection = await asyncpg.connect(PG_ADMIN)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    finally:
        await connection.close()


def create_account(env: dict[str, str], role: str | None = None) -> None:
    """The benchmark account LOGIN / PASSWORD, with `role` (keel's default without)."""
    role_args = ["--role", role] if role else []
    run_keel(
        env,
        "users",
        "create",
        *role_args,
        "--email",
        "bench@example.org",
        "--username",
        LOGIN,
        "--password-stdin",
        stdin=PASSWORD + "\n",
    )


async def lift_api_rate_limit(env: dict[str, str]) -> None:
    """One account drives the load: lift the per-identity API limit for the run."""
    from app.accounts.guards.rate_limit import API_RATE_LIMIT
    from app.core.db import create_engine, create_sessionmaker
    from app.site_settings.services import write_setting

    engine = create_engine(settings_of(env).db)
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            await write_setting(session, API_RATE_LIMIT.name, 1_000_000)
    finally:
        await engine.dispose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_until_ready(process: subprocess.Popen[bytes], url: str, timeout: float = 30.0) -> None:
    """Poll `url` until it answers 200; raise when the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(
                f"{' '.join(map(str, process.args))} exited with {process.returncode}"
            )
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout:.0f} s")


def stop_processes(*processes: subprocess.Popen[bytes], timeout: float = 15.0) -> list[int]:
    """SIGTERM all (a graceful shutdown each, at the same time), kill what outlives
    `timeout`; returns the exit codes."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    codes = []
    for process in processes:
        try:
            codes.append(process.wait(timeout))
        except subprocess.TimeoutExpired:
            process.kill()
            codes.append(process.wait(5))
    return codes


def percentile(values: list[float], share: float) -> float:
    """The value below which `share` of `values` lie (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(int(len(ordered) * share), len(ordered) - 1)]
