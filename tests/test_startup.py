"""Start-up: a bad setting or an unreachable dependency stops `modelreg server` with one line
on stderr (exit 2 for a setting, 1 for a connection), no traceback and no secret; and the
migrations, numbered without a gap, apply once, also to a database migrated before a rename.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
from pathlib import Path

import pytest
from conftest import BIN, free_port

from modelreg import Client
from registry_server.config import Settings
from registry_server.errors import ConfigError, StartupError
from registry_server.storage import db

PASSWORD = "pg-Secret-9f2c"
S3_SECRET = "s3-Secret-71ab"


def start_server(tmp_path: Path, database_url: str, **env_overrides: str) -> subprocess.CompletedProcess:
    """Runs `modelreg server` (the real console script) to its exit."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELREG_")}
    env.update(
        MODELREG_ADDRESS=f"127.0.0.1:{free_port()}",
        MODELREG_DATABASE_URL=database_url,
        MODELREG_DATA_DIR=str(tmp_path / "data"),
        MODELREG_ARTIFACTS=str(tmp_path / "artifacts"),
    )
    env.update(env_overrides)
    proc = subprocess.run([str(BIN / "modelreg"), "server"], env=env, capture_output=True, text=True, timeout=90)
    assert proc.returncode != 0, "the server started; it should have refused"
    return proc


def exit_line(proc: subprocess.CompletedProcess) -> str:
    """The one line the start-up printed about the failure, after asserting it is the only one,
    the last line, and that no traceback came before it."""
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    ours = [line for line in lines if line.startswith("modelreg server: ")]
    assert len(ours) == 1, proc.stderr
    assert lines[-1] == ours[0], proc.stderr
    return ours[0].removeprefix("modelreg server: ")


# ---------------------------------------------------------------------- bad settings: exit 2


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("abc", "MODELREG_DB_POOL_SIZE='abc' is not a whole number; set it to a number like 20"),
        ("0", "MODELREG_DB_POOL_SIZE='0' is out of range; set it to at least 1, like 20"),
    ],
)
def test_bad_pool_size_exits_2_with_one_line(tmp_path, database_url, value, message):
    proc = start_server(tmp_path, database_url, MODELREG_DB_POOL_SIZE=value)
    assert proc.returncode == 2
    assert proc.stderr == f"modelreg server: {message}\n"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"MODELREG_ARTIFACTS": "s3://Not_A_Bucket/p"}, "MODELREG_ARTIFACTS names an invalid bucket 'Not_A_Bucket'"),
        (
            {"MODELREG_ARTIFACTS": "s3://models", "MODELREG_S3_ENDPOINT": "http://127.0.0.1:9000/path"},
            "MODELREG_S3_ENDPOINT='http://127.0.0.1:9000/path' must be host:port or http(s)://host:port",
        ),
        ({"MODELREG_S3_SECURE": "maybe"}, "MODELREG_S3_SECURE='maybe' is not a boolean; set it to true or false"),
        ({"MODELREG_ADDRESS": "nowhere"}, "MODELREG_ADDRESS='nowhere' is not host:port"),
    ],
)
def test_bad_store_or_address_setting_exits_2_before_connecting(tmp_path, env, expected):
    # The database URL points nowhere: a setting error is reported before any connection.
    url = f"postgresql://modelreg:{PASSWORD}@127.0.0.1:{free_port()}/modelreg"
    proc = start_server(tmp_path, url, MODELREG_S3_SECRET_KEY=S3_SECRET, **env)
    assert proc.returncode == 2
    assert exit_line(proc).startswith(expected)
    assert PASSWORD not in proc.stderr and S3_SECRET not in proc.stderr


