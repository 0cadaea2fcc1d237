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
- The janitor removes uploads that never completed: at once those of a server that died
  mid-upload (its upload lease is gone, `usecases.uploads`), and any older than the upload
  TTL. The heartbeat renews this server's own lease.
"""

from __future__ import annotations

import asyncio
import logging

from registry_server.outage import Outage
from registry_server.usecases.deployments import Deployments
from registry_server.usecases.uploads import Uploads

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


async def run_janitor(uploads: Uploads, interval: float) -> None:
    """A pass at once (a restarted server removes what its crashed predecessor left), then
    every `interval` seconds."""
    outage = Outage("upload janitor", log)
    while True:
        try:
            orphaned, stale = await uploads.sweep()
            if stale:
                log.info("janitor removed %d uploads older than the upload TTL", stale)
            outage.ok()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - the janitor must survive a flaky store
            outage.failed(exc)
        await asyncio.sleep(interval)


async def run_heartbeat(uploads: Uploads) -> None:
    """Renews this server's upload lease every third of the lease."""
    outage = Outage("upload lease heartbeat", log)
    while True:
        await asyncio.sleep(uploads.heartbeat_interval)
        try:
            await uploads.heartbeat()
            outage.ok()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - renewed at the next beat
            outage.failed(exc)
