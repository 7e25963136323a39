"""The `keel` command: serve, worker, db, check.

Every subcommand reads the same settings as the app; configuration problems are printed
one per line and end the command with exit code 2. So do arguments and a password from
standard input that hold what no database stores (a NUL, bytes that are not UTF-8): they
are refused as the web's input boundary refuses them (app/core/boundary.py).
"""

from __future__ import annotations

import asyncio
import errno
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from app.settings import ConfigError, Settings

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

    from app.accounts.models import User
    from app.core.runtime import Runtime

T = TypeVar("T")

EXIT_CONFIG = 2


def _fail(problems: list[str]) -> NoReturn:
    for problem in problems:
        click.echo(f"keel: {problem}", err=True)
    sys.exit(EXIT_CONFIG)


def load_settings() -> Settings:
    try:
        return Settings.from_env().with_secret()
    except ConfigError as exc:
        _fail(exc.problems)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="keel")
def cli() -> None:
    """Keel: public site, admin dashboard, JSON API, plugins and worker in one process."""


@cli.command()
@click.option("--host", default=None, help="Address to bind (default: HOST or 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port to bind (default: PORT or 8000).")
@click.option(
    "--workers", type=int, default=None, help="Worker processes (default: WEB_CONCURRENCY or 1)."
)
def serve(host: str | None, port: int | None, workers: int | None) -> None:
    """Serve Keel under granian."""
    import os
    from dataclasses import replace

    from granian import Granian
    from granian.constants import Interfaces

    settings = load_settings()
    app_settings = replace(
        settings.app,
        host=host or settings.app.host,
        port=port or settings.app.port,
        web_concurrency=workers or settings.app.web_concurrency,
    )
    settings = replace(settings, app=app_settings)
    if problems := settings.startup_problems():
        _fail(problems)
    if problems := _port_problems(app_settings.host, app_settings.port):
        _fail(problems)
    problems, first_step = asyncio.run(_before_serving(settings))
    if problems:
        _fail(problems)
    click.echo(first_step, err=True)
    # Granian's workers build the app from the environment: hand them the resolved values.
    os.environ.update(
        HOST=app_settings.host,
        PORT=str(app_settings.port),
        WEB_CONCURRENCY=str(app_settings.web_concurrency),
        SECRET_KEY=app_settings.secret_key,
    )
    from app.core.logging import configure_logging, granian_log_config

    configure_logging(app_settings.log_level)
    Granian(
        target="app.asgi:served_app",
        factory=True,
        address=app_settings.host,
        port=app_settings.port,
        interface=Interfaces.ASGI,
        workers=app_settings.web_concurrency,
        log_dictconfig=granian_log_config(app_settings.log_level),
        log_access=False,
        respawn_failed_workers=app_settings.is_production,
        workers_kill_timeout=8,
        backlog=2048,
    ).serve()


async def _before_serving(settings: Settings) -> tuple[list[str], str]:
    """What stops Keel from serving, and the line for the person who started it (one
    connection to the database for both)."""
    from app.core.db import create_engine

    engine = create_engine(settings.db)
    try:
        problems = await _database_problems(settings, engine)
        return problems, "" if problems else await _first_step(settings, engine)
    finally:
        await engine.dispose()


async def _database_problems(settings: Settings, engine: AsyncEngine) -> list[str]:
    """The database must answer and be migrated before Keel serves anything."""
    from app.core.db import describe_url, ping
    from app.core.migrations import current_revision

    try:
        await ping(engine, settings.db.connect_timeout)
        if await current_revision(engine) is None:
            return ["the database has no tables yet: run `keel db upgrade` first"]
    except Exception as exc:
        return [f"the database at {describe_url(settings.db.url)} does not answer: {_reason(exc)}"]
    return []


