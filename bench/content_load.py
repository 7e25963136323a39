"""Public pages and the content API under load, next to the machine's ceiling, in one run.

    .venv/bin/python bench/content_load.py [--seconds 10] [--warmup 2] [--rounds 3]
                                           [--draft-saves 4]
Needs PostgreSQL and Valkey/Redis on 127.0.0.1, and wrk. See docs/performance.md.
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
import threading
import time
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
    drop_database,
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

DATABASE = f"keel_bench_{os.getpid()}"
POSTS = 60
MIXED_CONNECTIONS = 64
DEFAULT_POOL_SIZE = 10
"""The mixed case runs on a server of its own with the default pool (10 + 10 overflow):
a request that held one pooled connection and waited for a second deadlocked it."""


START_SECONDS = 120.0
"""How long a server may take to answer its probe: over a minute on a machine busy with
other work."""
SECRET = secrets.token_urlsafe(48)
BROWSER = {"Accept-Encoding": "gzip, br"}
"""What browsers send: every case but the two raw ones asks for a compressed answer."""
PLUGINS = ROOT / "bench" / "plugins"
"""Where the `articles` plugin lives: a page of the post page's weight, served by a plugin."""


def bench_environment(var_dir: Path, cache_ttl: int, pool_size: int = 20) -> dict[str, str]:
    """Production settings, as a deployment runs them (secret made for this run)."""
    return environment(
        var_dir,
        DATABASE,
        APP_ENV="production",
        SECRET_KEY=SECRET,
        PUBLIC_URL=f"http://{HOST}",
        CACHE_TTL_SECONDS=str(cache_ttl),
        WEB_CONCURRENCY="1",
        DB_POOL_SIZE=str(pool_size),
        PLUGINS_DIR=str(PLUGINS),
        PLUGIN_ALLOW_UNSIGNED="true",
    )


async def seed(env: dict[str, str]) -> str:
    """Create POSTS published posts of ~2.5 KB; returns one slug to load."""
    os.environ.update({k: env[k] for k in ("DATABASE_URL", "VALKEY_URL", "VAR_DIR")})
    from app.accounts.services.audit import Actor
    from app.content.services.entries import EntryInput, publish_entry, save_entry
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
        wait_until_ready(process, base + probe, timeout=START_SECONDS)
    except RuntimeError as exc:
        stop_processes(process)
        sys.exit(f"{name} did not start: {exc}")
    return Server(name, process, base)


@dataclass
class Figures:
    rps: float
    p50_ms: float
    p99_ms: float
    non_2xx: int = 0
    timeouts: int = 0
    cpu_us: float = 0.0
    """The server's CPU time per request answered (its processes' user + system time)."""


def cpu_seconds(process: subprocess.Popen[bytes]) -> float:
    """User + system CPU seconds of a server and its worker processes so far (Linux /proc;
    0 elsewhere). Per request, it moves far less than requests/s when other work shares
    the machine."""
    try:
        children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
        total = 0
        for pid in [process.pid, *map(int, children)]:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (clock ticks)
    except OSError:
        return 0.0
    return total / os.sysconf("SC_CLK_TCK")


def measured(
    server: Server,
    url: str,
    connections: int,
    seconds: int,
    headers: dict[str, str] | None,
    script: Path | None = None,
) -> Figures:
    """`wrk` on `url` (through `script`), with the CPU time `server` spent per request
    meanwhile."""
    before = cpu_seconds(server.process)
    figures = wrk(url, connections, seconds, headers, script=script)
    answered = figures.rps * seconds
    spent = cpu_seconds(server.process) - before
    figures.cpu_us = spent / answered * 1e6 if answered else 0.0
    return figures


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(us|ms|s)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def wrk(
    url: str,
    connections: int,
    seconds: int,
    headers: dict[str, str] | None = None,
    *,
    script: Path | None = None,
    count_errors: bool = False,
) -> Figures:
    """wrk's figures for `url` (or the requests `script` makes). Error answers end the
    run, unless `count_errors`: then they are counted, with a 10 s timeout per request."""
    command = ["wrk", "-t", "2", "-c", str(connections), "-d", f"{seconds}s", "--latency"]
    for key, value in (headers or {}).items():
        command += ["-H", f"{key}: {value}"]
    if script is not None:
        command += ["-s", str(script)]
    if count_errors:
        command += ["--timeout", "10s"]
    out = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1))  # type: ignore[union-attr]
    found = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    non_2xx = int(found.group(1)) if found else 0
    if non_2xx and not count_errors:
        sys.exit(f"{url}: {non_2xx} error responses under load")
    timeouts = re.search(r"Socket errors: .*timeout (\d+)", out)
    return Figures(rps, p50, p99, non_2xx, int(timeouts.group(1)) if timeouts else 0)


