"""Public pages and the content API under load, next to the machine's ceiling, in one run.

Starts, on 127.0.0.1 only:
  * a raw ASGI hello-world on granian (one worker): the ceiling;
  * Keel with one granian worker on PostgreSQL + Valkey, with seeded posts (cache on);
  * the same Keel with CACHE_TTL_SECONDS=0 (every post page rendered).
Both Keel servers run as in production (APP_ENV=production, a generated SECRET_KEY,
PUBLIC_URL). Then drives each with `wrk` (Debian's package) at 64 and at 8 connections for
a bounded time, each case after a discarded warm-up run at the same concurrency (the first
requests of a new process compile templates and open pool connections), and prints
requests/s, p50 and p99 for: the cached anonymous post page, the uncached post page and the
authenticated JSON content list (20 entries), each as a ratio to the ceiling. Every case
runs `--rounds` times, the rounds interleaved, and the medians are printed with the range
of requests/s: on this VM one run of the same case moves by up to a third between runs.
Targets (2 cores): cached ≥ 0.30 of the ceiling; uncached ≥ 0.03 with p99 < 100 ms;
JSON list ≥ 0.035 with p99 < 100 ms; all three p99 < 20 ms at 8 connections.

    .venv/bin/python bench/content_load.py [--seconds 10] [--warmup 2] [--rounds 3]
Needs PostgreSQL on 127.0.0.1:5432 (user postgres), Valkey/Redis on 127.0.0.1:6379, wrk.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
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
    lift_api_rate_limit,
    recreate_database,
    run_keel,
    settings_of,
    stop_processes,
    wait_until_ready,
)

DATABASE = "keel_bench"
POSTS = 60


SECRET = secrets.token_urlsafe(48)


def bench_environment(var_dir: Path, cache_ttl: int) -> dict[str, str]:
    """Production settings, as a deployment runs them (secret made for this run)."""
    return environment(
        var_dir,
        DATABASE,
        APP_ENV="production",
        SECRET_KEY=SECRET,
        PUBLIC_URL=f"http://{HOST}",
        CACHE_TTL_SECONDS=str(cache_ttl),
        WEB_CONCURRENCY="1",
        DB_POOL_SIZE="20",
    )


async def seed(env: dict[str, str]) -> str:
    """Create POSTS published posts of ~2.5 KB; returns one slug to load."""
    os.environ.update({k: env[k] for k in ("DATABASE_URL", "VALKEY_URL", "VAR_DIR")})
    from app.accounts.audit import Actor
    from app.content.services import EntryInput, publish_entry, save_entry
    from app.core.db import create_engine, create_sessionmaker

    engine = create_engine(settings_of(env).db)
    paragraph = "Keel keeps every capability and drops the network hops. " * 8
    async with create_sessionmaker(engine)() as session, session.begin():
        actor = Actor(None, "bench")
        for i in range(POSTS):
            body = f"# Post {i}\n\n" + "\n\n".join(paragraph for _ in range(5))
            entry = await save_entry(
                session,
                actor,
                EntryInput(title=f"Benchmark post {i}", body_markdown=body, tags=["bench"]),
            )
            await publish_entry(session, actor, entry)
    await engine.dispose()
    await lift_api_rate_limit(env)
    return "benchmark-post-7"


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    base: str


def start(name: str, command: list[str], env: dict[str, str], port: int, probe: str) -> Server:
    process = subprocess.Popen(
        command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    base = f"http://{HOST}:{port}"
    try:
        wait_until_ready(process, base + probe)
    except RuntimeError as exc:
        stop_processes(process)
        sys.exit(f"{name} did not start: {exc}")
    return Server(name, process, base)


@dataclass
class Figures:
    rps: float
    p50_ms: float
    p99_ms: float


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(url: str, connections: int, seconds: int, headers: dict[str, str] | None = None) -> Figures:
    command = ["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds}s", "--latency"]
    for key, value in (headers or {}).items():
        command += ["-H", f"{key}: {value}"]
    out = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non_2xx:
        sys.exit(f"{url}: {non_2xx.group(1)} error responses under load")
    return Figures(rps, p50, p99)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2, help="discarded seconds per case")
    parser.add_argument(
        "--rounds", type=int, default=3, help="runs of every case; medians are printed"
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed (Debian: apt-get install wrk)")
    asyncio.run(recreate_database(DATABASE))
    var_dir = Path(tempfile.mkdtemp(prefix="keel-bench-"))
    env = bench_environment(var_dir, cache_ttl=300)
    run_keel(env, "db", "upgrade")
    create_account(env, role="editor")
    slug = asyncio.run(seed(env))
    servers: list[Server] = []
    try:
        hello_port, cached_port, uncached_port = free_port(), free_port(), free_port()
        ceiling_command = [sys.executable, "-m", "granian", "--interface", "asgi", "--host", HOST]
        ceiling_command += ["--port", str(hello_port), "--workers", "1", "--no-ws"]
        servers.append(
            start("ceiling", [*ceiling_command, "bench.hello_asgi:app"], env, hello_port, "/")
        )
        servers.append(
            start(
                "keel",
                keel("serve", "--port", str(cached_port)),
                env,
                cached_port,
                "/health/ready",
            )
        )
        servers.append(
            start(
                "keel-uncached",
                keel("serve", "--port", str(uncached_port)),
                bench_environment(var_dir, cache_ttl=0),
                uncached_port,
                "/health/ready",
            )
        )
        ceiling_base, cached_base, uncached_base = (s.base for s in servers)
        token = httpx.post(
            f"{cached_base}/api/v1/auth/login", json={"login": LOGIN, "password": PASSWORD}
        ).json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        httpx.get(f"{cached_base}/blog/{slug}")  # warm the cache
        cases = [
            ("ceiling (hello world)", f"{ceiling_base}/", None),
            ("cached post page", f"{cached_base}/blog/{slug}", None),
            ("uncached post page", f"{uncached_base}/blog/{slug}", None),
            ("JSON content list (20)", f"{cached_base}/api/v1/content?per_page=20", auth),
        ]
        print(
            f"{'case':<26}{'conns':>6}{'req/s':>10}{'range':>14}{'p50 ms':>9}{'p99 ms':>9}"
            f"{'ratio':>8}"
        )
        ceiling = 0.0
        for connections in (64, 8):
            rounds: dict[str, list[Figures]] = {name: [] for name, _, _ in cases}
            for _ in range(args.rounds):  # interleaved, so a slow spell of the VM hits all
                for name, url, headers in cases:
                    if args.warmup:
                        wrk(url, connections, args.warmup, headers)
                    rounds[name].append(wrk(url, connections, args.seconds, headers))
            for name, _, _ in cases:
                figures = Figures(
                    median(f.rps for f in rounds[name]),
                    median(f.p50_ms for f in rounds[name]),
                    median(f.p99_ms for f in rounds[name]),
                )
                if name.startswith("ceiling") and connections == 64:
                    ceiling = figures.rps
                ratio = figures.rps / ceiling if ceiling else 0.0
                spread = (
                    f"{min(f.rps for f in rounds[name]):.0f}-{max(f.rps for f in rounds[name]):.0f}"
                )
                print(
                    f"{name:<26}{connections:>6}{figures.rps:>10.0f}{spread:>14}"
                    f"{figures.p50_ms:>9.2f}{figures.p99_ms:>9.2f}{ratio:>8.3f}"
                )
    finally:
        stop_processes(*(server.process for server in servers))
        shutil.rmtree(var_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
