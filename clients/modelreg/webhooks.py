"""SDK methods for webhooks: create, list, get, delete, their deliveries, redeliver. Mixed
into `modelreg.Client`.

    hook, secret = reg.create_webhook("ci", "https://ci.example/hook", ["stage_changed"], models=["detector"])
    for d in reg.list_deliveries("ci", failed_only=True):
        reg.redeliver("ci", d.delivery_id)

Event types take the spelling of `modelreg watch --type`: `stage_changed`,
`deployment_changed`, `version_ready`... (also `STAGE_CHANGED`, `stage-changed` or the
enum). The secret is returned once, when the server generated it; keep it to verify the
`X-Modelreg-Signature` header (see the README's Webhooks section).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from functools import cached_property
from typing import TYPE_CHECKING, Any

from modelreg.v1 import webhook_pb2 as wh
from modelreg.v1 import webhook_service_pb2 as ws
from modelreg.v1 import webhook_service_pb2_grpc as ws_grpc
from modelreg.watch import event_type_enum

if TYPE_CHECKING:
    import grpc


def webhook_name(name: str) -> str:
    return name if name.startswith("webhooks/") else f"webhooks/{name}"


def _model(model: str) -> str:
    return model if model.startswith("models/") else f"models/{model}"


class WebhookMixin:
    """Needs `self._channel`, `self._call` and `self._pages` from `Client`."""

    if TYPE_CHECKING:
        _channel: grpc.Channel
        _call: Callable[..., Any]
        _pages: Callable[..., Iterator[Any]]

    @cached_property
    def _webhooks_stub(self) -> ws_grpc.WebhookServiceStub:
        return ws_grpc.WebhookServiceStub(self._channel)

    def create_webhook(
        self,
        name: str,
        url: str,
        events: Iterable[str | int],
        *,
        models: Iterable[str] = (),
        project: str = "",
        secret: str = "",
        after_sequence: int | None = None,
    ) -> tuple[wh.Webhook, str]:
        """Creates a webhook; returns (it, the generated secret, or '' when `secret` was
        given). `after_sequence` replays the matching events after it first."""
        hook = wh.Webhook(
            name=webhook_name(name),
            url=url,
            event_types=[event_type_enum(t) for t in events],
            models=[_model(m) for m in models],
            project=project,
        )
        req = ws.CreateWebhookRequest(webhook=hook, secret=secret)
        if after_sequence is not None:
            req.after_sequence = after_sequence
        resp = self._call(self._webhooks_stub.CreateWebhook, req)
        return resp.webhook, resp.secret

    def list_webhooks(self, project: str = "", *, page_size: int = 0) -> Iterator[wh.Webhook]:
        """Webhooks by name (of one project, or every project the caller may read them in)."""
        req = ws.ListWebhooksRequest(project=project, page_size=page_size)
        return self._pages(self._webhooks_stub.ListWebhooks, req, "webhooks")

    def get_webhook(self, name: str) -> wh.Webhook:
        return self._call(self._webhooks_stub.GetWebhook, ws.GetWebhookRequest(name=webhook_name(name))).webhook

    def delete_webhook(self, name: str) -> None:
        self._call(self._webhooks_stub.DeleteWebhook, ws.DeleteWebhookRequest(name=webhook_name(name)))

    def list_deliveries(
        self, name: str, *, failed_only: bool = False, page_size: int = 0
    ) -> Iterator[wh.WebhookDelivery]:
        """A webhook's deliveries, highest sequence first."""
        req = ws.ListDeliveriesRequest(webhook=webhook_name(name), failed_only=failed_only, page_size=page_size)
        return self._pages(self._webhooks_stub.ListDeliveries, req, "deliveries")

    def redeliver(self, name: str, delivery_id: str) -> wh.WebhookDelivery:
        """Queues a delivery again, with the same delivery id."""
        req = ws.RedeliverRequest(webhook=webhook_name(name), delivery_id=delivery_id)
        return self._call(self._webhooks_stub.Redeliver, req).delivery
