"""Keel's start-up configuration, read once from the environment (and an optional `.env`).

One frozen dataclass per concern; every field names the variable it comes from. Runtime
settings that admins change (site title, registration, ...) are not here: they live in
the database behind `app.site_settings.services`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Literal, TypeVar
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parent.parent
"""The checkout (or image) root: templates/, static/, plugins/ and migrations/ live here."""

MIN_SECRET_BYTES = 32


class ConfigError(ValueError):
    """The configuration cannot work; `problems` holds one line per reason."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class AppSettings:
    env: Literal["development", "production"] = "development"
    """APP_ENV: `production` turns on secure cookies, HSTS and strict start-up checks."""
    secret_key: str = ""
    """SECRET_KEY: signs sessions and tokens. Generated into var/ in development when unset."""
    host: str = "127.0.0.1"
    """HOST: the address `keel serve` binds."""
    port: int = 8000
    """PORT: the port `keel serve` binds."""
    web_concurrency: int = 1
    """WEB_CONCURRENCY: granian worker processes."""
    log_level: str = "INFO"
    """LOG_LEVEL: DEBUG, INFO, WARNING or ERROR."""
    cors_origins: tuple[str, ...] = ()
    """CORS_ORIGINS: comma-separated origins allowed to call the API from a browser."""
    public_url: str = ""
    """PUBLIC_URL: the site's address as visitors reach it (`https://example.org`). Links
    that leave a page (e-mails, feeds, sitemap, canonical and Open Graph tags) are built on
    it, never on the request's Host header. Required in production."""
    trusted_proxies: tuple[IPv4Network | IPv6Network, ...] = ()
    """TRUSTED_PROXIES: comma-separated addresses/networks whose X-Forwarded-For and
    X-Request-ID are believed."""
    var_dir: Path = ROOT / "var"
    """VAR_DIR: writable state for embedded mode (SQLite file, generated secret)."""
    plugins_dir: Path = ROOT / "plugins"
    """PLUGINS_DIR: where plugin folders (each with a plugin.toml) are found."""
    cache_ttl: int = 300
    """CACHE_TTL_SECONDS: how long anonymous public pages stay cached (0 turns it off)."""
    media_dir: Path = ROOT / "var" / "media"
    """MEDIA_DIR: where uploaded media files are stored (default `<VAR_DIR>/media`)."""

    @property
    def is_production(self) -> bool:
        return self.env == "production"


@dataclass(frozen=True)
class DatabaseSettings:
    url: str = "sqlite+aiosqlite:///var/keel.db"
    """DATABASE_URL: SQLAlchemy URL; `postgresql+asyncpg://...` in production (by default
    the SQLite file `keel.db` in VAR_DIR)."""
    pool_size: int = 10
    """DB_POOL_SIZE: connections kept open per process (PostgreSQL)."""
    read_pool_size: int = 10
    """DB_READ_POOL_SIZE: connections per process for the hot public reads, which run beside
    the SQLAlchemy pool (app/core/reads.py): on asyncpg directly, or on an SQLite engine of
    their own."""
    max_overflow: int = 10
    """DB_MAX_OVERFLOW: extra connections allowed under load (PostgreSQL)."""
    pool_timeout: float = 5.0
    """DB_POOL_TIMEOUT: seconds to wait for a free connection before answering 503."""
    pool_recycle: int = 1800
    """DB_POOL_RECYCLE: seconds after which a connection is replaced."""
    connect_timeout: float = 5.0
    """DB_CONNECT_TIMEOUT: seconds to establish a new connection."""
    statement_timeout_ms: int = 30_000
    """DB_STATEMENT_TIMEOUT_MS: PostgreSQL statement_timeout for every session."""
    echo: bool = False
    """DB_ECHO: log every SQL statement (development aid)."""

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")


@dataclass(frozen=True)
class StoreSettings:
    url: str = ""
    """VALKEY_URL: `valkey://` or `redis://` URL; empty means the in-process memory store."""
    connect_timeout: float = 1.0
    """VALKEY_CONNECT_TIMEOUT: seconds to connect before the store counts as down."""
    socket_timeout: float = 1.0
    """VALKEY_SOCKET_TIMEOUT: seconds any store command may take."""
    key_prefix: str = "keel:"
    """VALKEY_KEY_PREFIX: prefix of every key Keel writes, so instances can share a server."""

    @property
    def is_memory(self) -> bool:
        return not self.url


