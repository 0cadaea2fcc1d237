"""AuthService: proto in, identity use case, proto out. No rules here."""

from __future__ import annotations

import json

from modelreg.v1 import auth_service_pb2 as au
from modelreg.v1 import auth_service_pb2_grpc as au_grpc
from registry_server.domain.access import Binding
from registry_server.errors import InvalidArgument
from registry_server.services import convert as cv
from registry_server.services.auth import caller_of
from registry_server.storage.access import Principal, Project, Token
from registry_server.usecases.identity import Identity


def project_to_proto(p: Project) -> au.Project:
    return au.Project(
        name=f"projects/{p.name}",
        project_id=p.name,
        description=p.description,
        create_time=cv.ts(p.created_at),
        created_by=p.created_by,
    )


def principal_to_proto(p: Principal) -> au.Principal:
    return au.Principal(
        name=f"principals/{p.name}",
        principal_id=p.name,
        service_account=p.service_account,
        create_time=cv.ts(p.created_at),
        created_by=p.created_by,
    )


def token_to_proto(t: Token) -> au.ApiToken:
    return au.ApiToken(
        name=f"tokens/{t.name}",
        token_id=t.name,
        principal=f"principals/{t.principal}",
        create_time=cv.ts(t.created_at),
        expire_time=cv.ts(t.expires_at),
        last_use_time=cv.ts(t.last_used_at),
        revoke_time=cv.ts(t.revoked_at),
        created_by=t.created_by,
    )


def binding_to_proto(b: Binding) -> au.RoleBinding:
    return au.RoleBinding(
        principal=b.principal, role=b.role, project=b.project, create_time=cv.ts(b.created_at), created_by=b.created_by
    )


def _strip(name: str, collection: str) -> str:
    """`collection/{id}` or a bare id -> the id."""
    return name.removeprefix(f"{collection}/")


class AuthServicer(au_grpc.AuthServiceServicer):
    def __init__(self, identity: Identity):
        self.identity = identity

    async def WhoAmI(self, request, context) -> au.WhoAmIResponse:
        who = await self.identity.whoami(caller_of(context))
        return au.WhoAmIResponse(
            principal=principal_to_proto(who.principal),
            bindings=[binding_to_proto(b) for b in who.bindings],
            token=token_to_proto(who.token) if who.token else None,
            authenticated_by=who.authenticated_by,
            auth_enabled=who.auth_enabled,
        )

    async def CheckAccess(self, request, context) -> au.CheckAccessResponse:
        if not request.verb or not request.resource:
            raise InvalidArgument("'verb' and 'resource' are required, for example verb 'promote', resource 'models/m'")
        c = await self.identity.check_access(caller_of(context), request.verb, request.resource, request.project)
        return au.CheckAccessResponse(
            allowed=c.allowed, permission=c.permission.value, project=c.project, principal=c.principal, reason=c.reason
        )

    # ---------------------------------------------------------------- projects

    async def CreateProject(self, request, context) -> au.CreateProjectResponse:
        p = request.project
        name = p.project_id or _strip(p.name, "projects")
        created = await self.identity.create_project(caller_of(context), name, p.description)
        return au.CreateProjectResponse(project=project_to_proto(created))

    async def ListProjects(self, request, context) -> au.ListProjectsResponse:
        size = cv.page_size(request.page_size)
        after = cv.decode_token("projects", request.page_token) or ""
        rows = await self.identity.list_projects(caller_of(context), after, size + 1)
        token = cv.encode_token("projects", rows[size - 1].name) if len(rows) > size else ""
        return au.ListProjectsResponse(projects=[project_to_proto(p) for p in rows[:size]], next_page_token=token)

    async def DeleteProject(self, request, context) -> au.DeleteProjectResponse:
        n = await self.identity.delete_project(caller_of(context), _strip(request.name, "projects"))
        return au.DeleteProjectResponse(deleted_bindings=n)

    # ---------------------------------------------------------------- principals

    async def CreatePrincipal(self, request, context) -> au.CreatePrincipalResponse:
        p = request.principal
        name = p.principal_id or _strip(p.name, "principals")
        created = await self.identity.create_principal(caller_of(context), name, p.service_account)
        return au.CreatePrincipalResponse(principal=principal_to_proto(created))

    async def ListPrincipals(self, request, context) -> au.ListPrincipalsResponse:
        size = cv.page_size(request.page_size)
        after = cv.decode_token("principals", request.page_token) or ""
        rows = await self.identity.list_principals(caller_of(context), after, size + 1)
        token = cv.encode_token("principals", rows[size - 1].name) if len(rows) > size else ""
        return au.ListPrincipalsResponse(principals=[principal_to_proto(p) for p in rows[:size]], next_page_token=token)

    # ---------------------------------------------------------------- tokens

    async def CreateToken(self, request, context) -> au.CreateTokenResponse:
        ttl = cv.duration(request.ttl, "ttl") if request.HasField("ttl") else None
        secret, token = await self.identity.create_token(
            caller_of(context), request.token_id, _strip(request.principal, "principals"), ttl
        )
        return au.CreateTokenResponse(token=secret, api_token=token_to_proto(token))

    async def ListTokens(self, request, context) -> au.ListTokensResponse:
        size = cv.page_size(request.page_size)
        after = cv.decode_token("tokens", request.page_token) or ""
        principal = _strip(request.principal, "principals")
        rows = await self.identity.list_tokens(caller_of(context), principal, after, size + 1)
        token = cv.encode_token("tokens", rows[size - 1].name) if len(rows) > size else ""
        return au.ListTokensResponse(tokens=[token_to_proto(t) for t in rows[:size]], next_page_token=token)

    async def RevokeToken(self, request, context) -> au.RevokeTokenResponse:
        t = await self.identity.revoke_token(caller_of(context), _strip(request.name, "tokens"))
        return au.RevokeTokenResponse(api_token=token_to_proto(t))

    # ---------------------------------------------------------------- role bindings

    async def GrantRole(self, request, context) -> au.GrantRoleResponse:
        b = request.binding
        granted = await self.identity.grant_role(
            caller_of(context), _strip(b.principal, "principals"), b.role, _strip(b.project, "projects")
        )
        return au.GrantRoleResponse(binding=binding_to_proto(granted))

    async def RevokeRole(self, request, context) -> au.RevokeRoleResponse:
        b = request.binding
        removed = await self.identity.revoke_role(
            caller_of(context), _strip(b.principal, "principals"), b.role, _strip(b.project, "projects")
        )
        return au.RevokeRoleResponse(removed=removed)

    async def ListRoleBindings(self, request, context) -> au.ListRoleBindingsResponse:
        size = cv.page_size(request.page_size)
        raw = cv.decode_token("bindings", request.page_token)
        after: tuple[str, str, str] = ("", "", "")
        if raw:
            try:
                project, principal, role = json.loads(raw)
                after = (str(project), str(principal), str(role))
            except (ValueError, TypeError):
                raise InvalidArgument(
                    "page_token is malformed: pass the next_page_token of the same list call"
                ) from None
        rows = await self.identity.list_bindings(
            caller_of(context),
            _strip(request.project, "projects"),
            _strip(request.principal, "principals"),
            after,
            size + 1,
        )
        token = ""
        if len(rows) > size:
            last = rows[size - 1]
            token = cv.encode_token("bindings", json.dumps([last.project, last.principal, last.role]))
        return au.ListRoleBindingsResponse(bindings=[binding_to_proto(b) for b in rows[:size]], next_page_token=token)
