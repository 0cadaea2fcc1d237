"""GovernanceService's alias RPCs: proto in, use case, proto out."""

from __future__ import annotations

from modelreg.v1 import governance_pb2 as gv
from modelreg.v1 import governance_service_pb2 as gs
from registry_server.domain import aliases as da
from registry_server.domain.names import parse_model_name
from registry_server.services import convert as cv
from registry_server.services.auth import caller_of
from registry_server.services.gates import request_to_proto
from registry_server.usecases.aliases import Aliases


def alias_to_proto(a: da.Alias) -> gv.ModelAlias:
    return gv.ModelAlias(
        name=f"models/{a.model}/aliases/{a.alias}",
        alias=a.alias,
        version=a.version,
        protected=a.protected,
        update_time=cv.ts(a.update_time),
        updated_by=a.updated_by,
    )


def change_to_proto(c: da.AliasChange) -> gv.AliasChange:
    return gv.AliasChange(
        alias=c.alias,
        from_version=c.from_version,
        to_version=c.to_version,
        actor=c.actor,
        reason=c.reason,
        create_time=cv.ts(c.create_time),
        sequence=c.sequence,
    )


class AliasRpcs:
    aliases: Aliases

    async def SetAlias(self, request: gs.SetAliasRequest, context) -> gs.SetAliasResponse:
        model = parse_model_name(request.model, "model")
        protected = request.protected if request.HasField("protected") else None
        alias, sequence, pending = await self.aliases.set_alias(
            caller_of(context), model, request.alias, request.version, request.reason, protected
        )
        return gs.SetAliasResponse(
            alias=alias_to_proto(alias),
            sequence=sequence,
            promotion_request=request_to_proto(pending) if pending else None,
        )

    async def DeleteAlias(self, request: gs.DeleteAliasRequest, context) -> gs.DeleteAliasResponse:
        model = parse_model_name(request.model, "model")
        version, _ = await self.aliases.delete_alias(caller_of(context), model, request.alias, request.reason)
        return gs.DeleteAliasResponse(version=version)

    async def ListAliases(self, request: gs.ListAliasesRequest, context) -> gs.ListAliasesResponse:
        model = parse_model_name(request.model, "model")
        aliases = await self.aliases.list_aliases(caller_of(context), model)
        return gs.ListAliasesResponse(aliases=[alias_to_proto(a) for a in aliases])

    async def ListAliasHistory(self, request: gs.ListAliasHistoryRequest, context) -> gs.ListAliasHistoryResponse:
        model = parse_model_name(request.model, "model")
        size = cv.page_size(request.page_size)
        before = cv.decode_int_token("alias-history", request.page_token, 2**62)
        rows = await self.aliases.history(caller_of(context), model, request.alias, before, size + 1)
        token = cv.encode_token("alias-history", rows[size - 1][0]) if len(rows) > size else ""
        return gs.ListAliasHistoryResponse(changes=[change_to_proto(c) for _, c in rows[:size]], next_page_token=token)
