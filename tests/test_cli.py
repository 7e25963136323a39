"""The `keel` command (app/__main__.py), run as a real subprocess on both legs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from app.settings import ROOT
from tests.conftest import (
    RUN_ID,
    free_port,
    keel_command,
    leg_environment,
    pg_url,
    recreate_pg_database,
    run_keel,
)


def test_check_passes_on_a_migrated_database(keel_env: dict[str, str]) -> None:
    result = run_keel("check", env=keel_env)
    assert result.returncode == 0, result.stderr
    assert "configuration OK" in result.stdout


def test_check_prints_every_problem_and_exits_non_zero(tmp_path: Path) -> None:
    env = leg_environment("embedded", tmp_path)
    env.update(
        APP_ENV="production",
        DATABASE_URL=f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/keel",
        VALKEY_URL=f"redis://:topsecret@127.0.0.1:{free_port()}/0",
    )
    result = run_keel("check", env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert any("SECRET_KEY" in line for line in lines)
    assert any("PUBLIC_URL" in line for line in lines)
    assert any("database" in line and "does not answer" in line for line in lines)
    assert any("store" in line and "does not answer" in line for line in lines)
    assert "topsecret" not in result.stderr
    assert all(line.startswith("keel: ") for line in lines)


def test_check_reports_a_database_that_was_never_migrated(tmp_path: Path) -> None:
    env = leg_environment("embedded", tmp_path)
    result = run_keel("check", env=env)
    assert result.returncode == 2
    assert "keel db upgrade" in result.stderr


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        (
            {
                "APP_ENV": "production",
                "VALKEY_URL": "redis://127.0.0.1:6379/15",
                "PUBLIC_URL": "https://keel.example",
            },
            "SECRET_KEY",
        ),
        ({"WEB_CONCURRENCY": "2"}, "needs a shared store"),
        ({"DATABASE_URL": "postgresql+asyncpg://postgres@127.0.0.1:1/keel"}, "does not answer"),
        ({"PORT": "http"}, "PORT='http' is not a whole number"),
    ],
)
def test_serve_refuses_configurations_that_cannot_work(
    tmp_path: Path, changes: dict[str, str], expected: str
) -> None:
    env = {**leg_environment("embedded", tmp_path), **changes}
    result = run_keel("serve", "--port", str(free_port()), env=env, timeout=30)
    assert result.returncode == 2
    assert expected in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_serve_on_a_port_in_use_says_so_in_one_line(keel_env: dict[str, str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_keel("serve", "--port", str(port), env=keel_env, timeout=30)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"keel: port {port} on 127.0.0.1 is already in use (another Keel, or another "
        "program): stop it, or choose another port with --port or PORT"
    )


def test_migrations_upgrade_downgrade_and_report_current(leg: str, tmp_path: Path) -> None:
    env = leg_environment(leg, tmp_path)
    if leg == "services":
        database = f"keel_cli_{RUN_ID}"
        recreate_pg_database(database)
        env["DATABASE_URL"] = pg_url(database)
    try:
        assert run_keel("db", "upgrade", env=env).returncode == 0
        current = run_keel("db", "current", env=env)
        assert "(head)" in current.stdout + current.stderr
        assert run_keel("db", "downgrade", "base", env=env).returncode == 0
        after = run_keel("db", "current", env=env)
        assert "(head)" not in after.stdout + after.stderr
    finally:
        if leg == "services":
            recreate_pg_database(database, create=False)


def _wait_for(url: str, timeout: float = 30) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            response = httpx.get(url, timeout=2)
            if response.status_code == 200:
                return response
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} did not answer 200 within {timeout}s")


def test_serve_answers_ready_and_stops_cleanly_on_sigterm(keel_env: dict[str, str]) -> None:
    """The smoke test: what `make run` starts, ready within seconds, gone within 10 s of SIGTERM."""
    port = free_port()
    process = subprocess.Popen(
        keel_command("serve", "--port", str(port)),
        env=keel_env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        ready = _wait_for(f"http://127.0.0.1:{port}/health/ready")
        assert ready.json()["status"] == "ready"
        home = httpx.get(f"http://127.0.0.1:{port}/", timeout=5)
        assert home.status_code == 303 and home.headers["location"] == "/setup"  # first run
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            pytest.fail("keel serve did not stop within 10 s of SIGTERM")
    output = process.stdout.read() if process.stdout else ""
    assert process.returncode == 0, output
    assert (
        f"Keel is starting on http://127.0.0.1:{port}: open it in a browser to create the "
        "first admin account (Ctrl+C stops it)."
    ) in output.splitlines()
    log_lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    assert any(
        line.get("path") == "/health/ready" and line.get("status") == 200 for line in log_lines
    )


def test_worker_heartbeats_and_exits_0_on_sigterm(keel_env: dict[str, str]) -> None:
    env = {**keel_env, "WORKER_HEARTBEAT_INTERVAL": "0.2"}
    process = subprocess.Popen(
        keel_command("worker", "--concurrency", "2"),
        env=env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[dict[str, object]] = []
    assert process.stdout is not None
    while True:  # read until the worker has announced itself
        raw = process.stdout.readline()
        assert raw, "worker exited before starting"
        if raw.startswith("{"):
            lines.append(json.loads(raw))
            if lines[-1]["event"] == "worker started":
                break
    if "VALKEY_URL" in env:  # services leg: the heartbeat is visible to other processes
        import asyncio

        from app.core.store import create_store
        from app.jobs.services.worker import list_workers
        from app.settings import Settings

        store_settings = Settings.from_env(env, env_file=Path("/nonexistent")).store

        async def heartbeats() -> list[dict[str, object]]:
            store = create_store(store_settings)
            try:
                for _ in range(50):
                    if found := await list_workers(store):
                        return found
                    await asyncio.sleep(0.1)
                return []
            finally:
                await store.close()

        workers = asyncio.run(heartbeats())
        assert [w["pid"] for w in workers] == [process.pid]
        assert workers[0]["concurrency"] == 2
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()  # its log says which task did not end (app/core/tasks.py)
        pytest.fail(f"keel worker did not exit within 10 s of SIGTERM:\n{process.stdout.read()}")
    assert process.returncode == 0
    rest = [json.loads(line) for line in process.stdout.read().splitlines() if line.startswith("{")]
    events = [line["event"] for line in rest]
    assert "worker stopping" in events and events[-1] == "worker stopped"
    assert os.path.exists(ROOT / "app")  # sanity: ran from the checkout


Command = tuple[tuple[str, ...], str | None]
"""The arguments of a `keel` command and its standard input."""


def run_keel_together(
    env: dict[str, str], *commands: Command
) -> list[subprocess.CompletedProcess[str]]:
    """Run `keel` commands side by side and wait for all: a `keel` process spends most of
    its time starting, so commands whose order does not matter need not wait in line."""
    started = [
        (
            subprocess.Popen(
                keel_command(*args),
                env=env,
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            ),
            args,
            stdin,
        )
        for args, stdin in commands
    ]
    done = []
    for process, args, stdin in started:
        stdout, stderr = process.communicate(stdin, timeout=60)
        done.append(subprocess.CompletedProcess(args, process.returncode, stdout, stderr))
    return done


def create_user(email: str, username: str, password: str, *options: str) -> Command:
    args = ("users", "create", *options, "--email", email, "--username", username)
    return (*args, "--password-stdin"), password + "\n"


def test_users_commands_create_list_set_role_and_reset_password(keel_env: dict[str, str]) -> None:
    # Side by side where the order does not matter, with one writer at a time (SQLite's rule).
    passphrase = "violet harbour lantern 42"
    created, weak, nobody = run_keel_together(
        keel_env,
        create_user("Root@Example.org", "root", passphrase, "--role", "admin"),
        create_user("w@example.org", "weak", "password"),
        (("users", "set-role", "nobody", "editor"), None),
    )
    assert created.returncode == 0, created.stderr
    assert "created admin root <root@example.org>" in created.stdout
    assert weak.returncode == 2 and "password: Use at least 12 characters." in weak.stderr
    assert nobody.returncode == 2

    duplicate, last_admin, eddie = run_keel_together(
        keel_env,
        create_user("root@example.org", "other", passphrase),
        (("users", "set-role", "root", "viewer"), None),
        create_user("e@example.org", "eddie", "violet harbour lantern 43"),
    )
    assert duplicate.returncode == 2 and "exists" in duplicate.stderr
    assert last_admin.returncode == 2 and "last active admin" in last_admin.stderr
    assert eddie.returncode == 0, eddie.stderr

    assert (
        run_keel("users", "set-role", "eddie", "editor", env=keel_env).stdout.strip()
        == "eddie is now editor"
    )
    reset, listing = run_keel_together(
        keel_env,
        (
            ("users", "reset-password", "e@example.org", "--password-stdin"),
            "a new and private passphrase\n",
        ),
        (("users", "list"), None),
    )
    assert reset.returncode == 0 and "sessions were ended" in reset.stdout
    listed = listing.stdout
    assert "root" in listed and "admin" in listed and "eddie" in listed and "editor" in listed


ARGUMENTS_THAT_ARE_NO_TEXT = [
    (("users", "create", "--email", b"a\xff@example.org", "--username", "ann"), "argument 4"),
    (("users", "create", "--email", "b@example.org", "--username", "bob", "--display-name",
      b"B\xed\xa0\x80"), "argument 8"),
    (("users", "set-role", b"\xff", "editor"), "argument 3"),
]  # fmt: skip
"""Bytes that are not UTF-8 reach Python's argv as lone surrogates, which no database
stores (they used to end in a UnicodeEncodeError traceback)."""
PASSWORDS_THAT_ARE_NO_TEXT = [b"violet harbour\x00lantern 42\n", b"violet \xff harbour 42\n"]


def test_users_commands_refuse_input_that_is_no_text_with_a_message(
    keel_env: dict[str, str],
) -> None:
    passphrase = b"violet harbour lantern 42\n"
    runs = [(args, passphrase, where) for args, where in ARGUMENTS_THAT_ARE_NO_TEXT]
    runs += [
        (("users", "create", "--email", "c@example.org", "--username", "carl"), password, "")
        for password in PASSWORDS_THAT_ARE_NO_TEXT
    ]
    for args, stdin, where in runs:
        reads_password = ("--password-stdin",) if args[1] == "create" else ()
        result = subprocess.run(
            [*keel_command(), *args, *reads_password],
            env=keel_env,
            cwd=ROOT,
            capture_output=True,
            input=stdin,
            timeout=60,
        )
        message = result.stderr.decode("utf-8", "replace")
        assert result.returncode == 2, message
        assert "Traceback" not in message and message.startswith("keel: "), message
        assert where in message and ("not UTF-8" in message or "NUL" in message), message
    assert "carl" not in run_keel("users", "list", env=keel_env).stdout
