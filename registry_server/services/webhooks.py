"""WebhookService: proto in, use case, proto out."""

from __future__ import annotations

from modelreg.v1 import event_service_pb2 as es
from modelreg.v1 import webhook_pb2 as wh
from modelreg.v1 import webhook_service_pb2 as ws
from modelreg.v1 import webhook_service_pb2_grpc as ws_grpc
from registry_server.domain import webhooks as dw
from registry_server.domain.names import model_name
from registry_server.services import convert as cv
from registry_server.services.auth import caller_of
from registry_server.services.events import TYPE_FROM_DB, parse_models, parse_types
from registry_server.usecases.webhooks import Webhooks

_STATES = {
    dw.State.PENDING: wh.DELIVERY_STATE_PENDING,
    dw.State.DELIVERED: wh.DELIVERY_STATE_DELIVERED,
    dw.State.FAILED: wh.DELIVERY_STATE_FAILED,
}


def webhook_to_proto(w: dw.Webhook) -> wh.Webhook:
    return wh.Webhook(
        name=f"webhooks/{w.name}",
        url=w.url,
        event_types=[TYPE_FROM_DB[t] for t in w.event_types if t in TYPE_FROM_DB],
        models=[model_name(m) for m in w.models],
        project=w.project,
        created_by=w.created_by,
        create_time=cv.ts(w.created_at),
        cursor_sequence=w.cursor,
        pending_deliveries=w.pending,
        failed_deliveries=w.failed,
    )


def delivery_to_proto(d: dw.Delivery) -> wh.WebhookDelivery:
    return wh.WebhookDelivery(
        delivery_id=d.id,
        webhook=f"webhooks/{d.webhook}",
        sequence=d.sequence,
        event_type=TYPE_FROM_DB.get(d.event_type, es.EVENT_TYPE_UNSPECIFIED),
        state=_STATES[d.state],
        attempts=d.attempts,
        last_status_code=d.last_status,
        last_error=d.last_error,
        create_time=cv.ts(d.created_at),
        last_attempt_time=cv.ts(d.last_attempt_at),
        next_attempt_time=cv.ts(d.next_attempt_at) if d.state is dw.State.PENDING else None,
        deliver_time=cv.ts(d.delivered_at),
        redeliveries=d.redeliveries,
    )


class WebhookServicer(ws_grpc.WebhookServiceServicer):
    def __init__(self, webhooks: Webhooks):
        self.webhooks = webhooks

    async def CreateWebhook(self, request: ws.CreateWebhookRequest, context) -> ws.CreateWebhookResponse:
        w = request.webhook
        webhook, secret = await self.webhooks.create(
            caller_of(context),
            w.name,
            w.url,
            parse_types(w.event_types, "webhook.event_types"),
            parse_models(w.models, "webhook.models"),
            w.project,
            request.secret,
            request.after_sequence if request.HasField("after_sequence") else None,
        )
        return ws.CreateWebhookResponse(webhook=webhook_to_proto(webhook), secret=secret)

    async def ListWebhooks(self, request: ws.ListWebhooksRequest, context) -> ws.ListWebhooksResponse:
        size = cv.page_size(request.page_size)
        after = cv.decode_token("webhooks", request.page_token) or ""
        rows = await self.webhooks.list_webhooks(caller_of(context), request.project, after, size + 1)
        token = cv.encode_token("webhooks", rows[size - 1].name) if len(rows) > size else ""
        return ws.ListWebhooksResponse(webhooks=[webhook_to_proto(w) for w in rows[:size]], next_page_token=token)

    async def GetWebhook(self, request: ws.GetWebhookRequest, context) -> ws.GetWebhookResponse:
        webhook = await self.webhooks.get(caller_of(context), request.name)
        return ws.GetWebhookResponse(webhook=webhook_to_proto(webhook))

    async def DeleteWebhook(self, request: ws.DeleteWebhookRequest, context) -> ws.DeleteWebhookResponse:
        await self.webhooks.delete(caller_of(context), request.name)
        return ws.DeleteWebhookResponse()

    async def ListDeliveries(self, request: ws.ListDeliveriesRequest, context) -> ws.ListDeliveriesResponse:
        size = cv.page_size(request.page_size)
        before = cv.decode_int_token("deliveries", request.page_token, 2**62)
        caller = caller_of(context)
        rows = await self.webhooks.deliveries(caller, request.webhook, request.failed_only, before, size + 1)
        token = cv.encode_token("deliveries", rows[size - 1].sequence) if len(rows) > size else ""
        return ws.ListDeliveriesResponse(deliveries=[delivery_to_proto(d) for d in rows[:size]], next_page_token=token)

    async def Redeliver(self, request: ws.RedeliverRequest, context) -> ws.RedeliverResponse:
        delivery = await self.webhooks.redeliver(caller_of(context), request.webhook, request.delivery_id)
        return ws.RedeliverResponse(delivery=delivery_to_proto(delivery))
