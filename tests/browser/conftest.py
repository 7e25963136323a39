"""Browser harness: a real `keel serve` per storage leg, driven by headless Chromium.

Chromium is the system's `/usr/bin/chromium` (never downloaded); Playwright's sync API
drives it. Outside CI a missing Chromium skips these tests with one message; under
CI=true it fails the run. Every test leaves a screenshot of its final page in
`test-artifacts/screenshots/<test>-<leg>.png`.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Error, Page, expect, sync_playwright

from app.settings import ROOT
from tests.conftest import (
    IN_CI,
    LEGS,
    PASSWORD,
    RUN_ID,
    free_port,
    keel_command,
    leg_environment,
    pg_url,
    recreate_pg_database,
    require_services,
    run_keel,
)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Everything under tests/browser is a browser test (`-m "not browser"` leaves it out).

    They run last: Playwright's sync API keeps an event loop in the main thread for the
    rest of the session, and the async tests need that thread free.
    """
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.browser)
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)


@dataclass(frozen=True)
class LiveServer:
    leg: str
    base_url: str
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    """The server's environment, for other `keel` processes on its database (a worker)."""

    def url(self, path: str = "/") -> str:
        return self.base_url + path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture(scope="session")
def chromium_executable() -> Path:
    """The system Chromium, or one clear skip (locally) / failure (CI) when it is missing."""
    if not CHROMIUM.is_file() or not os.access(CHROMIUM, os.X_OK):
        message = f"browser tests need Chromium at {CHROMIUM} (Debian: apt-get install chromium)"
        if IN_CI:
            pytest.fail(message + " (CI=true: a missing browser is a failure)", pytrace=False)
        pytest.skip(message)
    return CHROMIUM


