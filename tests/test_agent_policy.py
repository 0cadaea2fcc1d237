"""The availability-preserving policy, table-tested: one line of rationale per case."""

from __future__ import annotations

import pytest

from serving_agent.policy import Action, Kind, State, VersionSnapshot, next_action

N, L, R, F, U = State.NEW, State.LOADING, State.READY, State.FAILED, State.UNLOADING


def snap(*rows):
    """rows: (version, state, desired[, retry_due])"""
    return [VersionSnapshot(v, s, d, *(rest or ())) for v, s, d, *rest in rows]


CASES = [
    # (rationale, versions, expected action)
    ("a first desired version is loaded", snap((1, N, True)), Action(Kind.LOAD, 1)),
    ("nothing to do once the desired version serves", snap((1, R, True)), None),
    (
        "a new version loads beside the old one: the old keeps serving",
        snap((1, R, False), (2, N, True)),
        Action(Kind.LOAD, 2),
    ),
    ("while the new version loads, the old one stays", snap((1, R, False), (2, L, True)), None),
    ("once the new version serves, the old one unloads", snap((1, R, False), (2, R, True)), Action(Kind.UNLOAD, 1)),
    ("a failed new version never evicts the old one", snap((1, R, False), (2, F, True, False)), None),
    (
        "a failed version is retried when its backoff elapsed, old still serving",
        snap((1, R, False), (2, F, True, True)),
        Action(Kind.LOAD, 2),
    ),
    (
        "when nothing is desired any more (model left production) the old version unloads",
        snap((1, R, False)),
        Action(Kind.UNLOAD, 1),
    ),
    ("a failed version no longer desired is forgotten", snap((1, R, True), (2, F, False)), Action(Kind.FORGET, 2)),
    (
        "a never-loaded version no longer desired is forgotten",
        snap((1, R, True), (2, N, False)),
        Action(Kind.FORGET, 2),
    ),
    ("one transition at a time: wait for an unload to finish", snap((1, U, False), (2, N, True)), None),
    (
        "rollback: the desired older version loads while the newer one keeps serving",
        snap((2, R, False), (1, N, True)),
        Action(Kind.LOAD, 1),
    ),
    ("stable and canary both desired: load the newest first", snap((3, N, True), (4, N, True)), Action(Kind.LOAD, 4)),
    (
        "stable and canary both desired: the second one loads after the first",
        snap((3, N, True), (4, R, True)),
        Action(Kind.LOAD, 3),
    ),
    ("several leftovers unload oldest first", snap((1, R, False), (2, R, False), (3, R, True)), Action(Kind.UNLOAD, 1)),
    ("no versions, no action", [], None),
]


@pytest.mark.parametrize(("rationale", "versions", "expected"), CASES, ids=[c[0] for c in CASES])
def test_availability_preserving_policy(rationale, versions, expected):
    assert next_action(versions) == expected, rationale


def warm(*rows):
    """rows: (version, state, desired, last_desired)"""
    return [VersionSnapshot(v, s, d, last_desired=g) for v, s, d, g in rows]


WARM_CASES = [
    ("the version served last stays warm once its successor serves", warm((1, R, False, 1), (2, R, True, 2)), None),
    (
        "of two leftovers the less recently desired unloads, even if it is newer",
        warm((1, R, False, 3), (2, R, False, 2), (3, R, True, 4)),
        Action(Kind.UNLOAD, 2),
    ),
    ("a rollback to the warm version needs no load", warm((1, R, True, 3), (2, R, False, 2)), None),
    (
        "nothing is kept warm while the desired version still loads (the old one serves)",
        warm((1, R, False, 1), (2, L, True, 2)),
        None,
    ),
    (
        "nothing desired any more (the model left production): nothing is kept warm",
        warm((1, R, False, 1)),
        Action(Kind.UNLOAD, 1),
    ),
]


@pytest.mark.parametrize(("rationale", "versions", "expected"), WARM_CASES, ids=[c[0] for c in WARM_CASES])
def test_policy_keeps_one_previous_version_warm(rationale, versions, expected):
    assert next_action(versions, keep_warm=1) == expected, rationale