@dataclass(frozen=True)
class HealthSettings:
    check_timeout: float = 2.0
    """HEALTH_CHECK_TIMEOUT: seconds each readiness probe (database, store) may take."""


@dataclass(frozen=True)
class WorkerSettings:
    concurrency: int = 4
    """WORKER_CONCURRENCY: jobs one worker process runs at once."""
    shutdown_grace: float = 30.0
    """WORKER_SHUTDOWN_GRACE: seconds running jobs get to finish after SIGTERM."""
    heartbeat_interval: float = 5.0
    """WORKER_HEARTBEAT_INTERVAL: seconds between heartbeats."""
    lease_seconds: float = 30.0
    """WORKER_LEASE_SECONDS: how long a claimed job stays a worker's without renewal; a job
    whose worker died runs again this long after its last renewal."""
    poll_interval: float = 2.0
    """WORKER_POLL_INTERVAL: seconds an idle worker waits for a wake-up before it looks
    for due jobs anyway (retries, delayed jobs, a missed wake-up)."""
    retry_backoff: float = 10.0
    """WORKER_RETRY_BACKOFF: seconds before the first retry; doubles per attempt, with jitter."""
    job_modules: tuple[str, ...] = ()
    """JOB_MODULES: comma-separated extra modules that declare job handlers (imported at start)."""
    files_dir: str = "job-files"
    """JOB_FILES_DIR: folder inside VAR_DIR for job result files (exports, reports)."""
    export_retention_hours: int = 24
    """EXPORT_RETENTION_HOURS: how long export and report files stay downloadable."""
    import_max_bytes: int = 5 * 1024 * 1024
    """IMPORT_MAX_BYTES: the largest CSV file an `import` job accepts."""
    import_max_rows: int = 5000
    """IMPORT_MAX_ROWS: the most data rows an `import` CSV file may hold."""


@dataclass(frozen=True)
class AuthSettings:
    session_idle_minutes: int = 30
    """SESSION_IDLE_MINUTES: a browser session ends after this long without a request."""
    session_max_hours: int = 12
    """SESSION_MAX_HOURS: a browser session ends this long after sign-in, whatever happens."""
    access_token_minutes: int = 30
    """ACCESS_TOKEN_MINUTES: lifetime of an API access token (JWT)."""
    refresh_token_days: int = 7
    """REFRESH_TOKEN_DAYS: lifetime of an API refresh token."""
    login_max_failures: int = 5
    """LOGIN_MAX_FAILURES: failed sign-ins per account before it is locked for a while."""
    login_max_failures_per_ip: int = 20
    """LOGIN_MAX_FAILURES_PER_IP: failed sign-ins per client address per lock-out window."""
    login_lockout_minutes: int = 15
    """LOGIN_LOCKOUT_MINUTES: how long a throttled account or address waits."""
    password_hash_concurrency: int = 2
    """PASSWORD_HASH_CONCURRENCY: password hashes computed at once per process."""


@dataclass(frozen=True)
class MailSettings:
    smtp_url: str = ""
    """SMTP_URL: where the `notify` job sends e-mail (`smtp://user:pass@host:587`,
    `smtp+starttls://…`, `smtps://…`); empty keeps messages in the admin outbox."""
    mail_from: str = "keel@localhost"
    """MAIL_FROM: the sender address of Keel's e-mails."""


@dataclass(frozen=True)
class MetricsSettings:
    token: str = ""
    """METRICS_TOKEN: the bearer token a Prometheus server sends to read `/metrics`; empty
    means only admins (API key, access token or session) may read it."""


@dataclass(frozen=True)
class PluginSettings:
    trusted_keys: tuple[str, ...] = ()
    """PLUGIN_TRUSTED_KEYS: Ed25519 public keys (base64, comma-separated) whose signatures a
    plugin may carry; a signature by any other key is refused."""
    allow_unsigned: bool = True
    """PLUGIN_ALLOW_UNSIGNED: whether a plugin without a signature may be installed (default:
    yes in development, no in production)."""
    upload_max_bytes: int = 20 * 1024 * 1024
    """PLUGIN_UPLOAD_MAX_BYTES: the largest plugin zip an admin may upload."""
    upload_max_files: int = 2000
    """PLUGIN_UPLOAD_MAX_FILES: the most entries a plugin zip may hold."""
    time_limit_cap: float = 30.0
    """PLUGIN_TIME_LIMIT_SECONDS: the longest any plugin hook, request or task may run,
    whatever its manifest asks."""