ANEW_SCRIPT = """-- every request its own query string (written by bench/content_load.py)
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("id", threads)
end
local n = 0
function request()
  n = n + 1
  return wrk.format(nil, wrk.path .. "&anew=" .. id .. "-" .. n)
end
"""
"""The editors' list as if every request followed a change: no two ask the same query, so
none is answered from a list the process keeps (app/content/services/list_cache.py)."""


MIX_SCRIPT = """-- the mixed case's requests, in turn (written by bench/content_load.py)
local paths = {%(paths)s}
local auth = {["Authorization"] = "%(authorization)s", ["Accept-Encoding"] = "gzip, br"}
local browser = {["Accept-Encoding"] = "gzip, br"}
local turn = 0
request = function()
  turn = turn + 1
  local path = paths[turn %% #paths + 1]
  if string.sub(path, 1, 5) == "/api/" then
    return wrk.format("GET", path, auth)
  end
  return wrk.format("GET", path, browser)
end
"""


def mix_script(directory: Path, slugs: list[str], authorization: str) -> Path:
    """A wrk script asking, in turn, /blog pages 1-6, post pages and the JSON list."""
    paths = [f"/blog?page={n}" for n in range(1, 7)]
    paths += [f"/blog/{slug}" for slug in slugs]
    paths += ["/api/v1/content?per_page=20"] * 4
    script = directory / "mixed.lua"
    quoted = ", ".join(f'"{path}"' for path in paths)
    script.write_text(MIX_SCRIPT % {"paths": quoted, "authorization": authorization})
    return script


