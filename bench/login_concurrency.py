"""Does a burst of logins stall the event loop? Logins/s and /health/live latency under load.

    .venv/bin/python bench/login_concurrency.py [--seconds 10] [--concurrency 20]
Embedded mode: needs nothing running. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

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
    percentile,
    run_keel,
    stop_processes,
    wait_until_ready,
)

TARGET_P99_MS = 50.0
SAMPLE_EVERY = 0.010


def prepare(env: dict[str, str]) -> None:
    """Migrate, create the account, and lift the API rate limit so it does not cap logins."""
    run_keel(env, "db", "upgrade")
    create_account(env)
    asyncio.run(lift_api_rate_limit(env))


def sample_liveness(
    base: str, stop_at: float, latencies: list[float], errors: Counter[str]
) -> None:
    """In its own thread, so the login loops' client work cannot delay a sample."""
    with httpx.Client(base_url=base, timeout=5) as client:
        next_at = time.monotonic()
        while time.monotonic() < stop_at:
            started = time.perf_counter()
            try:
                response = client.get("/health/live")
                if response.status_code != 200:
                    errors[str(response.status_code)] += 1
                else:
                    latencies.append((time.perf_counter() - started) * 1000)
            except httpx.HTTPError as exc:
                errors[type(exc).__name__] += 1
            next_at += SAMPLE_EVERY
            time.sleep(max(next_at - time.monotonic(), 0))


async def login_loops(base: str, concurrency: int, stop_at: float) -> Counter[str]:
    statuses: Counter[str] = Counter()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=10, limits=limits) as client:

        async def loop() -> None:
            while time.monotonic() < stop_at:
                try:
                    response = await client.post(
                        "/api/v1/auth/login", json={"login": LOGIN, "password": PASSWORD}
                    )
                    statuses[str(response.status_code)] += 1
                except httpx.HTTPError as exc:
                    statuses[type(exc).__name__] += 1

        await asyncio.gather(*(loop() for _ in range(concurrency)))
    return statuses


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the run (1-120)")
    parser.add_argument("--concurrency", type=int, default=20, help="concurrent login loops")
    args = parser.parse_args()
    seconds = min(max(args.seconds, 1.0), 120.0)

    with tempfile.TemporaryDirectory(prefix="keel-bench-") as var_dir:
        port = free_port()
        base = f"http://{HOST}:{port}"
        # Embedded mode: SQLite in var_dir and the in-process store, whatever the shell has.
        env = environment(Path(var_dir), HOST=HOST, PORT=str(port), WEB_CONCURRENCY="1")
        prepare(env)
        log_path = Path(var_dir) / "serve.log"
        with log_path.open("wb") as log:
            server = subprocess.Popen(
                keel("serve", "--host", HOST, "--port", str(port), "--workers", "1"),
                env=env,
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
            try:
                wait_until_ready(server, f"{base}/health/live")
                latencies: list[float] = []
                sample_errors: Counter[str] = Counter()
                started = time.monotonic()
                stop_at = started + seconds
                sampler = threading.Thread(
                    target=sample_liveness, args=(base, stop_at, latencies, sample_errors)
                )
                sampler.start()
                statuses = asyncio.run(login_loops(base, args.concurrency, stop_at))
                sampler.join(seconds + 10)
                elapsed = time.monotonic() - started
            except Exception:
                print(log_path.read_text(errors="replace")[-3000:], file=sys.stderr)
                raise
            finally:
                stop_processes(server)

    logins = statuses.get("200", 0)
    print(f"keel serve (embedded, 1 worker) · {args.concurrency} login loops · {elapsed:.1f} s")
    print(f"logins:       {logins} ok, {logins / elapsed:.1f}/s; statuses {dict(statuses)}")
    if not latencies:
        print("/health/live: no successful samples", sample_errors)
        return 1
    p50, p99 = statistics.median(latencies), percentile(latencies, 0.99)
    print(
        f"/health/live: {len(latencies)} samples, p50 {p50:.1f} ms, p99 {p99:.1f} ms, "
        f"max {max(latencies):.1f} ms; errors {dict(sample_errors) or 'none'}"
    )
    met = p99 < TARGET_P99_MS and not sample_errors
    print(f"target p99 < {TARGET_P99_MS:.0f} ms: {'met' if met else 'MISSED'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
