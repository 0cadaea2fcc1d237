"""SDK methods for identity and access (AuthService): who am I, may I, and the admin's
projects, principals, tokens and role bindings. Mixed into `modelreg.Client`.

    reg = Client(token_file="~/.modelreg/token")
    reg.whoami().principal.principal_id            # "ana"
    reg.can_i("promote", "models/detector").allowed
    secret = reg.create_token("ci", "trainer-ci", expires=timedelta(days=30)).token

A token's secret is in `create_token`'s response only, exactly once; every other call
returns `ApiToken` descriptions without it. Ids may be given bare (`ana`) or as resource
names (`principals/ana`, `projects/vision`, `tokens/ci`). List methods are iterators that
follow `next_page_token` to the end.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from google.protobuf import duration_pb2

from modelreg.v1 import auth_service_pb2 as au
from modelreg.v1 import auth_service_pb2_grpc as au_grpc

if TYPE_CHECKING:
    import grpc


def project_name(project: str) -> str:
    """`vision` or `projects/vision` -> `projects/vision`."""
    return project if project.startswith("projects/") else f"projects/{project}"


def token_name(token: str) -> str:
    """`ci` or `tokens/ci` -> `tokens/ci`."""
    return token if token.startswith("tokens/") else f"tokens/{token}"


def bare_id(name: str, collection: str) -> str:
    """`principals/ana` -> `ana` (a bare id stays as it is)."""
    return name.removeprefix(f"{collection}/")


class AccessMixin:
    """Needs `self._channel`, `self._call` and `self._pages` from `Client`."""

    if TYPE_CHECKING:
        _channel: grpc.Channel
        _call: Callable[..., Any]
        _pages: Callable[..., Iterator[Any]]

    @cached_property
    def auth_stub(self) -> au_grpc.AuthServiceStub:
        return au_grpc.AuthServiceStub(self._channel)

    # ------------------------------------------------------------------ who and may

    def whoami(self) -> au.WhoAmIResponse:
        """The calling principal, its bindings and the token used (`anonymous` with auth off)."""
        return self._call(self.auth_stub.WhoAmI, au.WhoAmIRequest())

    def can_i(self, verb: str, resource: str, project: str = "") -> au.CheckAccessResponse:
        """Whether the caller may do `verb` (`promote`, `read`, `versions.promote`, ...) on
        `resource` (`models/detector`, `models` in `project`, `projects`, `tokens`, ...)."""
        return self._call(
            self.auth_stub.CheckAccess, au.CheckAccessRequest(verb=verb, resource=resource, project=project)
        )

    # ------------------------------------------------------------------ projects

    def create_project(self, name: str, description: str = "") -> au.Project:
        project = au.Project(project_id=bare_id(name, "projects"), description=description)
        return self._call(self.auth_stub.CreateProject, au.CreateProjectRequest(project=project)).project

    def list_projects(self, *, page_size: int = 0) -> Iterator[au.Project]:
        return self._pages(self.auth_stub.ListProjects, au.ListProjectsRequest(page_size=page_size), "projects")

    def delete_project(self, name: str) -> int:
        """Deletes an empty project; returns how many role bindings went with it."""
        req = au.DeleteProjectRequest(name=project_name(name))
        return self._call(self.auth_stub.DeleteProject, req).deleted_bindings

    # ------------------------------------------------------------------ principals

    def create_principal(self, name: str, service_account: bool = False) -> au.Principal:
        principal = au.Principal(principal_id=bare_id(name, "principals"), service_account=service_account)
        return self._call(self.auth_stub.CreatePrincipal, au.CreatePrincipalRequest(principal=principal)).principal

    def list_principals(self, *, page_size: int = 0) -> Iterator[au.Principal]:
        return self._pages(self.auth_stub.ListPrincipals, au.ListPrincipalsRequest(page_size=page_size), "principals")

    # ------------------------------------------------------------------ tokens

    def create_token(self, name: str, principal: str, expires: timedelta | None = None) -> au.CreateTokenResponse:
        """A new bearer token for `principal`, living `expires` (None: until revoked). The
        response's `token` is the secret, shown only here."""
        req = au.CreateTokenRequest(token_id=bare_id(name, "tokens"), principal=principal)
        if expires is not None:
            ttl = duration_pb2.Duration()
            ttl.FromTimedelta(expires)
            req.ttl.CopyFrom(ttl)
        return self._call(self.auth_stub.CreateToken, req)

    def list_tokens(self, principal: str = "", *, page_size: int = 0) -> Iterator[au.ApiToken]:
        """Tokens (never their secrets), revoked ones included; only `principal`'s when set."""
        req = au.ListTokensRequest(principal=principal, page_size=page_size)
        return self._pages(self.auth_stub.ListTokens, req, "tokens")

    def revoke_token(self, name: str) -> au.ApiToken:
        return self._call(self.auth_stub.RevokeToken, au.RevokeTokenRequest(name=token_name(name))).api_token

    # ------------------------------------------------------------------ role bindings

    @staticmethod
    def _binding(principal: str, role: str, project: str) -> au.RoleBinding:
        return au.RoleBinding(
            principal=bare_id(principal, "principals"), role=role, project=bare_id(project, "projects")
        )

    def grant_role(self, principal: str, role: str, project: str = "") -> au.RoleBinding:
        """Binds `role` to `principal` in `project` (empty: `default`; must be empty for
        `admin`). Granting an existing binding returns it."""
        req = au.GrantRoleRequest(binding=self._binding(principal, role, project))
        return self._call(self.auth_stub.GrantRole, req).binding

    def revoke_role(self, principal: str, role: str, project: str = "") -> bool:
        """Removes a binding; False when there was none."""
        req = au.RevokeRoleRequest(binding=self._binding(principal, role, project))
        return self._call(self.auth_stub.RevokeRole, req).removed

    def list_role_bindings(
        self, project: str = "", principal: str = "", *, page_size: int = 0
    ) -> Iterator[au.RoleBinding]:
        req = au.ListRoleBindingsRequest(
            project=bare_id(project, "projects"), principal=bare_id(principal, "principals"), page_size=page_size
        )
        return self._pages(self.auth_stub.ListRoleBindings, req, "bindings")
