"""The registry's deployment rules as pure functions, tested with hand-built tables: each
case is one line of English rationale (TF Serving's policy tests' shape)."""

from __future__ import annotations

import pytest

from registry_server.domain.agents import ServedVersion, converged
from registry_server.domain.deployments import (
    ArtifactRef,
    Deployment,
    VersionInfo,
    plan_promote_canary,
    plan_rollback,
    plan_set_canary,
    plan_stage_move,
)
from registry_server.domain.stages import Stage
from registry_server.errors import FailedPrecondition, StageConflict


def ref(n: int) -> ArtifactRef:
    return ArtifactRef("m", n, f"sha{n}")


def at(n: int, stage: Stage = Stage.NONE) -> VersionInfo:
    return VersionInfo(ref(n), stage)


def dep(stable: int = 0, canary: int = 0, weight: int = 0, revision: int = 5) -> Deployment:
    return Deployment("m", ref(stable) if stable else None, ref(canary) if canary else None, weight, revision)


# ---------------------------------------------------------------- stage moves

STAGE_MOVES = [
    (
        "the first production version: nothing to archive",
        dep(),
        at(1),
        Stage.PRODUCTION,
        [(1, "none", "production")],
        (1, 0, 0, 6),
    ),
    (
        "a new production version archives the previous one first",
        dep(1),
        at(2, Stage.STAGING),
        Stage.PRODUCTION,
        [(1, "production", "archived"), (2, "staging", "production")],
        (2, 0, 0, 6),
    ),
    (
        "staging a version changes nothing agents serve",
        dep(1),
        at(2),
        Stage.STAGING,
        [(2, "none", "staging")],
        (1, 0, 0, 5),
    ),
    (
        "archiving production leaves no stable version, and so no canary",
        dep(1, 2, 10),
        at(1, Stage.PRODUCTION),
        Stage.ARCHIVED,
        [(1, "production", "archived")],
        (0, 0, 0, 6),
    ),
    (
        "promoting the canary directly clears the canary",
        dep(1, 2, 10),
        at(2),
        Stage.PRODUCTION,
        [(1, "production", "archived"), (2, "none", "production")],
        (2, 0, 0, 6),
    ),
    (
        "another version into production keeps a canary that differs",
        dep(1, 3, 10),
        at(2),
        Stage.PRODUCTION,
        [(1, "production", "archived"), (2, "none", "production")],
        (2, 3, 10, 6),
    ),
]


@pytest.mark.parametrize(
    ("rationale", "before", "target", "stage", "moves", "after"), STAGE_MOVES, ids=[c[0] for c in STAGE_MOVES]
)
def test_stage_move_plans(rationale, before, target, stage, moves, after):
    plan = plan_stage_move(before, target, stage, "why", "ops")
    assert [(m.version, m.from_stage.value, m.to_stage.value) for m in plan.moves] == moves, rationale
    a = plan.after
    assert (a.stable_version, a.canary_version, a.canary_weight, a.revision) == after, rationale
    types = [e.type for e in plan.events()]
    assert types == ["STAGE_CHANGED"] * len(moves) + (["DEPLOYMENT_CHANGED"] if after[3] != 5 else []), rationale


def test_a_deployment_event_carries_the_whole_new_deployment():
    plan = plan_stage_move(dep(1), at(2), Stage.PRODUCTION, "better", "ops")
    event = plan.events()[-1]
    assert event.details["action"] == "promote"
    assert Deployment.from_dict("m", event.details["deployment"]).desired() == (ref(2), None, 0)


@pytest.mark.parametrize(
    ("rationale", "before", "target", "stage"),
    [
        ("a version never goes back to none", dep(), at(1, Stage.STAGING), Stage.NONE),
        ("moving to the stage it is in is refused, so a retry is visible", dep(), at(1, Stage.STAGING), Stage.STAGING),
    ],
)
def test_illegal_stage_moves_are_refused(rationale, before, target, stage):
    with pytest.raises(StageConflict):
        plan_stage_move(before, target, stage, "", "ops")


# ---------------------------------------------------------------- canary and rollback


def test_a_canary_needs_a_stable_version_to_compare_against():
    with pytest.raises(FailedPrecondition, match="no production version to canary against"):
        plan_set_canary(dep(), at(2), 10, "", "ops")


def test_the_stable_version_cannot_be_its_own_canary():
    with pytest.raises(FailedPrecondition, match="already the stable"):
        plan_set_canary(dep(1), at(1, Stage.PRODUCTION), 10, "", "ops")


def test_promoting_the_canary_archives_stable_and_clears_the_canary():
    plan = plan_promote_canary(dep(1, 2, 25), at(2), "good", "ops")
    assert [(m.version, m.to_stage) for m in plan.moves] == [(1, Stage.ARCHIVED), (2, Stage.PRODUCTION)]
    assert plan.after.desired() == (ref(2), None, 0)


@pytest.mark.parametrize(
    ("rationale", "before", "target", "moves", "stable"),
    [
        (
            "rolling back to an archived version puts it back in production",
            dep(2),
            at(1, Stage.ARCHIVED),
            [(2, Stage.ARCHIVED), (1, Stage.PRODUCTION)],
            1,
        ),
        (
            "rolling back to the stable version while a canary runs only clears the canary",
            dep(2, 3, 10),
            at(2, Stage.PRODUCTION),
            [],
            2,
        ),
    ],
)
def test_rollback_plans(rationale, before, target, moves, stable):
    plan = plan_rollback(before, target, "", "ops")
    assert [(m.version, m.to_stage) for m in plan.moves] == moves, rationale
    assert plan.after.desired() == (ref(stable), None, 0), rationale


def test_rollback_without_a_previous_version_says_how_to_name_one():
    with pytest.raises(FailedPrecondition, match="--to VERSION"):
        plan_rollback(dep(1), None, "", "ops")


def test_history_rows_written_before_refs_still_read():
    old = {"stable_version": 3, "canary_version": 4, "canary_weight": 5, "revision": 9}
    d = Deployment.from_dict("m", old)
    assert (d.stable_version, d.canary_version, d.canary_weight, d.revision) == (3, 4, 5, 9)


# ---------------------------------------------------------------- rollout convergence


def row(version: int, state: str = "serving", sha: str = "") -> ServedVersion:
    return ServedVersion(version=version, sha256=sha or f"sha{version}", state=state)


CONVERGENCE = [
    ("serving exactly the desired version", [row(2)], dep(2), True),
    ("the old version still serves beside the new one", [row(2), row(1)], dep(2), False),
    ("the old version draining does not block completion", [row(2), row(1, "unloading")], dep(2), True),
    ("the new version failed: the old one serving is not convergence", [row(2, "failed"), row(1)], dep(2), False),
    ("the right number with the wrong digest is not the desired version", [row(2, sha="other")], dep(2), False),
    ("a running canary must be served too", [row(1)], dep(1, 2, 10), False),
    ("stable and canary both serving", [row(2), row(1)], dep(1, 2, 10), True),
    ("nothing in production: nothing may serve", [row(1)], dep(), False),
    ("nothing in production and nothing served", [], dep(), True),
]


@pytest.mark.parametrize(("rationale", "versions", "desired", "expected"), CONVERGENCE, ids=[c[0] for c in CONVERGENCE])
def test_rollout_convergence(rationale, versions, desired, expected):
    assert converged(versions, desired) is expected, rationale
