"""The canary judge: closes the loop from serving telemetry back to deployment state.

Agents report per-version request and error counts and p95 latency (AgentService). Every
`interval` seconds the judge reads each running canary that has a policy, sums what agents
observed, and asks the pure `judge_canary` for a verdict. A breach aborts the canary
(DEPLOYMENT_ACTION_AUTO_ABORT, the reason in the history); a canary that met its policy for
long enough is promoted (AUTO_PROMOTE). The change is a normal deployment change, so its
event reaches every agent. Several replicas may judge at once: a change is applied only if
the same canary is still running (checked under the deployment's row lock).
"""

from __future__ import annotations

import asyncio
import logging

from registry_server.domain import deployments as dd
from registry_server.storage.deployments import DeploymentRepository

log = logging.getLogger(__name__)

JUDGE_ACTOR = "modelreg-canary-judge"


async def judge_once(deployments: DeploymentRepository) -> list[tuple[str, dd.Verdict, str]]:
    decisions = []
    for model, stable, canary, policy in await deployments.judged_canaries():
        stats = await deployments.version_stats(model, [stable, canary])
        verdict, reason = dd.judge_canary(policy, stats.get(stable, dd.VersionStats()), stats.get(canary, dd.VersionStats()))
        if verdict == dd.Verdict.WAIT:
            continue
        action = dd.Action.AUTO_ABORT if verdict == dd.Verdict.ABORT else dd.Action.AUTO_PROMOTE
        _, seq = await deployments.change(model, action, JUDGE_ACTOR, reason, "", expect_canary=canary)
        if seq:
            log.warning("canary v%d of models/%s: %s (%s)", canary, model, verdict.value, reason)
            decisions.append((model, verdict, reason))
    return decisions


async def run_judge(deployments: DeploymentRepository, interval: float) -> None:
    while True:
        try:
            await judge_once(deployments)
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - the judge must outlive a database hiccup
            log.exception("canary judge pass failed")
        await asyncio.sleep(interval)