@dataclass
class Writer:
    """Saves a draft `draft_saves` times a second and edits a published post once a
    second, through the API, until stopped; counts what it did and what failed."""

    base: str
    headers: dict[str, str]
    draft_saves: int
    draft: str
    published: str
    writes: int = 0
    failed: int = 0
    slowest_ms: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        with httpx.Client(base_url=self.base, headers=self.headers, timeout=30) as client:
            tick = 0
            while not self._stop.wait(1 / self.draft_saves):
                tick += 1
                self._write(client, self.draft, f"Draft text, save {tick}.")
                if tick % self.draft_saves == 0:
                    self._write(client, self.published, f"Published text, edit {tick}.")

    def _write(self, client: httpx.Client, entry_id: str, text: str) -> None:
        started = time.perf_counter()
        try:
            answer = client.patch(f"/api/v1/content/{entry_id}", json={"body_markdown": text})
            ok = answer.status_code == 200
        except httpx.HTTPError:
            ok = False
        self.slowest_ms = max(self.slowest_ms, (time.perf_counter() - started) * 1000)
        self.writes += 1
        self.failed += not ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10, help="measured seconds per case")
    parser.add_argument("--warmup", type=int, default=2, help="discarded seconds per case")
    parser.add_argument(
        "--rounds", type=int, default=3, help="runs of every case; medians are printed"
    )
    parser.add_argument(
        "--draft-saves", type=int, default=4, help="draft saves a second in the mixed case"
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
    run_keel(env, "plugins", "install", "articles")
    run_keel(env, "plugins", "activate", "articles")
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
        auth = {"Authorization": f"Bearer {token}", **BROWSER}
        raw_auth = {"Authorization": auth["Authorization"]}
        httpx.get(f"{cached_base}/blog/{slug}")  # warm the cache
        copy_to_plugin(cached_base, auth, slug)
        ceiling_server, cached, uncached = servers
        anew = var_dir / "anew.lua"
        anew.write_text(ANEW_SCRIPT)
        listed = f"{cached_base}/api/v1/content?per_page=20"
        cases: list[tuple[str, str, dict[str, str] | None, Server, Path | None]] = [
            ("ceiling (hello world)", f"{ceiling_base}/", BROWSER, ceiling_server, None),
            ("cached post page", f"{cached_base}/blog/{slug}", BROWSER, cached, None),
            ("cached, no Accept-Encoding", f"{cached_base}/blog/{slug}", None, cached, None),
            ("uncached post page", f"{uncached_base}/blog/{slug}", BROWSER, uncached, None),
            (
                "plugin page (same weight)",
                f"{uncached_base}/p/articles/{slug}",
                BROWSER,
                uncached,
                None,
            ),
            ("JSON content list (20)", listed, auth, cached, None),
            ("JSON list (20), raw", listed, raw_auth, cached, None),
            ("JSON list (20), read anew", listed, auth, cached, anew),
        ]
        print(
            f"{'case':<26}{'conns':>6}{'req/s':>10}{'range':>14}{'p50 ms':>9}{'p99 ms':>9}"
            f"{'ratio':>8}{'CPU µs/req':>12}"
        )
        ceiling = 0.0
        core_and_plugin: dict[int, list[float]] = {}
        for connections in (64, 8):
            rounds: dict[str, list[Figures]] = {name: [] for name, *_ in cases}
            for _ in range(args.rounds):  # interleaved, so a slow spell of the VM hits all
                for name, url, headers, server, script in cases:
                    if args.warmup:
                        wrk(url, connections, args.warmup, headers, script=script)
                    rounds[name].append(
                        measured(server, url, connections, args.seconds, headers, script)
                    )
            for name, *_ in cases:
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
                cpu = median(f.cpu_us for f in rounds[name])
                print(
                    f"{name:<26}{connections:>6}{figures.rps:>10.0f}{spread:>14}"
                    f"{figures.p50_ms:>9.2f}{figures.p99_ms:>9.2f}{ratio:>8.3f}{cpu:>12.0f}"
                )
                if name in ("uncached post page", "plugin page (same weight)"):
                    core_and_plugin.setdefault(connections, []).append(figures.rps)
        for connections, (core, plugin) in core_and_plugin.items():
            print(
                f"  plugin page at {connections} connections: {core / plugin - 1:+.1%} time per "
                "request against the uncached post page (the issue's bound: at most +10 %)"
            )
        mixed_port = free_port()
        servers.append(
            start(
                "keel-mixed",
                keel("serve", "--port", str(mixed_port)),
                bench_environment(var_dir, cache_ttl=300, pool_size=DEFAULT_POOL_SIZE),
                mixed_port,
                "/health/ready",
            )
        )
        mixed(args, servers[-1].base, var_dir, ceiling)
    finally:
        stop_processes(*(server.process for server in servers))
        shutil.rmtree(var_dir, ignore_errors=True)
        asyncio.run(drop_database(DATABASE))


def copy_to_plugin(base: str, auth: dict[str, str], slug: str) -> None:
    """Give the articles plugin the post `slug` (title, body, tags, date) to serve."""
    copied = ("title", "body_html", "tags", "published_at")
    found = httpx.get(
        f"{base}/api/v1/content",
        params={"status": "published", "per_page": 100, "fields": ",".join(("slug", *copied))},
        headers=auth,
    ).json()["items"]
    entry = next(item for item in found if item["slug"] == slug)
    stored = httpx.put(
        f"{base}/api/plugins/articles/articles/{slug}",
        json={key: entry[key] for key in copied},
        headers=auth,
    )
    stored.raise_for_status()


def published_id(base: str, auth: dict[str, str]) -> str:
    """The id of one published post (the writer edits it)."""
    query = {"status": "published", "per_page": 1}
    return httpx.get(f"{base}/api/v1/content", params=query, headers=auth).json()["items"][0]["id"]


def mixed(args: argparse.Namespace, base: str, var_dir: Path, ceiling: float) -> None:
    """The public pages and the JSON list under load while content is written."""
    slugs = [f"benchmark-post-{n}" for n in range(0, POSTS, 6)]
    login = {"login": LOGIN, "password": PASSWORD}
    token = httpx.post(f"{base}/api/v1/auth/login", json=login).json()["access_token"]
    auth = {"Authorization": f"Bearer {token}"}
    script = mix_script(var_dir, slugs, auth["Authorization"])
    draft = httpx.post(f"{base}/api/v1/content", json={"title": "Bench draft"}, headers=auth)
    writer = Writer(base, auth, args.draft_saves, draft.json()["id"], published_id(base, auth))
    rounds: list[Figures] = []
    for _ in range(args.rounds):
        if args.warmup:
            wrk(base + "/", MIXED_CONNECTIONS, args.warmup, script=script, count_errors=True)
        writer.start()
        try:
            rounds.append(
                wrk(base + "/", MIXED_CONNECTIONS, args.seconds, script=script, count_errors=True)
            )
        finally:
            writer.stop()
    figures = Figures(
        median(f.rps for f in rounds),
        median(f.p50_ms for f in rounds),
        median(f.p99_ms for f in rounds),
    )
    spread = f"{min(f.rps for f in rounds):.0f}-{max(f.rps for f in rounds):.0f}"
    ratio = figures.rps / ceiling if ceiling else 0.0
    name = f"mixed, {args.draft_saves} draft saves/s"
    print(
        f"{name:<26}{MIXED_CONNECTIONS:>6}{figures.rps:>10.0f}{spread:>14}"
        f"{figures.p50_ms:>9.2f}{figures.p99_ms:>9.2f}{ratio:>8.3f}"
    )
    written = writer.writes / (args.rounds * args.seconds)
    print(
        f"  mixed case, all rounds: non-2xx {sum(f.non_2xx for f in rounds)}, "
        f"socket timeouts {sum(f.timeouts for f in rounds)}; writer: {writer.writes} "
        f"writes ({written:.1f}/s), {writer.failed} failed, slowest {writer.slowest_ms:.0f} ms"
    )


if __name__ == "__main__":
    main()
