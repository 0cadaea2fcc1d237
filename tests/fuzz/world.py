"""The registry a fuzz run talks to: a real `modelreg server` process on its own database,
the resources that make cases reach the rules rather than stop at NOT_FOUND, and what the
invariants read (health, a real RPC, row and blob counts).

`World.ensure()` puts the seeded resources back (a fuzzed DeleteModel may well succeed), and
is idempotent. The fuzzing principal (`fuzz-root-…`, a global admin) has a name no strategy
draws, so no fuzzed RevokeRole or RevokeToken can lock the run out of the use cases.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import grpc
from conftest import free_port, wait_for_port
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc

from modelreg.v1 import auth_service_pb2 as au
from modelreg.v1 import auth_service_pb2_grpc as au_grpc
from modelreg.v1 import governance_service_pb2 as gs
from modelreg.v1 import governance_service_pb2_grpc as gs_grpc
from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import registry_service_pb2_grpc as rs_grpc
from modelreg.v1 import resources_pb2 as res
from registry_server.app import SERVICE_NAMES

from .strategies import Vocabulary

# The registry's services, as the server registers them (registry_server.app.SERVICE_NAMES, so
# a new service is fuzzed without a line here): every RPC of each is fuzzed.
SERVICES = tuple(descriptor_pool.Default().FindServiceByName(name) for name in SERVICE_NAMES)

MODELS = ("fz-a", "fz-b")
PROJECT = "fz"
USER = "fz-user"
USER_TOKEN = "fz-tok"
ALIAS = "champion"
AGENT = "fz-agent"
# Counted before and after every refused call: a refusal must not change any of them. The
# canary judge (a background task the fuzzed canary policies may wake) writes history of
# its own: its rows are left out.
JUDGE = "actor <> 'modelreg-canary-judge'"
COUNTED = (
    "models",
    "model_versions",
    "blobs",
    f"stage_transitions WHERE {JUDGE}",
    f"deployment_history WHERE {JUDGE}",
    "model_aliases",
)


def methods():
    return [m for s in SERVICES for m in s.methods]


def rpc_id(method) -> str:
    return f"{method.containing_service.name}.{method.name}"


def vocabulary() -> Vocabulary:
    words = (*MODELS, PROJECT, USER, USER_TOKEN, ALIAS, AGENT, "default", "1", "2", "production", "staging")
    names = (
        *(f"models/{m}" for m in MODELS),
        "models/fz-a/versions/1",
        "models/fz-a/versions/2",
        "models/fz-a/versions/3",
        "models/fz-a/versions/production",
        "models/fz-a/versions/staging",
        "models/fz-a/versions/latest",
        f"models/fz-a/versions/{ALIAS}",
        "models/fz-a/versions/1/card",
        "models/fz-a/deployment",
        f"models/fz-a/aliases/{ALIAS}",
        "models/fz-a/gates/production",
        "models/fz-a/gates/staging",
        "models/fz-a/promotionRequests/1",
        "models/fz-b/versions/1",
        f"projects/{PROJECT}",
        f"principals/{USER}",
        f"tokens/{USER_TOKEN}",
        f"agents/{AGENT}",
    )
    fields: set[str] = set()
    pool = descriptor_pool.Default()
    files = {service.file for service in SERVICES} | {res.DESCRIPTOR}
    for file in files:
        for msg in file.message_types_by_name.values():
            fields.update(f.name for f in pool.FindMessageTypeByName(msg.full_name).fields)
    return Vocabulary(words=words, names=names, fields=tuple(sorted(fields)))


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def _artifact(model: str, n: int) -> bytes:
    return f"fuzz seed artifact {model} v{n}\n".encode() * 8


@dataclass
class World:
    """One registry process and what the fuzzer knows about it."""

    address: str
    auth: bool
    metadata: tuple[tuple[str, str], ...]  # the fuzzing admin's credential (empty with auth off)
    database_url: str
    artifacts: Path
    channel: grpc.Channel = field(repr=False)
    process: subprocess.Popen = field(repr=False)
    _loop: asyncio.AbstractEventLoop = field(default_factory=asyncio.new_event_loop, repr=False)
    _conn: asyncpg.Connection | None = field(default=None, repr=False)

    # ------------------------------------------------------------ invariants' reads

    def healthy(self) -> str:
        """'' when the health check says SERVING and a real read answers; else what failed."""
        if self.process.poll() is not None:
            return f"the server exited with {self.process.returncode}"
        try:
            reply = health_pb2_grpc.HealthStub(self.channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
            if reply.status != health_pb2.HealthCheckResponse.SERVING:
                return f"health check answers {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}"
            rs_grpc.RegistryServiceStub(self.channel).ListModels(
                rs.ListModelsRequest(page_size=1), metadata=self.metadata, timeout=5
            )
        except grpc.RpcError as exc:
            return f"{exc.code().name}: {exc.details()}"
        return ""

    def counts(self) -> tuple[int, ...]:
        """Rows in COUNTED, then the blob files and the temp uploads on disk."""
        if self._conn is None:
            self._conn = self._loop.run_until_complete(asyncpg.connect(self.database_url))
        sql = "SELECT " + ", ".join(f"(SELECT count(*) FROM {t})" for t in COUNTED)
        row = self._loop.run_until_complete(self._conn.fetchrow(sql))
        blobs = sum(1 for _ in (self.artifacts / "sha256").rglob("*")) if (self.artifacts / "sha256").exists() else 0
        return (*row, blobs, self.temp_uploads())

    def temp_uploads(self) -> int:
        tmp = self.artifacts / "tmp"
        return sum(1 for _ in tmp.iterdir()) if tmp.exists() else 0

    # ------------------------------------------------------------ the seeded resources

    def ensure(self) -> None:
        """Creates what is missing of: project fz, models fz-a (v1 production, v2 staging,
        alias champion -> v1) and fz-b (v1), principal fz-user with token fz-tok. Errors are
        ignored: the resources may exist already, in any state the fuzzer left them."""
        md = self.metadata
        if self.intact():
            return
        registry = rs_grpc.RegistryServiceStub(self.channel)
        governance = gs_grpc.GovernanceServiceStub(self.channel)
        auth = au_grpc.AuthServiceStub(self.channel)

        def quietly(fn, request) -> object | None:
            try:
                return fn(request, metadata=md, timeout=10)
            except grpc.RpcError:
                return None

        if self.auth:
            quietly(auth.CreateProject, au.CreateProjectRequest(project=au.Project(project_id=PROJECT)))
            quietly(auth.CreatePrincipal, au.CreatePrincipalRequest(principal=au.Principal(principal_id=USER)))
            quietly(auth.CreateToken, au.CreateTokenRequest(token_id=USER_TOKEN, principal=USER))
        for model in MODELS:
            project = PROJECT if self.auth else ""
            quietly(
                registry.CreateModel, rs.CreateModelRequest(model=res.Model(name=f"models/{model}", project=project))
            )
            for n in (1, 2) if model == "fz-a" else (1,):
                data = _artifact(model, n)
                header = rs.RegisterModelVersionHeader(
                    parent=f"models/{model}",
                    filename="model.onnx",
                    size_bytes=len(data),
                    sha256=hashlib.sha256(data).hexdigest(),
                    request_id=f"fuzz-seed-{model}-{n}",
                    metrics={"accuracy": 0.5 + n / 10},
                )
                stream = [rs.RegisterModelVersionRequest(header=header), rs.RegisterModelVersionRequest(chunk=data)]
                try:
                    registry.RegisterModelVersion(iter(stream), metadata=md, timeout=10)
                except grpc.RpcError:
                    pass
        quietly(
            registry.PromoteModelVersion,
            rs.PromoteModelVersionRequest(name="models/fz-a/versions/1", stage=res.STAGE_PRODUCTION),
        )
        quietly(
            registry.PromoteModelVersion,
            rs.PromoteModelVersionRequest(name="models/fz-a/versions/2", stage=res.STAGE_STAGING),
        )
        quietly(governance.SetAlias, gs.SetAliasRequest(model="models/fz-a", alias=ALIAS, version=1))

    def intact(self) -> bool:
        """Whether the seeded versions, stages and alias are all still there."""
        registry = rs_grpc.RegistryServiceStub(self.channel)
        try:
            v1 = registry.GetModelVersion(
                rs.GetModelVersionRequest(name=f"models/fz-a/versions/{ALIAS}"), metadata=self.metadata, timeout=10
            ).model_version
            v2 = registry.GetModelVersion(
                rs.GetModelVersionRequest(name="models/fz-a/versions/2"), metadata=self.metadata, timeout=10
            ).model_version
            registry.GetModelVersion(
                rs.GetModelVersionRequest(name="models/fz-b/versions/1"), metadata=self.metadata, timeout=10
            )
        except grpc.RpcError:
            return False
        return v1.version == 1 and v1.stage == res.STAGE_PRODUCTION and v2.stage == res.STAGE_STAGING

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._loop.run_until_complete(self._conn.close())
        self._loop.close()
        self.channel.close()


def _spawn(database_url: str, root: Path, auth: bool) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = dict(os.environ)
    env.update(
        MODELREG_ADDRESS=f"127.0.0.1:{port}",
        MODELREG_DATABASE_URL=database_url,
        MODELREG_ARTIFACTS=str(root / "artifacts"),
        MODELREG_DATA_DIR=str(root / "data"),
        MODELREG_SHUTDOWN_GRACE="0.5",
        MODELREG_AUTH="on" if auth else "off",
    )
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "server.log", "ab") as log:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "modelreg"), "server"], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    return proc, port


def _connect(proc: subprocess.Popen, port: int, database_url: str, root: Path, auth: bool) -> World:
    wait_for_port(port, 60, proc)
    address = f"127.0.0.1:{port}"
    big = 64 * 1024 * 1024  # so the server, not this client, decides what is too large
    channel = grpc.insecure_channel(
        address, options=[("grpc.max_send_message_length", big), ("grpc.max_receive_message_length", big)]
    )
    metadata: tuple[tuple[str, str], ...] = ()
    if auth:
        token_file = root / "data" / "admin.token"  # written once the database is ready
        deadline = time.monotonic() + 30
        while not token_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        admin = bearer(token_file.read_text().strip())
        root_name = f"fuzz-root-{secrets.token_hex(6)}"
        stub = au_grpc.AuthServiceStub(channel)
        stub.CreatePrincipal(
            au.CreatePrincipalRequest(principal=au.Principal(principal_id=root_name)), metadata=admin, timeout=10
        )
        stub.GrantRole(
            au.GrantRoleRequest(binding=au.RoleBinding(principal=root_name, role="admin", project="")),
            metadata=admin,
            timeout=10,
        )
        token = stub.CreateToken(
            au.CreateTokenRequest(token_id=f"{root_name}-token", principal=root_name), metadata=admin, timeout=10
        ).token
        metadata = bearer(token)
    world = World(address, auth, metadata, database_url, root / "artifacts", channel, proc)
    world.ensure()
    return world


@contextlib.contextmanager
def running_worlds(specs: list[tuple[str, Path, bool]]) -> Iterator[list[World]]:
    """One `modelreg server` process (the real console script) per (database_url, root,
    auth), started together, seeded, and stopped together."""
    procs = [(_spawn(url, root, auth), url, root, auth) for url, root, auth in specs]
    worlds: list[World] = []
    try:
        for (proc, port), url, root, auth in procs:
            worlds.append(_connect(proc, port, url, root, auth))
        yield worlds
    finally:
        for world in worlds:
            world.close()
        for (proc, _), *_ in procs:
            if proc.poll() is None:
                proc.terminate()
        for (proc, _), *_ in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