def _port_problems(host: str, port: int) -> list[str]:
    """The address must be free: one line saying so instead of granian's traceback."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        return [f"cannot listen on {host}: {exc.strerror or exc}"]
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return [
                    f"port {port} on {host} is already in use (another Keel, or another "
                    "program): stop it, or choose another port with --port or PORT"
                ]
            return [f"cannot listen on {host}:{port}: {exc.strerror or exc}"]
    return []


async def _first_step(settings: Settings, engine: AsyncEngine) -> str:
    """One line for the person who started Keel: where it is and what to do first."""
    from sqlalchemy import exists, select

    from app.accounts.models import User
    from app.core.templating import listening_address

    address = listening_address(settings.app.host, settings.app.port)
    async with engine.connect() as connection:
        has_users = bool(await connection.scalar(select(exists().where(User.id.is_not(None)))))
    if has_users:
        return f"Keel is starting on {address}: sign in at {address}/login (Ctrl+C stops it)."
    return (
        f"Keel is starting on {address}: open it in a browser to create the first admin "
        "account (Ctrl+C stops it)."
    )


def _reason(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


@cli.command()
@click.option(
    "--concurrency", type=int, default=None, help="Jobs run at once (default: WORKER_CONCURRENCY)."
)
@click.option(
    "--queues",
    default="default",
    show_default=True,
    help="Comma-separated queues to take jobs from.",
)
def worker(concurrency: int | None, queues: str) -> None:
    """Run background jobs until SIGTERM or SIGINT, then finish running work and exit 0."""
    from app.core.logging import configure_logging
    from app.extensions.services.host import PluginHost
    from app.runtime import build_runtime, build_worker

    settings = load_settings()
    configure_logging(settings.app.log_level)

    async def run() -> None:
        runtime = build_runtime(settings)
        process = build_worker(
            runtime,
            queues=tuple(q.strip() for q in queues.split(",") if q.strip()) or ("default",),
            concurrency=concurrency,
        )
        plugins = runtime.service(PluginHost)
        await plugins.sync()  # the active plugins' jobs and schedules, before the first claim
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, process.request_stop)
        try:
            await process.run()
        finally:
            await plugins.stop()
            await runtime.close()

    asyncio.run(run())


@cli.group()
def db() -> None:
    """Database migrations (Alembic, in migrations/)."""


def _migrations() -> Any:
    from app.core.migrations import migration_commands

    return migration_commands(load_settings().db)


@db.command()
@click.argument("revision", default="head")
def upgrade(revision: str) -> None:
    """Apply migrations up to REVISION (default: head)."""
    _migrations().upgrade(revision=revision)
    click.echo(f"database upgraded to {revision}")


@db.command()
@click.argument("revision", default="-1")
def downgrade(revision: str) -> None:
    """Revert migrations down to REVISION (default: one step)."""
    _migrations().downgrade(revision=revision)
    click.echo(f"database downgraded to {revision}")


@db.command()
@click.option("-m", "--message", required=True, help="What the migration does.")
@click.option("--autogenerate/--empty", default=True, help="Compare models with the database.")
def revision(message: str, autogenerate: bool) -> None:
    """Create a migration file in migrations/versions/."""
    _migrations().revision(message=message, autogenerate=autogenerate)


@db.command()
def current() -> None:
    """Show the revision the database is at."""
    _migrations().current(verbose=False)


@cli.group()
def users() -> None:
    """Accounts from the command line (the first admin, role changes, password resets)."""


def _read_password(from_stdin: bool) -> str:
    try:
        if from_stdin:
            password = sys.stdin.readline().rstrip("\n")
        else:
            password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    except UnicodeDecodeError:
        _fail(["password: the text is not UTF-8"])
    _refuse_unstorable("password", password)
    return password


def _refuse_unstorable(what: str, text: str) -> None:
    from app.core.boundary import UnstorableInput, refuse_unstorable_text

    try:
        refuse_unstorable_text(text)
    except UnstorableInput as exc:
        _fail([f"{what}: {exc.message}"])


async def _with_session(
    settings: Settings, work: Callable[[AsyncSession, Runtime], Awaitable[T]]
) -> T:
    """`work` in one transaction, with the process's runtime (`app/runtime.py`); what it
    committed reaches the active plugins' subscriptions, as a request's change does."""
    from app.extensions.services.host import PluginHost
    from app.runtime import build_runtime

    runtime = build_runtime(settings)
    try:
        async with runtime.sessionmaker() as session:
            async with session.begin():
                done = await work(session, runtime)
            await runtime.service(PluginHost).deliver_once(session)
            return done
    finally:
        await runtime.close()


@users.command("create")
@click.option("--email", required=True)
@click.option("--username", required=True)
@click.option(
    "--role", type=click.Choice(["viewer", "editor", "admin"]), default="viewer", show_default=True
)
@click.option("--display-name", default="")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
def users_create(
    email: str, username: str, role: str, display_name: str, password_stdin: bool
) -> None:
    """Create an account (the first one is how an admin exists without the /setup page)."""
    from app.accounts.models import Role
    from app.accounts.services.audit import Actor
    from app.accounts.services.password_hashing import PasswordHashing
    from app.accounts.services.users import AccountError, NewUser, create_user

    settings = load_settings()
    password = _read_password(password_stdin)
    data = NewUser(
        email=email, username=username, password=password, role=role, display_name=display_name
    )

    async def work(session: AsyncSession, runtime: Runtime) -> User:
        hashing = runtime.service(PasswordHashing)
        return await create_user(session, hashing, Actor.system("cli"), Role.admin, data)

    try:
        user = asyncio.run(_with_session(settings, work))
    except AccountError as exc:
        _fail([f"{exc.field + ': ' if exc.field else ''}{exc.message}"])
    click.echo(f"created {user.role} {user.username} <{user.email}> ({user.id})")


@users.command("list")
def users_list() -> None:
    """Every account: role, status, last sign-in."""
    from sqlalchemy import select

    from app.accounts.models import User

    async def work(session: AsyncSession, runtime: Runtime) -> list[User]:
        return list((await session.scalars(select(User).order_by(User.created_at))).all())

    for user in asyncio.run(_with_session(load_settings(), work)):
        status = "active" if user.is_active else "inactive"
        last = user.last_login_at.isoformat(timespec="minutes") if user.last_login_at else "never"
        click.echo(
            f"{user.username:<24} {user.email:<32} {user.role:<7} {status:<8} last sign-in {last}"
        )


async def _user_by_login(session: AsyncSession, login: str) -> User:
    from app.accounts.services.users import find_by_login

    user = await find_by_login(session, login)
    if user is None:
        _fail([f"no account {login!r}"])
    return user


@users.command("set-role")
@click.argument("login")
@click.argument("role", type=click.Choice(["viewer", "editor", "admin"]))
def users_set_role(login: str, role: str) -> None:
    """Give the account LOGIN (e-mail or username) another role."""
    from app.accounts.models import Role
    from app.accounts.services.audit import Actor
    from app.accounts.services.users import AccountError, update_user

    async def work(session: AsyncSession, runtime: Runtime) -> User:
        user = await _user_by_login(session, login)
        return await update_user(session, Actor.system("cli"), Role.admin, user, role=role)

    try:
        user = asyncio.run(_with_session(load_settings(), work))
    except AccountError as exc:
        _fail([exc.message])
    click.echo(f"{user.username} is now {user.role}")


@users.command("reset-password")
@click.argument("login")
@click.option("--password-stdin", is_flag=True, help="Read the new password from standard input.")
def users_reset_password(login: str, password_stdin: bool) -> None:
    """Set a new password for LOGIN; their sessions and tokens end."""
    from app.accounts.services.audit import Actor
    from app.accounts.services.password_hashing import PasswordHashing
    from app.accounts.services.passwords import set_password
    from app.accounts.services.users import AccountError

    settings = load_settings()
    password = _read_password(password_stdin)

    async def work(session: AsyncSession, runtime: Runtime) -> User:
        user = await _user_by_login(session, login)
        hashing = runtime.service(PasswordHashing)
        return await set_password(session, hashing, Actor.system("cli"), user, password)

    try:
        user = asyncio.run(_with_session(settings, work))
    except AccountError as exc:
        _fail([exc.message])
    click.echo(f"password of {user.username} changed; their sessions were ended")


@cli.group()
def plugins() -> None:
    """Plugins: list, install, activate, deactivate, accept changed files, uninstall, scaffold."""


def _plugin_step(step: str, name: str, **options: Any) -> None:
    """Run one lifecycle step (app/extensions/services/lifecycle.py) as the CLI; every
    running process follows within two seconds."""
    from app.accounts.services.audit import Actor
    from app.core.errors import DomainError
    from app.extensions.services import lifecycle
    from app.extensions.services.lifecycle import hooks_of

    async def work(session: AsyncSession, runtime: Runtime) -> Any:
        actor = Actor.system("cli")
        if step == "install":
            return await lifecycle.install(runtime, actor, name, hooks_of(runtime))
        if step == "accept":
            return await lifecycle.accept(session, runtime, actor, name)
        action = getattr(lifecycle, step)
        return await action(session, runtime, actor, name, hooks_of(runtime), **options)

    try:
        row = asyncio.run(_with_session(load_settings(), work))
    except DomainError as exc:
        _fail([f"{name}: {exc.message}"])
    if row is None:
        click.echo(f"{name}: uninstalled")
        return
    if row.status == "error":
        _fail([f"{name}: {row.error}"])
    click.echo(f"{name} {row.version}: {row.status}")


@plugins.command("list")
def plugins_list() -> None:
    """Installed plugins and plugin folders not installed yet."""
    from app.extensions.services import lifecycle

    async def work(session: AsyncSession, runtime: Runtime) -> list[Any]:
        return await lifecycle.list_plugins(session, runtime.settings)

    for view in asyncio.run(_with_session(load_settings(), work)):
        row, found = view.record, view.found
        version = row.version if row else (found.version if found else "?")
        status = row.status if row else ("available" if found else "unreadable")
        note = " (files changed: accept them first)" if view.files_changed else ""
        problem = (
            f": {view.problem or (row.error if row else '')}"
            if status in ("error", "unreadable")
            else ""
        )
        click.echo(f"{view.name:<24} {version:<12} {status}{note}{problem}")


@plugins.command("install")
@click.argument("name")
def plugins_install(name: str) -> None:
    """Install the plugin in PLUGINS_DIR/NAME: storage, migrations, on_install."""
    _plugin_step("install", name)


@plugins.command("activate")
@click.argument("name")
def plugins_activate(name: str) -> None:
    """Switch it on in every process (within two seconds, no restart)."""
    _plugin_step("activate", name)


@plugins.command("deactivate")
@click.argument("name")
def plugins_deactivate(name: str) -> None:
    """Switch it off in every process: its routes answer 404, its tasks stop."""
    _plugin_step("deactivate", name)


@plugins.command("accept")
@click.argument("name")
def plugins_accept(name: str) -> None:
    """Accept its files as they are now on disk (they changed since install)."""
    _plugin_step("accept", name)


@plugins.command("uninstall")
@click.argument("name")
@click.option("--yes", is_flag=True, help="Confirm: the plugin's data is removed.")
def plugins_uninstall(name: str, yes: bool) -> None:
    """Remove the plugin and its data (asks for --yes)."""
    if not yes:
        _fail([f"{name}: uninstalling removes the plugin's data; add --yes to go ahead"])
    _plugin_step("uninstall", name, confirm=True)


@plugins.command("new")
@click.argument("name")
def plugins_new(name: str) -> None:
    """Make a working plugin to start from, in PLUGINS_DIR/NAME."""
    from app.core.errors import DomainError
    from app.extensions.services.scaffold import scaffold

    try:
        folder = scaffold(load_settings().app.plugins_dir, name)
    except DomainError as exc:
        _fail([f"{name}: {exc.message}"])
    click.echo(f"created {folder}: install it with `keel plugins install {name}`")


@cli.command()
def check() -> None:
    """Validate configuration and connectivity; print what is wrong and exit non-zero."""
    try:
        settings = Settings.from_env().with_secret()
    except ConfigError as exc:
        _fail(exc.problems)
    problems = settings.startup_problems()
    problems += asyncio.run(_connectivity_problems(settings))
    from app.extensions.services.manifest import discover_plugins

    _, manifest_problems = discover_plugins(settings.app.plugins_dir)
    problems += [f"plugin manifest {p.path}: {p.message}" for p in manifest_problems]
    if problems:
        _fail(problems)
    click.echo("keel: configuration OK, database and store answer, migrations are current")


async def _connectivity_problems(settings: Settings) -> list[str]:
    from app.core.db import create_engine, describe_url
    from app.core.migrations import current_revision, head_revision
    from app.core.store import create_store

    engine = create_engine(settings.db)
    try:
        problems = await _database_problems(settings, engine)
        if not problems:
            current, head = await current_revision(engine), head_revision()
            if current != head:
                problems.append(
                    f"the database is at revision {current}, the code expects {head}: "
                    "run `keel db upgrade`"
                )
    finally:
        await engine.dispose()
    store = create_store(settings.store)
    try:
        await asyncio.wait_for(store.ping(), settings.health.check_timeout)
    except Exception as exc:
        problems.append(
            f"the store at {describe_url(settings.store.url)} does not answer: {_reason(exc)}"
        )
    finally:
        await store.close()
    return problems


def main(argv: list[str] | None = None) -> Callable[..., Any] | None:
    args = sys.argv[1:] if argv is None else argv
    for number, arg in enumerate(args, start=1):
        _refuse_unstorable(f"argument {number} ({arg!r})", arg)
    return cli.main(args=args, prog_name="keel")


if __name__ == "__main__":
    main()