def test_database_url_asyncpg_cannot_use_exits_2(tmp_path):
    proc = start_server(tmp_path, f"mysql://modelreg:{PASSWORD}@127.0.0.1/modelreg")
    assert proc.returncode == 2
    line = exit_line(proc)
    assert line.startswith(
        "MODELREG_DATABASE_URL=mysql://modelreg:****@127.0.0.1/modelreg is not a URL asyncpg can use"
    )
    assert "use postgresql://user:password@host:5432/database" in line
    assert PASSWORD not in proc.stderr


# ---------------------------------------------------------------------- connection failures: exit 1


def test_address_in_use_exits_1_with_one_line(tmp_path, database_url):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        proc = start_server(tmp_path, database_url, MODELREG_ADDRESS=address)
    assert proc.returncode == 1
    assert exit_line(proc) == (
        f"cannot listen on {address}: the address is in use or invalid; stop what listens there "
        "or set MODELREG_ADDRESS (or --listen) to another host:port"
    )


def test_unreachable_database_exits_1_naming_it_without_the_password(tmp_path):
    port = free_port()
    proc = start_server(tmp_path, f"postgresql://modelreg:{PASSWORD}@127.0.0.1:{port}/modelreg")
    assert proc.returncode == 1
    line = exit_line(proc)
    assert line.startswith(f"cannot connect to the database at postgresql://modelreg:****@127.0.0.1:{port}/modelreg (")
    assert "check that Postgres is running there and that MODELREG_DATABASE_URL points at it" in line
    assert PASSWORD not in proc.stderr


def test_database_that_refuses_the_connection_exits_1(tmp_path, postgres):
    url = postgres.url_for("no_such_database")
    proc = start_server(tmp_path, url)
    assert proc.returncode == 1
    line = exit_line(proc)
    assert line.startswith("the database at ") and "refused the connection (InvalidCatalogNameError" in line
    assert "check the user, password and database name in MODELREG_DATABASE_URL" in line


def test_embedded_postgres_that_cannot_start_exits_1_saying_what_to_check(tmp_path):
    not_a_directory = tmp_path / "data"
    not_a_directory.write_text("a file where the data directory should be")
    proc = start_server(tmp_path, "", MODELREG_DATA_DIR=str(not_a_directory))
    assert proc.returncode == 1
    line = exit_line(proc)
    assert line.startswith(f"cannot start the embedded Postgres in {not_a_directory / 'postgres'} (")
    assert "check that the directory is writable" in line and "or set MODELREG_DATABASE_URL" in line


def test_unreachable_s3_exits_1_without_the_secret_key(tmp_path, database_url):
    endpoint = f"127.0.0.1:{free_port()}"
    proc = start_server(
        tmp_path,
        database_url,
        MODELREG_ARTIFACTS="s3://models/prod",
        MODELREG_S3_ENDPOINT=f"http://{endpoint}",
        MODELREG_S3_ACCESS_KEY="modelreg",
        MODELREG_S3_SECRET_KEY=S3_SECRET,
    )
    assert proc.returncode == 1
    line = exit_line(proc)
    assert line.startswith(f"cannot start with the artifact store S3 bucket s3://models/prod at http://{endpoint}: ")
    assert "unreachable" in line and "check that it is running and that MODELREG_S3_ENDPOINT points at it" in line
    assert S3_SECRET not in proc.stderr


# ---------------------------------------------------------------------- typed errors, in process


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("MODELREG_DB_POOL_SIZE", "2.5", "is not a whole number"),
        ("MODELREG_BOOKMARK_INTERVAL", "soon", "is not a number; set it to a number like 10"),
        ("MODELREG_BOOKMARK_INTERVAL", "0", "is out of range; set it to a number greater than 0, like 10"),
        ("MODELREG_EVENT_RETENTION_HOURS", "-1", "is out of range; set it to a number greater than 0, like 168"),
        ("MODELREG_UPLOAD_TTL_HOURS", "nan", "is out of range"),
        ("MODELREG_SHUTDOWN_GRACE", "-1", "is out of range; set it to a number at least 0, like 5"),
        ("MODELREG_CANARY_JUDGE_INTERVAL", "inf", "is out of range"),
    ],
)
def test_settings_raise_config_error_naming_the_variable(monkeypatch, name, value, expected):
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=f"^{name}='{value}' {expected}"):
        Settings.from_env()


