"""Keel while Valkey is paused (SIGSTOP): latency, statuses and recovery of its pages.

    .venv/bin/python bench/store_outage.py [--before 5] [--pause 20] [--after 8]
Needs PostgreSQL on 127.0.0.1 and `redis-server` on the PATH. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from statistics import median

import httpx

from bench.common import (
    HOST,
    LOGIN,
    PASSWORD,
    ROOT,
    create_account,
    environment,
    free_port,
    keel,
    percentile,
    recreate_database,
    run_keel,
    settings_of,
    stop_processes,
    wait_until_ready,
)

DATABASE = "keel_bench_outage"
SLUG = "outage-probe"
EDITED = "Edited while the store was paused"


@dataclass
class Sample:
    at: float
    seconds: float
    status: int
    body: str
    cache: str


@dataclass
class Timeline:
    """When the pause began and ended (monotonic seconds)."""

    stopped: float = float("inf")
    resumed: float = float("inf")
    samples: dict[str, list[Sample]] = field(default_factory=dict)

    def phase(self, at: float) -> str:
        if at < self.stopped:
            return "before"
        return "paused" if at < self.resumed else "after"


def start_redis(port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", HOST, "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        done = subprocess.run(
            ["redis-cli", "-p", str(port), "ping"], capture_output=True, text=True, check=False
        )
        if done.stdout.strip() == "PONG":
            return process
        time.sleep(0.05)
    process.kill()
    sys.exit("redis-server did not start")


async def seed(env: dict[str, str]) -> None:
    """One published post that the pages load and the edit changes."""
    os.environ.update({k: env[k] for k in ("DATABASE_URL", "VALKEY_URL", "VAR_DIR")})
    from app.accounts.services.audit import Actor
    from app.content.services.entries import EntryInput, publish_entry, save_entry
    from app.core.db import create_engine, create_sessionmaker

    engine = create_engine(settings_of(env).db)
    async with create_sessionmaker(engine)() as session, session.begin():
        actor = Actor(None, "bench")
        entry = await save_entry(
            session, actor, EntryInput(title="Outage probe", slug=SLUG, body_markdown="Before.")
        )
        await publish_entry(session, actor, entry)
    await engine.dispose()


def start_keel(
    env: dict[str, str], port: int, log_file: Path
) -> tuple[subprocess.Popen[bytes], str]:
    with log_file.open("wb") as log:
        process = subprocess.Popen(
            keel("serve", "--port", str(port)), env=env, cwd=ROOT, stdout=log, stderr=log
        )
    base = f"http://{HOST}:{port}"
    wait_until_ready(process, base + "/health/ready")
    return process, base


async def sign_in(client: httpx.AsyncClient) -> None:
    """Through the sign-in form, as a browser does: the session cookie stays in `client`."""
    await client.get("/login")
    token = client.cookies.get("keel_csrf") or ""
    response = await client.post(
        "/login",
        data={"login": LOGIN, "password": PASSWORD, "_csrf_token": token},
        headers={"X-CSRF-Token": token, "Origin": str(client.base_url).rstrip("/")},
    )
    if response.status_code not in (302, 303):
        sys.exit(f"sign-in failed: {response.status_code} {response.text[:200]}")


async def api_key(base: str) -> str:
    async with httpx.AsyncClient(base_url=base) as client:
        tokens = await client.post(
            "/api/v1/auth/login", json={"login": LOGIN, "password": PASSWORD}
        )
        auth = {"Authorization": f"Bearer {tokens.json()['access_token']}"}
        created = await client.post(
            "/api/v1/api-keys", json={"name": "outage bench", "role": "editor"}, headers=auth
        )
        return str(created.json()["secret"])


async def drive(
    name: str, client: httpx.AsyncClient, path: str, timeline: Timeline, until: asyncio.Event
) -> None:
    samples = timeline.samples.setdefault(name, [])
    while not until.is_set():
        started = time.monotonic()
        try:
            response = await client.get(path)
            status, body = response.status_code, response.text
            cache = response.headers.get("x-cache", "")
        except httpx.HTTPError:
            status, body, cache = 0, "", ""
        samples.append(Sample(started, time.monotonic() - started, status, body, cache))
        await asyncio.sleep(0.02)


async def edit(base: str, secret: str) -> tuple[int, float]:
    """Change the post through the API with an API key; (status, seconds taken)."""
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        found = await client.get(f"/api/v1/content?q={SLUG}", headers={"X-API-Key": secret})
        entry_id = next(item["id"] for item in found.json()["items"] if item["slug"] == SLUG)
        started = time.monotonic()
        response = await client.patch(
            f"/api/v1/content/{entry_id}",
            json={"body_markdown": EDITED},
            headers={"X-API-Key": secret},
        )
        return response.status_code, time.monotonic() - started


async def api_sign_in_cycle(base: str) -> str:
    """Sign in, refresh and sign out through the API; the statuses and the time taken."""
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        login = await client.post("/api/v1/auth/login", json={"login": LOGIN, "password": PASSWORD})
        statuses = [login.status_code]
        if login.status_code == 200:
            refresh = {"refresh_token": login.json()["refresh_token"]}
            refreshed = await client.post("/api/v1/auth/refresh", json=refresh)
            statuses.append(refreshed.status_code)
            if refreshed.status_code == 200:
                token = refreshed.json()["access_token"]
                auth = {"Authorization": f"Bearer {token}"}
                out = await client.post("/api/v1/auth/logout", headers=auth)
                statuses.append(out.status_code)
    took = (time.monotonic() - started) * 1000
    return f"{' / '.join(map(str, statuses))} in {took:.0f} ms"


def first_fresh(samples: list[Sample], since: float) -> float | None:
    """Seconds after `since` from which the page showed the edit, and only the edit."""
    fresh_from = None
    for sample in samples:
        if sample.at < since or sample.status != 200:
            continue
        if EDITED in sample.body:
            fresh_from = fresh_from if fresh_from is not None else sample.at + sample.seconds
        else:
            fresh_from = None
    return None if fresh_from is None else fresh_from - since


def first(samples: list[Sample], since: float, hit: bool) -> float | None:
    """Seconds after `since` to the end of the first 200 (with `hit`: the first cache hit
    showing the edit)."""
    for sample in samples:
        wanted = not hit or (sample.cache == "hit" and EDITED in sample.body)
        if sample.at >= since and sample.status == 200 and wanted:
            return sample.at + sample.seconds - since
    return None


def seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f} s"


def report(timeline: Timeline) -> None:
    print(f"{'page':<22}{'phase':<8}{'n':>6}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}  statuses")
    for name, samples in timeline.samples.items():
        for phase in ("before", "paused", "after"):
            taken = [s for s in samples if timeline.phase(s.at) == phase]
            if not taken:
                continue
            seconds = [s.seconds * 1000 for s in taken]
            statuses = ", ".join(
                f"{k}: {v}" for k, v in sorted(Counter(s.status for s in taken).items())
            )
            print(
                f"{name:<22}{phase:<8}{len(taken):>6}{median(seconds):>9.1f}"
                f"{percentile(seconds, 0.95):>9.1f}{max(seconds):>9.1f}  {statuses}"
            )


async def run(args: argparse.Namespace, redis: subprocess.Popen[bytes], a: str, b: str) -> None:
    timeline = Timeline()
    secret = await api_key(a)
    until = asyncio.Event()
    timeout = httpx.Timeout(30)
    async with (
        httpx.AsyncClient(base_url=a, timeout=timeout) as signed,
        httpx.AsyncClient(base_url=a, timeout=timeout) as anonymous_a,
        httpx.AsyncClient(base_url=b, timeout=timeout) as anonymous_b,
    ):
        await sign_in(signed)
        for client in (anonymous_a, anonymous_b):  # warm the caches
            await client.get(f"/blog/{SLUG}")
        loops = [
            asyncio.create_task(drive("A account (session)", signed, "/account", timeline, until)),
            asyncio.create_task(
                drive("A post (session)", signed, f"/blog/{SLUG}", timeline, until)
            ),
            asyncio.create_task(
                drive("A public post", anonymous_a, f"/blog/{SLUG}", timeline, until)
            ),
            asyncio.create_task(
                drive("B public post", anonymous_b, f"/blog/{SLUG}", timeline, until)
            ),
        ]
        await asyncio.sleep(args.before)
        redis.send_signal(signal.SIGSTOP)
        timeline.stopped = time.monotonic()
        await asyncio.sleep(min(3.0, args.pause / 2))
        status, took = await edit(a, secret)
        print(f"edit through A during the pause: {status} in {took * 1000:.0f} ms")
        cycle = await api_sign_in_cycle(a)
        print(f"API sign-in / refresh / sign-out through A during the pause: {cycle}")
        await asyncio.sleep(max(timeline.stopped + args.pause - time.monotonic(), 0))
        redis.send_signal(signal.SIGCONT)
        timeline.resumed = time.monotonic()
        await asyncio.sleep(args.after)
        until.set()
        await asyncio.gather(*loops)
    report(timeline)
    since = timeline.resumed
    signed_in = first(timeline.samples["A account (session)"], since, hit=False)
    print(f"A account (session): first 200 {seconds(signed_in)} after SIGCONT")
    for name in ("A public post", "B public post"):
        fresh = first_fresh(timeline.samples[name], since)
        hit = first(timeline.samples[name], since, hit=True)
        print(
            f"{name}: only the edit from {seconds(fresh)} after SIGCONT; "
            f"first cache hit with it {seconds(hit)} after SIGCONT"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--before", type=float, default=5.0, help="seconds measured before the pause"
    )
    parser.add_argument(
        "--pause", type=float, default=20.0, help="seconds redis-server stays stopped"
    )
    parser.add_argument(
        "--after", type=float, default=8.0, help="seconds measured after it resumes"
    )
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        sys.exit("redis-server is not installed")
    asyncio.run(recreate_database(DATABASE))
    var_dir = Path(tempfile.mkdtemp(prefix="keel-bench-"))
    redis_port = free_port()
    redis = start_redis(redis_port)
    env = environment(
        var_dir, DATABASE, VALKEY_URL=f"redis://{HOST}:{redis_port}/0", WEB_CONCURRENCY="1"
    )
    processes: list[subprocess.Popen[bytes]] = []
    try:
        run_keel(env, "db", "upgrade")
        create_account(env, role="admin")
        asyncio.run(seed(env))
        logs = {name: var_dir / f"{name}.log" for name in ("A", "B")}
        process_a, a = start_keel(env, free_port(), logs["A"])
        processes.append(process_a)
        process_b, b = start_keel(env, free_port(), logs["B"])
        processes.append(process_b)
        asyncio.run(run(args, redis, a, b))
        stop_processes(*processes)
        for name, path in logs.items():
            lines = path.read_text().splitlines()
            warnings = sum('"level":"warning"' in line for line in lines)
            errors = sum('"level":"error"' in line for line in lines)
            tracebacks = sum("Traceback" in line for line in lines)
            print(
                f"log of {name}: {path.stat().st_size / 1024:.0f} KiB, {len(lines)} lines "
                f"({warnings} warnings, {errors} errors, {tracebacks} with a traceback)"
            )
    finally:
        redis.send_signal(signal.SIGCONT)
        stop_processes(*processes)
        redis.terminate()
        redis.wait(10)
        shutil.rmtree(var_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
