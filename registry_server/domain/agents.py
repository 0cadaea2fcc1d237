"""Serving agents as the registry sees them: what each reports it serves, and the rules
of a rollout (convergence, staleness). Pure, no I/O; the knobs live in `Settings`."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from registry_server.domain.deployments import Deployment
from registry_server.domain.signatures import Signature

# What an agent may report per version.
SERVED_STATES = ("loading", "serving", "failed", "unloading")


@dataclass
class ServedVersion:
    version: int
    sha256: str
    state: str  # one of SERVED_STATES
    error: str = ""
    desired: bool = False
    attempts: int = 0
    download_seconds: float = 0.0
    load_seconds: float = 0.0
    request_count: int = 0
    error_count: int = 0
    p95_latency_ms: float = 0.0
    state_time: datetime | None = None
    # What the loaded model takes and gives, as the agent's runtime saw it (SERVING only).
    signature: Signature | None = None


@dataclass
class AgentRecord:
    agent_id: str
    node: str = ""
    address: str = ""
    healthy: bool = False
    started_at: datetime | None = None
    reported_at: datetime | None = None
    # model id -> versions, newest first
    models: dict[str, list[ServedVersion]] = field(default_factory=dict)


def is_stale(agent: AgentRecord, now: datetime, stale_after: timedelta) -> bool:
    """An agent that has not reported for `stale_after` no longer counts toward a rollout."""
    return agent.reported_at is None or now - agent.reported_at > stale_after


def converged(versions: list[ServedVersion], desired: Deployment) -> bool:
    """An agent converged when it serves the desired stable version (and the canary, while
    one runs) with the desired digests, and no other version is left serving."""
    serving = {v.version: v for v in versions if v.state == "serving"}
    wanted = {r.version: r.sha256 for r in (desired.stable, desired.canary) if r is not None}
    return set(serving) == set(wanted) and all(serving[v].sha256 == sha for v, sha in wanted.items())