@dataclass(frozen=True)
class Settings:
    app: AppSettings = field(default_factory=AppSettings)
    db: DatabaseSettings = field(default_factory=DatabaseSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    health: HealthSettings = field(default_factory=HealthSettings)
    worker: WorkerSettings = field(default_factory=WorkerSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    mail: MailSettings = field(default_factory=MailSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    plugins: PluginSettings = field(default_factory=PluginSettings)

    @property
    def embedded(self) -> bool:
        """True when Keel runs with no services: SQLite and the in-memory store."""
        return self.db.is_sqlite and self.store.is_memory

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, env_file: Path | None = None
    ) -> Settings:
        """Read settings from `environ` (default: the process environment) over `.env`.

        Raises ConfigError listing every variable that does not parse.
        """
        values = dict(read_env_file(env_file if env_file is not None else ROOT / ".env"))
        values.update(os.environ if environ is None else environ)
        reader = _Reader(values)
        var_dir = Path(reader.text("VAR_DIR", str(ROOT / "var")))
        if not var_dir.is_absolute():
            var_dir = ROOT / var_dir
        app = AppSettings(
            env=reader.choice("APP_ENV", ("development", "production"), "development"),
            secret_key=reader.text("SECRET_KEY", ""),
            host=reader.text("HOST", "127.0.0.1"),
            port=reader.integer("PORT", 8000, minimum=1, maximum=65535),
            web_concurrency=reader.integer("WEB_CONCURRENCY", 1, minimum=1, maximum=256),
            log_level=reader.choice(
                "LOG_LEVEL", ("DEBUG", "INFO", "WARNING", "ERROR"), "INFO", upper=True
            ),
            cors_origins=reader.items("CORS_ORIGINS"),
            public_url=reader.site_url("PUBLIC_URL"),
            trusted_proxies=reader.networks("TRUSTED_PROXIES"),
            var_dir=var_dir,
            plugins_dir=Path(reader.text("PLUGINS_DIR", str(ROOT / "plugins"))),
            cache_ttl=reader.integer("CACHE_TTL_SECONDS", 300, minimum=0),
            media_dir=_under_root(Path(reader.text("MEDIA_DIR", str(var_dir / "media")))),
        )
        db = DatabaseSettings(
            url=_sqlite_url_under_root(
                reader.text("DATABASE_URL", f"sqlite+aiosqlite:///{var_dir / 'keel.db'}")
            ),
            pool_size=reader.integer("DB_POOL_SIZE", 10, minimum=1),
            read_pool_size=reader.integer("DB_READ_POOL_SIZE", 10, minimum=1),
            max_overflow=reader.integer("DB_MAX_OVERFLOW", 10, minimum=0),
            pool_timeout=reader.number("DB_POOL_TIMEOUT", 5.0),
            pool_recycle=reader.integer("DB_POOL_RECYCLE", 1800, minimum=1),
            connect_timeout=reader.number("DB_CONNECT_TIMEOUT", 5.0),
            statement_timeout_ms=reader.integer("DB_STATEMENT_TIMEOUT_MS", 30_000, minimum=0),
            echo=reader.flag("DB_ECHO", False),
        )
        store = StoreSettings(
            url=reader.text("VALKEY_URL", ""),
            connect_timeout=reader.number("VALKEY_CONNECT_TIMEOUT", 1.0),
            socket_timeout=reader.number("VALKEY_SOCKET_TIMEOUT", 1.0),
            key_prefix=reader.text("VALKEY_KEY_PREFIX", "keel:"),
        )
        health = HealthSettings(check_timeout=reader.number("HEALTH_CHECK_TIMEOUT", 2.0))
        worker = WorkerSettings(
            concurrency=reader.integer("WORKER_CONCURRENCY", 4, minimum=1),
            shutdown_grace=reader.number("WORKER_SHUTDOWN_GRACE", 30.0),
            heartbeat_interval=reader.number("WORKER_HEARTBEAT_INTERVAL", 5.0),
            lease_seconds=reader.number("WORKER_LEASE_SECONDS", 30.0),
            poll_interval=reader.number("WORKER_POLL_INTERVAL", 2.0),
            retry_backoff=reader.number("WORKER_RETRY_BACKOFF", 10.0),
            job_modules=reader.items("JOB_MODULES"),
            files_dir=reader.text("JOB_FILES_DIR", "job-files"),
            export_retention_hours=reader.integer("EXPORT_RETENTION_HOURS", 24, minimum=1),
            import_max_bytes=reader.integer(
                "IMPORT_MAX_BYTES", 5 * 1024 * 1024, minimum=1024, maximum=100 * 1024 * 1024
            ),
            import_max_rows=reader.integer("IMPORT_MAX_ROWS", 5000, minimum=1, maximum=100_000),
        )
        auth = AuthSettings(
            session_idle_minutes=reader.integer("SESSION_IDLE_MINUTES", 30, minimum=1),
            session_max_hours=reader.integer("SESSION_MAX_HOURS", 12, minimum=1),
            access_token_minutes=reader.integer("ACCESS_TOKEN_MINUTES", 30, minimum=1),
            refresh_token_days=reader.integer("REFRESH_TOKEN_DAYS", 7, minimum=1),
            login_max_failures=reader.integer("LOGIN_MAX_FAILURES", 5, minimum=1),
            login_max_failures_per_ip=reader.integer("LOGIN_MAX_FAILURES_PER_IP", 20, minimum=1),
            login_lockout_minutes=reader.integer("LOGIN_LOCKOUT_MINUTES", 15, minimum=1),
            password_hash_concurrency=reader.integer("PASSWORD_HASH_CONCURRENCY", 2, minimum=1),
        )
        mail = MailSettings(
            smtp_url=reader.text("SMTP_URL", ""),
            mail_from=reader.text("MAIL_FROM", "keel@localhost"),
        )
        metrics = MetricsSettings(token=reader.text("METRICS_TOKEN", ""))
        plugins = PluginSettings(
            trusted_keys=reader.items("PLUGIN_TRUSTED_KEYS"),
            allow_unsigned=reader.flag("PLUGIN_ALLOW_UNSIGNED", app.env != "production"),
            upload_max_bytes=reader.integer(
                "PLUGIN_UPLOAD_MAX_BYTES", 20 * 1024 * 1024, minimum=1024, maximum=500 * 1024 * 1024
            ),
            upload_max_files=reader.integer(
                "PLUGIN_UPLOAD_MAX_FILES", 2000, minimum=1, maximum=100_000
            ),
            time_limit_cap=reader.number("PLUGIN_TIME_LIMIT_SECONDS", 30.0),
        )
        if mail.smtp_url and not mail.smtp_url.startswith(
            ("smtp://", "smtp+starttls://", "smtps://")
        ):
            reader.problems.append("SMTP_URL must start with smtp://, smtp+starttls:// or smtps://")
        if store.url and not store.url.startswith(
            ("valkey://", "valkeys://", "redis://", "rediss://", "unix://")
        ):
            reader.problems.append(
                "VALKEY_URL must start with valkey://, valkeys://, redis://, rediss:// or unix://"
            )
        files = Path(worker.files_dir)
        if not worker.files_dir or files.is_absolute() or ".." in files.parts:
            reader.problems.append("JOB_FILES_DIR must be a relative folder inside VAR_DIR")
        if not db.url.startswith(("sqlite+aiosqlite://", "postgresql+asyncpg://")):
            reader.problems.append(
                "DATABASE_URL must be sqlite+aiosqlite:///path or postgresql+asyncpg://user@host/db"
            )
        if reader.problems:
            raise ConfigError(reader.problems)
        return cls(
            app=app,
            db=db,
            store=store,
            health=health,
            worker=worker,
            auth=auth,
            mail=mail,
            metrics=metrics,
            plugins=plugins,
        )

    def with_secret(self) -> Settings:
        """Fill a missing development SECRET_KEY from var/secret_key, creating it once (0600)."""
        if self.app.secret_key or self.app.is_production:
            return self
        path = self.app.var_dir / "secret_key"
        if not path.exists():
            _create_secret_file(path)
        key = path.read_text().strip()
        return replace(self, app=replace(self.app, secret_key=key))

    def startup_problems(self) -> list[str]:
        """Configurations that cannot work, one line each (empty when all is well)."""
        problems: list[str] = []
        if self.app.is_production and len(self.app.secret_key.encode()) < MIN_SECRET_BYTES:
            problems.append(
                f"SECRET_KEY must be set to at least {MIN_SECRET_BYTES} bytes in production "
                "(generate one with: python -c 'import secrets; print(secrets.token_urlsafe(48))')"
            )
        if self.store.is_memory and self.app.web_concurrency > 1:
            problems.append(
                f"WEB_CONCURRENCY={self.app.web_concurrency} needs a shared store: set VALKEY_URL "
                "(the in-memory store lives in one process)"
            )
        token = self.metrics.token
        if self.app.is_production and token and len(token.encode()) < MIN_SECRET_BYTES:
            problems.append(
                f"METRICS_TOKEN must be at least {MIN_SECRET_BYTES} bytes in production, or "
                "unset (then only admins read /metrics)"
            )
        if self.app.is_production and self.store.is_memory:
            problems.append("VALKEY_URL must be set in production (sessions and limits are shared)")
        if self.app.is_production and not self.app.public_url:
            problems.append(
                "PUBLIC_URL must be set in production (https://your.site): e-mailed links, "
                "feeds and canonical addresses must never come from a request's Host header"
            )
        return problems


def _create_secret_file(path: Path) -> None:
    """Write a new secret to a private temporary file, then link it into place: when several
    processes start at once, one link wins and nobody ever reads a half-written key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
        with contextlib.suppress(FileExistsError):  # another process won: use its key
            os.link(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _under_root(path: Path) -> Path:
    """A relative path means one under the checkout, wherever Keel was started from."""
    return path if path.is_absolute() else ROOT / path


def _sqlite_url_under_root(url: str) -> str:
    """Resolve a relative SQLite path against the checkout, so `var/keel.db` means one file."""
    prefix = "sqlite+aiosqlite:///"
    if url.startswith(prefix) and not url.startswith(prefix + "/") and ":memory:" not in url:
        return prefix + str(ROOT / url[len(prefix) :])
    return url


def read_env_file(path: Path) -> dict[str, str]:
    """Parse KEY=VALUE lines of a `.env` file; comments, blanks and `export ` are allowed."""
    if not path.is_file():
        return {}
    values: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.removeprefix("export ").partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


_Choice = TypeVar("_Choice", bound=str)


class _Reader:
    """Typed look-ups over the merged environment that collect every problem at once."""

    def __init__(self, values: Mapping[str, str]) -> None:
        self.values = values
        self.problems: list[str] = []

    def text(self, name: str, default: str) -> str:
        value = self.values.get(name, "").strip()
        return value or default

    def integer(
        self, name: str, default: int, minimum: int | None = None, maximum: int | None = None
    ) -> int:
        raw = self.text(name, str(default))
        try:
            value = int(raw)
        except ValueError:
            self.problems.append(f"{name}={raw!r} is not a whole number")
            return default
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            bounds = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
            self.problems.append(f"{name}={value} must be {bounds}")
            return default
        return value

    def number(self, name: str, default: float) -> float:
        raw = self.text(name, str(default))
        try:
            value = float(raw)
        except ValueError:
            self.problems.append(f"{name}={raw!r} is not a number")
            return default
        if value <= 0:
            self.problems.append(f"{name}={raw} must be positive")
            return default
        return value

    def flag(self, name: str, default: bool) -> bool:
        raw = self.text(name, "").lower()
        if not raw:
            return default
        if raw in {"1", "true", "yes", "on"}:
            return True
        if raw in {"0", "false", "no", "off"}:
            return False
        self.problems.append(f"{name}={raw!r} must be true or false")
        return default

    def choice(
        self, name: str, options: tuple[_Choice, ...], default: _Choice, upper: bool = False
    ) -> _Choice:
        raw = self.text(name, default)
        value = raw.upper() if upper else raw.lower()
        for option in options:
            if option == value:
                return option
        self.problems.append(f"{name}={raw!r} must be one of: {', '.join(options)}")
        return default

    def site_url(self, name: str) -> str:
        """An http(s) address without path, query or fragment; kept without a final `/`."""
        raw = self.text(name, "").rstrip("/")
        if not raw:
            return ""
        parts = urlsplit(raw)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path:
            self.problems.append(
                f"{name}={raw!r} must be the site's address, like https://example.org"
            )
            return ""
        if parts.query or parts.fragment or parts.username or parts.password:
            self.problems.append(f"{name}={raw!r} must not hold a query, fragment or password")
            return ""
        return raw

    def items(self, name: str) -> tuple[str, ...]:
        return tuple(item.strip() for item in self.text(name, "").split(",") if item.strip())

    def networks(self, name: str) -> tuple[IPv4Network | IPv6Network, ...]:
        networks = []
        for item in self.items(name):
            try:
                networks.append(ip_network(item, strict=False))
            except ValueError:
                self.problems.append(f"{name} has {item!r}, which is not an IP address or network")
        return tuple(networks)
