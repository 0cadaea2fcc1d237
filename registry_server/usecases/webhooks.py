"""Use cases of webhooks: create, list, get, delete, list deliveries, redeliver.

A webhook belongs to one project: creating, deleting and redelivering need
`webhooks.manage` there, reading needs `webhooks.read`. Its events are that project's
only, so a webhook never carries what its creator could not watch. The secret is sealed
with the server's key before it is stored, returned only once (when generated here) and
never logged; the URL is not logged either (some carry a token of the receiver).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence

from registry_server.domain import webhooks as dw
from registry_server.domain.access import Caller, Permission, project_of, validate_id
from registry_server.errors import InvalidArgument, ModelNotFound, NotFound
from registry_server.storage.webhooks import WebhookStore
from registry_server.usecases.access import Access
from registry_server.webhooks.deliverer import Deliverer
from registry_server.webhooks.keys import SecretBox
from registry_server.webhooks.sender import Sender

log = logging.getLogger(__name__)

SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    """`whsec_` and 256 random bits, URL-safe base64."""
    return SECRET_PREFIX + secrets.token_urlsafe(32)


class Webhooks:
    def __init__(self, store: WebhookStore, box: SecretBox, sender: Sender, access: Access, deliverer: Deliverer):
        self.store = store
        self.box = box
        self.sender = sender
        self.access = access
        self.deliverer = deliverer

    async def create(
        self,
        caller: Caller,
        name: str,
        url: str,
        event_types: Sequence[str],
        models: Sequence[str],
        project: str,
        secret: str,
        after: int | None,
    ) -> tuple[dw.Webhook, str]:
        """Returns (the webhook, the generated secret or '' when the caller gave one)."""
        name = dw.validate_name(name)
        types = dw.check_types(event_types)
        if after is not None and after < 0:
            raise InvalidArgument(f"after_sequence must be 0 or more, not {after}; leave it unset to start now")
        if not project and models:
            try:
                project = await self.access.project_of(models[0])
            except ModelNotFound:
                pass
        project = project_of(validate_id(project, "project") if project else "")
        await self.access.require(caller, Permission.MANAGE_WEBHOOKS, project=project)
        for model in models:
            try:
                other = await self.access.project_of(model)
            except ModelNotFound:
                continue  # not created yet: only its events in this project will be sent
            if other != project:
                raise InvalidArgument(
                    f"model 'models/{model}' is in project {other!r}, not {project!r}: a webhook carries the events "
                    "of one project; make one webhook per project"
                )
        dw.validate_url(url)
        await self.sender.check_destination(url)
        generated = "" if secret else new_secret()
        sealed = self.box.seal(dw.validate_secret(secret) if secret else generated)
        webhook = await self.store.create(name, project, url, types, models, sealed, caller.name, after)
        self.deliverer.poke(name)
        log.info(
            "webhook %s created in project %s for %s (from sequence %d)",
            name,
            project,
            ", ".join(t.lower() for t in types),
            webhook.cursor,
            extra={"principal": caller.name},
        )
        return webhook, generated

    async def get(self, caller: Caller, name: str) -> dw.Webhook:
        webhook = await self.store.get(dw.validate_name(name))
        await self.access.require(caller, Permission.READ_WEBHOOKS, project=webhook.project)
        return webhook

    async def list_webhooks(self, caller: Caller, project: str, after_name: str, limit: int) -> list[dw.Webhook]:
        if project:
            await self.access.require(caller, Permission.READ_WEBHOOKS, project=validate_id(project, "project"))
            projects: frozenset[str] | None = frozenset({project})
        else:
            projects = self.access.readable(caller, Permission.READ_WEBHOOKS)
        return await self.store.list_webhooks(projects, after_name, limit)

    async def delete(self, caller: Caller, name: str) -> None:
        webhook = await self.store.get(dw.validate_name(name))
        await self.access.require(caller, Permission.MANAGE_WEBHOOKS, project=webhook.project)
        await self.store.delete(webhook.name)
        self.deliverer.poke(webhook.name)
        log.info("webhook %s deleted", webhook.name, extra={"principal": caller.name})

    async def deliveries(
        self, caller: Caller, name: str, failed_only: bool, before: int, limit: int
    ) -> list[dw.Delivery]:
        webhook = await self.get(caller, name)
        return await self.store.deliveries(webhook.name, failed_only, before, limit)

    async def redeliver(self, caller: Caller, name: str, delivery_id: str) -> dw.Delivery:
        webhook = await self.store.get(dw.validate_name(name))
        await self.access.require(caller, Permission.MANAGE_WEBHOOKS, project=webhook.project)
        delivery = await self.store.redeliver(webhook.name, delivery_id)
        if delivery is None:
            raise NotFound(
                f"webhook 'webhooks/{webhook.name}' has no delivery {delivery_id!r}; list them with "
                f"'modelreg webhooks deliveries {webhook.name}'"
            )
        self.deliverer.poke(webhook.name)
        log.info(
            "webhook %s: delivery %s of event %d requeued",
            webhook.name,
            delivery.id,
            delivery.sequence,
            extra={"principal": caller.name},
        )
        return delivery
