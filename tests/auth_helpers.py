"""Helpers for tests of identity and access: a registry with auth on, its bootstrap admin
token, and principals with roles and tokens created through the real AuthService."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from modelreg.v1 import auth_service_pb2 as au
from modelreg.v1 import auth_service_pb2_grpc as au_grpc


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
