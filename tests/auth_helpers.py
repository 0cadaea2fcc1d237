"""Helpers for tests of identity and access: a registry with auth on, its bootstrap admin
token, and principals with roles and tokens created through the real AuthService."""

from __future__ import annotations

import contextlib
import hashlib
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from modelreg.v1 import auth_service_pb2 as au
from modelreg.v1 import auth_service_pb2_grpc as au_grpc
from modelreg.v1 import registry_service_pb2 as rs


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


@dataclass
class SecureRegistry:
    """A registry with auth on, and an admin's AuthService stub."""

    registry: object
    address: str
    admin_token: str
    channel: grpc.Channel = field(repr=False)

    @property
    def auth(self) -> au_grpc.AuthServiceStub:
        return au_grpc.AuthServiceStub(self.channel)

    def admin(self, method: str, request):
        return getattr(self.auth, method)(request, metadata=bearer(self.admin_token), timeout=10)

    def project(self, name: str) -> None:
        self.admin("CreateProject", au.CreateProjectRequest(project=au.Project(project_id=name)))

    def principal(self, name: str, *roles: tuple[str, str], service_account: bool = False) -> str:
        """Creates `name` with each (role, project) binding and a token; returns the token."""
        self.admin(
            "CreatePrincipal",
            au.CreatePrincipalRequest(principal=au.Principal(principal_id=name, service_account=service_account)),
        )
        for role, project in roles:
            self.admin(
                "GrantRole", au.GrantRoleRequest(binding=au.RoleBinding(principal=name, role=role, project=project))
            )
        return self.token(name, f"{name}-token")

    def token(self, principal: str, name: str, ttl_seconds: int = 0) -> str:
        req = au.CreateTokenRequest(token_id=name, principal=principal)
        if ttl_seconds:
            req.ttl.seconds = ttl_seconds
        return self.admin("CreateToken", req).token

    def revoke(self, name: str) -> None:
        self.admin("RevokeToken", au.RevokeTokenRequest(name=name))


def admin_token_of(data_dir: Path) -> str:
    return (data_dir / "admin.token").read_text().strip()


@pytest.fixture
def secure_registry(make_registry, tmp_path):
    reg = make_registry(auth="on")
    channel = grpc.insecure_channel(reg.address)
    yield SecureRegistry(reg, reg.address, admin_token_of(tmp_path / "data"), channel)
    channel.close()


@contextlib.contextmanager
def registry_on_a_new_database(postgres, root: Path, **overrides) -> Iterator[object]:
    """A threaded registry on a database of its own, for module-scoped fixtures (the
    function-scoped `make_registry` builds the same thing per test). Its data directory is
    `root/data`, its artifacts `root/artifacts`."""
    from conftest import ThreadedRegistry, _admin

    from registry_server.config import Settings

    name = f"t_{uuid.uuid4().hex[:12]}"
    _admin(postgres, f'CREATE DATABASE "{name}"')
    params: dict = dict(
        address="127.0.0.1:0",
        database_url=postgres.url_for(name),
        data_dir=root / "data",
        artifacts=str(root / "artifacts"),
        bookmark_interval=1.0,
        shutdown_grace=0.5,
    )
    params.update(overrides)
    reg = ThreadedRegistry(Settings(**params))
    try:
        yield reg
    finally:
        with contextlib.suppress(Exception):
            reg.stop()
        with contextlib.suppress(Exception):
            _admin(postgres, f'DROP DATABASE "{name}" WITH (FORCE)')


def registration(parent: str, data: bytes, filename: str = "model.onnx") -> list[rs.RegisterModelVersionRequest]:
    """The client stream of RegisterModelVersion: a header, then the bytes in one chunk."""
    header = rs.RegisterModelVersionHeader(
        parent=parent, filename=filename, size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest()
    )
    return [rs.RegisterModelVersionRequest(header=header), rs.RegisterModelVersionRequest(chunk=data)]
