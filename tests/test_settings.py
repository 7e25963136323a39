"""Start-up configuration: app/settings.py."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest

from app.jobs.services.registry import files_dir
from app.settings import ROOT, ConfigError, Settings

NO_FILE = Path("/nonexistent/.env")


def test_defaults_are_the_embedded_mode() -> None:
    settings = Settings.from_env({}, env_file=NO_FILE)
    assert settings.embedded
    assert settings.db.url == f"sqlite+aiosqlite:///{ROOT}/var/keel.db"
    assert settings.store.is_memory
    assert (settings.app.env, settings.app.host, settings.app.port) == (
        "development",
        "127.0.0.1",
        8000,
    )


def test_services_urls_switch_to_production_storage() -> None:
    settings = Settings.from_env(
        {"DATABASE_URL": "postgresql+asyncpg://u@db/keel", "VALKEY_URL": "valkey://cache:6379/0"},
        env_file=NO_FILE,
    )
    assert not settings.embedded
    assert not settings.db.is_sqlite and not settings.store.is_memory


def test_every_malformed_variable_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as error:
        Settings.from_env(
            {
                "PORT": "eighty",
                "WEB_CONCURRENCY": "0",
                "APP_ENV": "staging",
                "TRUSTED_PROXIES": "10.0.0.0/8,not-an-ip",
                "DATABASE_URL": "mysql://x",
                "VALKEY_URL": "http://cache",
            },
            env_file=NO_FILE,
        )
    text = "\n".join(error.value.problems)
    for name in (
        "PORT",
        "WEB_CONCURRENCY",
        "APP_ENV",
        "TRUSTED_PROXIES",
        "DATABASE_URL",
        "VALKEY_URL",
    ):
        assert name in text
    assert len(error.value.problems) == 6


def test_production_without_a_strong_secret_is_refused() -> None:
    weak = Settings.from_env(
        {"APP_ENV": "production", "SECRET_KEY": "short", "VALKEY_URL": "redis://c"},
        env_file=NO_FILE,
    )
    assert any("SECRET_KEY" in p and "32 bytes" in p for p in weak.startup_problems())
    strong = Settings.from_env(
        {
            "APP_ENV": "production",
            "SECRET_KEY": "x" * 32,
            "VALKEY_URL": "redis://c",
            "PUBLIC_URL": "https://keel.example/",
        },
        env_file=NO_FILE,
    )
    assert strong.startup_problems() == []
    assert strong.app.public_url == "https://keel.example"


def test_production_needs_the_sites_public_address() -> None:
    production = {"APP_ENV": "production", "SECRET_KEY": "x" * 32, "VALKEY_URL": "redis://c"}
    unset = Settings.from_env(production, env_file=NO_FILE)
    assert any("PUBLIC_URL" in p and "Host header" in p for p in unset.startup_problems())
    assert Settings.from_env({}, env_file=NO_FILE).startup_problems() == [], "optional in dev"
    for wrong in ("keel.example", "ftp://keel.example", "https://keel.example/blog?x=1"):
        with pytest.raises(ConfigError) as error:
            Settings.from_env({**production, "PUBLIC_URL": wrong}, env_file=NO_FILE)
        assert any("PUBLIC_URL" in p for p in error.value.problems), wrong


def test_a_weak_metrics_token_is_refused_in_production_and_none_means_admins_only() -> None:
    production = {
        "APP_ENV": "production",
        "SECRET_KEY": "x" * 32,
        "VALKEY_URL": "redis://c",
        "PUBLIC_URL": "https://keel.example",
    }
    weak = Settings.from_env({**production, "METRICS_TOKEN": "guessable"}, env_file=NO_FILE)
    assert any("METRICS_TOKEN" in p for p in weak.startup_problems())
    strong = Settings.from_env({**production, "METRICS_TOKEN": "t" * 32}, env_file=NO_FILE)
    assert strong.metrics.token == "t" * 32 and strong.startup_problems() == []
    unset = Settings.from_env(production, env_file=NO_FILE)
    assert unset.metrics.token == "" and unset.startup_problems() == []
    development = Settings.from_env({"METRICS_TOKEN": "short"}, env_file=NO_FILE)
    assert development.startup_problems() == []


def test_memory_store_with_several_workers_is_refused() -> None:
    settings = Settings.from_env({"WEB_CONCURRENCY": "4"}, env_file=NO_FILE)
    problems = settings.startup_problems()
    assert len(problems) == 1
    assert "WEB_CONCURRENCY=4" in problems[0] and "VALKEY_URL" in problems[0]
    shared = Settings.from_env(
        {"WEB_CONCURRENCY": "4", "VALKEY_URL": "redis://c"}, env_file=NO_FILE
    )
    assert shared.startup_problems() == []


def test_development_secret_is_generated_once_and_kept_private(tmp_path: Path) -> None:
    first = Settings.from_env({"VAR_DIR": str(tmp_path)}, env_file=NO_FILE).with_secret()
    second = Settings.from_env({"VAR_DIR": str(tmp_path)}, env_file=NO_FILE).with_secret()
    assert len(first.app.secret_key) >= 32
    assert first.app.secret_key == second.app.secret_key
    mode = stat.S_IMODE((tmp_path / "secret_key").stat().st_mode)
    assert mode == 0o600


def test_processes_starting_at_once_all_read_the_same_development_secret(tmp_path: Path) -> None:
    """Several `keel` processes (app, worker, CLI) may create the secret at the same moment:
    one wins, and nobody reads a half-written or a different key."""
    code = (
        "import sys; from pathlib import Path; from app.settings import Settings; "
        "s = Settings.from_env({'VAR_DIR': sys.argv[1]}, env_file=Path('/nonexistent'));"
        "print(s.with_secret().app.secret_key)"
    )
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        for _ in range(8)
    ]
    keys = {process.communicate(timeout=60)[0].strip() for process in processes}
    assert len(keys) == 1 and len(keys.pop()) >= 48
    assert [p.name for p in tmp_path.iterdir()] == ["secret_key"]  # no temporary files left


def test_production_never_generates_a_secret(tmp_path: Path) -> None:
    settings = Settings.from_env(
        {"VAR_DIR": str(tmp_path), "APP_ENV": "production"}, env_file=NO_FILE
    ).with_secret()
    assert settings.app.secret_key == ""
    assert not (tmp_path / "secret_key").exists()


def test_dot_env_file_is_read_and_the_environment_wins(tmp_path: Path) -> None:
    env_file = tmp_path / ".env"
    env_file.write_text("# comment\nexport PORT=9000\nLOG_LEVEL='debug'\nHOST=0.0.0.0\n")
    settings = Settings.from_env({"HOST": "127.0.0.2"}, env_file=env_file)
    assert settings.app.port == 9000
    assert settings.app.log_level == "DEBUG"
    assert settings.app.host == "127.0.0.2"


def test_lists_and_networks_are_parsed() -> None:
    settings = Settings.from_env(
        {
            "CORS_ORIGINS": "https://a.example, https://b.example",
            "TRUSTED_PROXIES": "10.0.0.1,fd00::/8",
        },
        env_file=NO_FILE,
    )
    assert settings.app.cors_origins == ("https://a.example", "https://b.example")
    assert [str(n) for n in settings.app.trusted_proxies] == ["10.0.0.1/32", "fd00::/8"]


@pytest.mark.parametrize("folder", ["/srv/exports", "../outside", "a/../../b"])
def test_job_files_stay_inside_the_var_dir(folder: str) -> None:
    with pytest.raises(ConfigError) as error:
        Settings.from_env({"JOB_FILES_DIR": folder}, env_file=NO_FILE)
    assert any("JOB_FILES_DIR" in problem for problem in error.value.problems)


def test_job_files_folder_and_export_retention_are_read() -> None:
    settings = Settings.from_env(
        {"VAR_DIR": "/tmp/keel-var", "JOB_FILES_DIR": "exports", "EXPORT_RETENTION_HOURS": "2"},
        env_file=NO_FILE,
    )
    assert settings.worker.export_retention_hours == 2
    assert files_dir(settings) == Path("/tmp/keel-var/exports")
    with pytest.raises(ConfigError):
        Settings.from_env({"EXPORT_RETENTION_HOURS": "0"}, env_file=NO_FILE)


def test_the_embedded_database_lives_in_var_dir_unless_database_url_says_otherwise(
    tmp_path: Path,
) -> None:
    moved = Settings.from_env({"VAR_DIR": str(tmp_path)}, env_file=NO_FILE)
    assert moved.db.url == f"sqlite+aiosqlite:///{tmp_path / 'keel.db'}"
    default = Settings.from_env({}, env_file=NO_FILE)
    assert default.db.url == f"sqlite+aiosqlite:///{default.app.var_dir / 'keel.db'}"
    given = Settings.from_env(
        {"VAR_DIR": str(tmp_path), "DATABASE_URL": "sqlite+aiosqlite:///data/site.db"},
        env_file=NO_FILE,
    )
    assert given.db.url.endswith("/data/site.db") and str(tmp_path) not in given.db.url