def _remove_store_keys(url: str, prefix: str) -> None:
    from valkey import Valkey

    client = Valkey.from_url(url)
    try:
        keys = list(client.scan_iter(match=prefix + "*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def _wait_until_ready(process: subprocess.Popen[bytes], server: LiveServer) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    last = "no answer yet"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            last = f"keel serve exited with code {process.returncode}"
            break
        try:
            response = httpx.get(server.url("/health/ready"), timeout=2)
            if response.status_code == 200:
                return
            last = f"/health/ready answered {response.status_code}: {response.text}"
        except httpx.HTTPError as exc:
            last = f"{type(exc).__name__}: {exc}"
        time.sleep(0.2)
    print(f"----- keel serve log ({server.leg}) -----\n{server.log()}")
    pytest.fail(f"keel serve ({server.leg}) did not become ready: {last}", pytrace=False)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        # The server runs in its own session: its group id is its pid.
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=STOP_TIMEOUT)


@contextmanager
def serve_keel(
    leg: str, tmp_path_factory: pytest.TempPathFactory, name: str, with_admin: bool
) -> Iterator[LiveServer]:
    """`keel serve` on a free loopback port, migrated and ready, for one storage leg.

    `name` keeps its database and store keys apart from other servers of the session;
    `with_admin` creates the `admin` account first (else the server is on its first run).
    """
    if leg == "services":
        require_services()
    var_dir = tmp_path_factory.mktemp(f"{name}-{leg}")
    env = leg_environment(leg, var_dir)
    database = f"keel_{name}_{RUN_ID}"
    if leg == "services":
        recreate_pg_database(database)
        env["DATABASE_URL"] = pg_url(database)
        env["VALKEY_KEY_PREFIX"] = f"keel{name}{RUN_ID}:"
        env["WEB_CONCURRENCY"] = "2"
    else:
        env["WEB_CONCURRENCY"] = "1"

    migrated = run_keel("db", "upgrade", env=env)
    assert migrated.returncode == 0, f"keel db upgrade failed:\n{migrated.stdout}{migrated.stderr}"
    if with_admin:
        admin = run_keel(
            "users",
            "create",
            "--role",
            "admin",
            "--email",
            "admin@example.org",
            "--username",
            "admin",
            "--password-stdin",
            env=env,
            stdin=PASSWORD + "\n",
        )
        assert admin.returncode == 0, admin.stderr

    port = free_port()
    server = LiveServer(leg, f"http://127.0.0.1:{port}", var_dir / "keel-serve.log", env)
    with server.log_path.open("wb") as log_file:
        process = subprocess.Popen(
            keel_command("serve", "--host", "127.0.0.1", "--port", str(port)),
            env=env,
            cwd=ROOT,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_until_ready(process, server)
        yield server
    finally:
        _stop(process)
        if leg == "services":
            _remove_store_keys(env["VALKEY_URL"], env["VALKEY_KEY_PREFIX"])
            recreate_pg_database(database, create=False)


@contextmanager
def keel_worker(env: dict[str, str], server: LiveServer) -> Iterator[None]:
    """`keel worker` beside a services-leg server (embedded mode runs its own in `keel
    serve`), stopped with SIGTERM when the block ends."""
    worker = subprocess.Popen(
        keel_command("worker"),
        # without PUBLIC_URL a worker's site address is HOST:PORT of its own env
        env={**env, "WORKER_POLL_INTERVAL": "0.5", "PUBLIC_URL": server.base_url},
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield
    finally:
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=15) == 0


@contextmanager
def watched_page(browser: Browser) -> Iterator[Page]:
    """A page in a fresh 1280 px context of its own (for a server other than the session's),
    with the console errors and page errors it saw in `page.console_errors`."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    fresh = context.new_page()
    errors: list[str] = []
    fresh.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    fresh.on("pageerror", lambda error: errors.append(f"page error: {error}"))
    page_with_errors: Any = fresh
    page_with_errors.console_errors = errors
    try:
        yield fresh
    finally:
        context.close()


@pytest.fixture(scope="session", params=LEGS)
def live_server(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    chromium_executable: Path,
) -> Iterator[LiveServer]:
    """A set-up installation (an `admin` account exists) for one storage leg."""
    with serve_keel(request.param, tmp_path_factory, "browser", with_admin=True) as server:
        yield server


@pytest.fixture(scope="session")
def browser(chromium_executable: Path) -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=str(chromium_executable), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield chromium
        finally:
            chromium.close()


def _describe_console(message: ConsoleMessage) -> str:
    location = message.location or {}
    where = location.get("url", "")
    return f"console error: {message.text}" + (f" ({where})" if where else "")


@contextmanager
def browser_page(
    request: pytest.FixtureRequest,
    browser: Browser,
    leg: str,
    width: int = 1280,
    height: int = 800,
    **context_options: Any,
) -> Iterator[Page]:
    """A fresh context and page `width` px wide; `page.console_errors` collects console
    errors and JS errors; its final page is left as a screenshot. `context_options` go to
    Playwright's `new_context` (`java_script_enabled=False`, `bypass_csp=True`)."""
    context = browser.new_context(viewport={"width": width, "height": height}, **context_options)
    context.set_default_timeout(10_000)
    new_page = context.new_page()
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            errors.append(_describe_console(message))

    def on_page_error(error: Error) -> None:
        errors.append(f"page error: {error}")

    new_page.on("console", on_console)
    new_page.on("pageerror", on_page_error)
    page_with_errors: Any = new_page
    page_with_errors.console_errors = errors
    try:
        yield new_page
    finally:
        try:
            SCREENSHOTS.mkdir(parents=True, exist_ok=True)
            name = getattr(request.node, "originalname", None) or request.node.name
            new_page.screenshot(path=str(SCREENSHOTS / f"{name}-{leg}.png"))
        except Error as exc:  # a screenshot is a courtesy; never fail the test for it
            print(f"screenshot failed: {exc}")
        finally:
            context.close()


@pytest.fixture
def page(
    request: pytest.FixtureRequest, browser: Browser, live_server: LiveServer
) -> Iterator[Page]:
    """A fresh page 1280 px wide (see `browser_page`).

    CSP violations are reported by Chromium as console errors, so an empty
    `page.console_errors` also means the page broke no Content-Security-Policy rule.
    """
    with browser_page(request, browser, live_server.leg) as new_page:
        yield new_page


AXE = HERE / "vendor" / "axe.min.js"
"""axe-core, vendored for the tests only (vendor/README.md); Keel never serves it."""

AXE_RUN = """async () => {
  const { violations } = await axe.run(document, { resultTypes: ["violations"] });
  const where = (n) =>
    n.target.join(" ") + " (" + (n.failureSummary || "").replace(/\\s+/g, " ") + ")";
  return violations
    .filter((v) => v.impact === "serious" || v.impact === "critical")
    .map((v) => `${v.impact} ${v.id}: ${v.help} at ${v.nodes.slice(0, 3).map(where).join("; ")}`);
}"""


def axe_violations(page: Page) -> list[str]:
    """The serious and critical accessibility violations axe-core finds on the page as it is
    shown now, one line each (rule, what it asks, the first elements). axe is injected as an
    inline script: the page's context needs `bypass_csp=True` (the app's CSP stays strict)."""
    page.add_script_tag(path=str(AXE))
    return list(page.evaluate(AXE_RUN))


def sign_in(
    page: Page, live_server: LiveServer, login: str = "admin", password: str = PASSWORD
) -> None:
    """Sign in through the real form, as a person would."""
    page.goto(live_server.url("/login"))
    page.fill("#f-login", login)
    page.fill("#f-password", password)
    page.click("button[type=submit]")
    # Wait for the redirect away from the form: under load, networkidle alone could let
    # the next goto cancel the sign-in still in flight.
    expect(page).not_to_have_url(re.compile(r"/login(\?|$)"), timeout=20_000)
    page.wait_for_load_state("networkidle")