def test_config_error_is_a_value_error_and_a_startup_error_with_exit_2():
    assert issubclass(ConfigError, ValueError) and issubclass(ConfigError, StartupError)
    assert (ConfigError.exit_code, StartupError.exit_code) == (2, 1)
    assert not issubclass(StartupError, SystemExit)


def test_settings_from_env_accepts_the_documented_forms(monkeypatch):
    for name, value in {
        "MODELREG_DB_POOL_SIZE": "7",
        "MODELREG_S3_SECURE": "false",
        "MODELREG_SHUTDOWN_GRACE": "0",
        "MODELREG_BOOKMARK_INTERVAL": "0.5",
    }.items():
        monkeypatch.setenv(name, value)
    s = Settings.from_env(address="[::1]:0")
    assert (s.db_pool_size, s.s3_secure, s.shutdown_grace, s.bookmark_interval) == (7, False, 0.0, 0.5)
    assert s.address == "[::1]:0"
    assert Settings.from_env(address="unix:/tmp/modelreg.sock").address == "unix:/tmp/modelreg.sock"


# ---------------------------------------------------------------------- migrations


def test_migrations_are_numbered_without_a_gap():
    names = [name for _, name, _ in db._migrations()]
    assert [int(n.split("_", 1)[0]) for n in names] == list(range(1, len(names) + 1))
    assert names[:3] == ["0001_registry.sql", "0002_agents.sql", "0003_deployments.sql"]


async def _records(url: str) -> list[tuple[int, str]]:
    conn = await db.connect(url)
    try:
        rows = await conn.fetch("SELECT version, name FROM schema_migrations ORDER BY version")
        return [(r["version"], r["name"]) for r in rows]
    finally:
        await conn.close()


async def _migrate(url: str) -> list[str]:
    conn = await db.connect(url)
    try:
        return await db.migrate(conn)
    finally:
        await conn.close()


def test_database_migrated_before_the_rename_starts_and_is_not_migrated_again(database_url, make_registry):
    # What a server before the rename did: the first three migrations, the deployments SQL
    # recorded as 0004 (no later migration existed then).
    async def migrate_as_before_the_rename() -> None:
        conn = await db.connect(database_url)
        try:
            await conn.execute(
                "CREATE TABLE schema_migrations (version int PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            for number, name, sql in db._migrations()[:3]:
                await conn.execute(sql)
                old = (4, "0004_deployments.sql") if number == 3 else (number, name)
                await conn.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", *old)
        finally:
            await conn.close()

    asyncio.run(migrate_as_before_the_rename())
    assert (4, "0004_deployments.sql") in asyncio.run(_records(database_url))

    # Applying 0003 again would fail (its tables exist); the record is rewritten instead,
    # and only what came after it is applied.
    assert asyncio.run(_migrate(database_url)) == [name for _, name, _ in db._migrations()[3:]]
    records = asyncio.run(_records(database_url))
    assert records[:3] == [(1, "0001_registry.sql"), (2, "0002_agents.sql"), (3, "0003_deployments.sql")]
    assert (4, "0004_deployments.sql") not in records

    # A server starts on it and its deployments work.
    reg = make_registry(database_url=database_url)
    with Client(reg.address, actor="tester") as sdk:
        version = sdk.register("renamed", b"weights")
        sdk.promote("renamed", version.version, "production")
        assert sdk.get_version("renamed", "production").version == version.version
    assert asyncio.run(_migrate(database_url)) == []


def test_migrating_twice_applies_nothing_the_second_time(database_url):
    first = asyncio.run(_migrate(database_url))
    assert first == [name for _, name, _ in db._migrations()]
    assert asyncio.run(_migrate(database_url)) == []
