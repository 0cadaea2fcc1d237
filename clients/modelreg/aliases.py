"""SDK methods for named aliases (`champion`): set or move, delete, list, history. Mixed
into `modelreg.Client`.

    reg.set_alias("detector", "champion", 7, reason="best mAP on the June set")
    reg.get_version("detector@champion")     # or reg.get_version("detector", "champion")
    reg.download("detector@champion", dest="weights/")

An alias is also a version name (`models/detector/versions/champion`), so every method
that takes a version takes an alias, and `MODEL@ALIAS` wherever a model and version go.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import cached_property
from typing import TYPE_CHECKING, Any

from modelreg.v1 import governance_pb2 as gv
from modelreg.v1 import governance_service_pb2 as gs
from modelreg.v1 import governance_service_pb2_grpc as gs_grpc

if TYPE_CHECKING:
    import grpc


def split_alias(model: str) -> tuple[str, str | None]:
    """'detector@champion' -> ('detector', 'champion'); 'detector' -> ('detector', None)."""
    name, sep, alias = model.partition("@")
    return (name, alias) if sep else (model, None)


def _model(model: str) -> str:
    model = split_alias(model)[0]
    return model if model.startswith("models/") else f"models/{model}"


class AliasMixin:
    """Needs `self._channel` and `self._call` from `Client`."""

    if TYPE_CHECKING:
        _channel: grpc.Channel
        _call: Callable[..., Any]

    @cached_property
    def _aliases_stub(self) -> gs_grpc.GovernanceServiceStub:
        return gs_grpc.GovernanceServiceStub(self._channel)

    def set_alias(
        self, model: str, alias: str, version: int, *, reason: str = "", protected: bool | None = None
    ) -> gs.SetAliasResponse:
        """Points `alias` at `version` (creating or moving it). `protected` None keeps the
        current setting; protecting, unprotecting or moving a protected alias needs the
        releaser role, and a protected alias's gate policy is checked first."""
        req = gs.SetAliasRequest(model=_model(model), alias=alias, version=int(version), reason=reason)
        if protected is not None:
            req.protected = protected
        return self._call(self._aliases_stub.SetAlias, req)

    def delete_alias(self, model: str, alias: str, *, reason: str = "") -> int:
        """Deletes an alias; returns the version it pointed at."""
        req = gs.DeleteAliasRequest(model=_model(model), alias=alias, reason=reason)
        return self._call(self._aliases_stub.DeleteAlias, req).version

    def list_aliases(self, model: str) -> list[gv.ModelAlias]:
        resp = self._call(self._aliases_stub.ListAliases, gs.ListAliasesRequest(model=_model(model)))
        return list(resp.aliases)

    def alias_history(self, model: str, alias: str = "", *, page_size: int = 0) -> Iterator[gv.AliasChange]:
        """Moves newest first, of one alias or (empty) every alias of the model."""
        token = ""
        while True:
            req = gs.ListAliasHistoryRequest(model=_model(model), alias=alias, page_size=page_size, page_token=token)
            resp = self._call(self._aliases_stub.ListAliasHistory, req)
            yield from resp.changes
            token = resp.next_page_token
            if not token:
                return
