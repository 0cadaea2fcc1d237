"""The availability-preserving policy: which single load or unload to do next for a model.

A PURE FUNCTION of a snapshot of the model's versions. The manager calls it in a loop and
executes the action it returns, one transition at a time, until it returns None.

Invariants (after TF Serving's AvailabilityPreservingPolicy):
- A VERSION THAT IS SERVING IS NEVER UNLOADED BEFORE A DESIRED VERSION SERVES, unless
  nothing at all is desired any more (the model left production).
- New versions load beside old ones; the old one unloads only after the swap.
- A failed version is retried only when its backoff has elapsed; a failed or not yet
  loaded version that is no longer desired is forgotten.
- Warm standby: once a desired version serves, the `keep_warm` loaded versions that were
  desired most recently stay loaded (not routed to), so promoting one of them again (a
  rollback) is a pointer flip with no fetch and no session creation. The rest unload.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass


class State(enum.Enum):
    NEW = "new"  # desired, nothing done yet
    LOADING = "loading"  # download, verify, load, warm-up in progress
    READY = "ready"  # loaded and warmed up: routable
    FAILED = "failed"  # the last load attempt failed; never routable
    UNLOADING = "unloading"  # draining leases, then unloading


class Kind(enum.Enum):
    LOAD = "load"
    UNLOAD = "unload"
    FORGET = "forget"  # drop the bookkeeping of a version that holds no resources


@dataclass(frozen=True)
class VersionSnapshot:
    version: int
    state: State
    desired: bool
    retry_due: bool = False  # FAILED only: its backoff has elapsed
    last_desired: int = 0  # when it was last desired (a counter): higher served more recently


@dataclass(frozen=True)
class Action:
    kind: Kind
    version: int


def next_action(versions: Iterable[VersionSnapshot], keep_warm: int = 0) -> Action | None:
    """The next transition for one model, or None when there is nothing to do now."""
    vs = sorted(versions, key=lambda v: v.version)
    if any(v.state in (State.LOADING, State.UNLOADING) for v in vs):
        return None  # one transition at a time: wait for the one in flight
    desired = [v for v in vs if v.desired]
    undesired = [v for v in vs if not v.desired]
    for v in undesired:
        if v.state in (State.NEW, State.FAILED):
            return Action(Kind.FORGET, v.version)
    desired_ready = any(v.state is State.READY for v in desired)
    loaded = [v for v in undesired if v.state is State.READY]
    if desired_ready and keep_warm > 0:  # the most recently desired stay warm
        warm = sorted(loaded, key=lambda v: (v.last_desired, v.version))[-keep_warm:]
        loaded = [v for v in loaded if v not in warm]
    for v in loaded:  # oldest first
        if desired_ready or not desired:
            return Action(Kind.UNLOAD, v.version)
    loadable = [v for v in desired if v.state is State.NEW or (v.state is State.FAILED and v.retry_due)]
    if loadable:
        return Action(Kind.LOAD, loadable[-1].version)  # newest first
    return None
