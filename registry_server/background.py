"""The registry's background tasks. Like every front end, they only call use cases.

- The canary judge closes the loop from serving telemetry back to deployment state. Agents
  report per-version request and error counts and p95 latency (AgentService). Every
  `interval` seconds the judge runs one pass of `Deployments.judge_canaries`: each running
  canary that has a policy is judged on what live agents observed; a breach aborts it
  (DEPLOYMENT_ACTION_AUTO_ABORT, the reason in the history), a canary that met its policy
  for long enough is promoted (AUTO_PROMOTE). The change is a normal deployment change made
  by the same use case as an operator's, so its event reaches every agent. Several replicas
  may judge at once: a verdict is applied only if the same canary is still running (checked
  under the model's row lock).
- The janitor removes uploads that never completed (a client or a server that died
  mid-upload) once they are older than the upload TTL.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

from registry_server.outage import Outage
from registry_server.usecases.deployments import Deployments
from registry_server.usecases.models import Models

log = logging.getLogger("modelreg.background")


async def run_judge(deployments: Deployments, interval: float) -> None:
    outage = Outage("canary judge", log)
    while True:
        try:
            await deployments.judge_canaries()
            outage.ok()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the judge must outlive a database outage
            outage.failed(exc)
        await asyncio.sleep(interval)


async def run_janitor(models: Models, ttl: timedelta, interval: float) -> None:
    while True:
        try:
            removed = await models.remove_stale_uploads(ttl)
            if removed:
                log.info("janitor removed %d stale uploads", removed)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the janitor must survive a flaky store
            log.exception("janitor sweep failed")
        await asyncio.sleep(interval)
