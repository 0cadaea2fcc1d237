"""Deployments on a real registry: canaries, promotion, abort, rollback, etags, history,
and the canary policy's verdicts (the pure judge, table-tested)."""

from __future__ import annotations

import json

import grpc
import pytest
from onnx_helpers import onnx_bytes

from modelreg import errors
from modelreg.v1 import deployment_service_pb2 as ds
from modelreg.v1 import resources_pb2 as res
from registry_server.domain.deployments import CanaryPolicy, Verdict, VersionStats, judge_canary


def three_versions(client, model: str = "svc") -> None:
    for i in range(3):
        client.register(model, f"weights {i}".encode())
    client.promote(model, 1, "production", reason="launch")


def stages(client, model: str) -> dict[int, int]:
    return {v.version: v.stage for v in client.list_versions(model)}


def test_canary_starts_changes_weight_and_promotes(client):
    three_versions(client)
    d = client.set_canary("svc", 2, 10, reason="try v2").deployment
    assert (d.stable.version_number, d.canary.version_number, d.canary_weight) == (1, 2, 10)
    assert d.canary.sha256 == client.get_version("svc", 2).artifact.sha256
    d = client.set_canary("svc", 2, 50, reason="more traffic").deployment
    assert d.canary_weight == 50
    d = client.promote_canary("svc", reason="v2 is good").deployment
    assert (d.stable.version_number, d.canary.version_number, d.canary_weight) == (2, 0, 0)
    assert stages(client, "svc") == {1: res.STAGE_ARCHIVED, 2: res.STAGE_PRODUCTION, 3: res.STAGE_NONE}
    assert client.get_version("svc", "production").version == 2
    actions = [(e.action, e.actor, e.reason) for e in client.deployment_history("svc")]
    assert actions == [
        (ds.DEPLOYMENT_ACTION_PROMOTE_CANARY, "tester", "v2 is good"),
        (ds.DEPLOYMENT_ACTION_SET_CANARY, "tester", "more traffic"),
        (ds.DEPLOYMENT_ACTION_SET_CANARY, "tester", "try v2"),
        (ds.DEPLOYMENT_ACTION_PROMOTE, "tester", "launch"),
    ]
    last = next(iter(client.deployment_history("svc")))
    assert (last.before.stable.version_number, last.before.canary.version_number) == (1, 2)
    assert (last.after.stable.version_number, last.after.canary.version_number) == (2, 0)
    # The stage history shows the canary promotion like any promotion.
    assert [(t.model_version, t.to_stage) for t in client.history("svc")][:2] == [
        ("models/svc/versions/2", res.STAGE_PRODUCTION),
        ("models/svc/versions/1", res.STAGE_ARCHIVED),
    ]


def test_abort_returns_all_traffic_to_stable(client):
    three_versions(client)
    client.set_canary("svc", 3, 25)
    d = client.abort_canary("svc", reason="p95 too high").deployment
    assert (d.stable.version_number, d.canary.version_number, d.canary_weight) == (1, 0, 0)
    assert stages(client, "svc")[3] == res.STAGE_NONE
    with pytest.raises(errors.FailedPrecondition, match="no canary to abort"):
        client.abort_canary("svc")
    with pytest.raises(errors.FailedPrecondition, match="no canary to promote"):
        client.promote_canary("svc")


def test_canary_rules_give_clear_errors(client):
    client.register("rules", b"a")
    client.register("rules", b"b")
    with pytest.raises(errors.FailedPrecondition, match="no production version"):
        client.set_canary("rules", 2, 10)
    client.promote("rules", 1, "production")
    with pytest.raises(errors.FailedPrecondition, match="already the stable"):
        client.set_canary("rules", 1, 10)
    with pytest.raises(errors.InvalidArgument, match="0 to 100"):
        client.set_canary("rules", 2, 101)
    with pytest.raises(errors.NotFound, match="versions/7"):
        client.set_canary("rules", 7, 10)
    with pytest.raises(errors.NotFound, match="models/ghost"):
        client.get_deployment("ghost")


def test_rollback_restores_previous_production_and_clears_canary(client):
    three_versions(client)
    client.promote("svc", 2, "production", reason="v2")
    client.set_canary("svc", 3, 10)
    d = client.rollback("svc", reason="v2 regressed").deployment
    assert (d.stable.version_number, d.canary.version_number, d.canary_weight) == (1, 0, 0)
    assert stages(client, "svc") == {1: res.STAGE_PRODUCTION, 2: res.STAGE_ARCHIVED, 3: res.STAGE_NONE}
    entry = next(iter(client.deployment_history("svc")))
    assert entry.action == ds.DEPLOYMENT_ACTION_ROLLBACK and entry.reason == "v2 regressed"
    # A second rollback walks back to v2, the production before v1's restoration.
    assert client.rollback("svc").deployment.stable.version_number == 2
    # Rollback to a named version.
    assert client.rollback("svc", to_version=3, reason="pin v3").deployment.stable.version_number == 3
    assert client.get_version("svc", "production").version == 3


def test_rollback_without_history_is_failed_precondition(client):
    client.register("fresh", b"a")
    client.promote("fresh", 1, "production")
    with pytest.raises(errors.FailedPrecondition, match="no previous production"):
        client.rollback("fresh")


def test_stale_etag_is_aborted(client):
    three_versions(client)
    etag = client.get_deployment("svc").etag
    client.set_canary("svc", 2, 10, etag=etag)
    with pytest.raises(errors.Aborted, match="changed since you read it"):
        client.set_canary("svc", 2, 20, etag=etag)
    fresh = client.get_deployment("svc").etag
    assert client.set_canary("svc", 2, 20, etag=fresh).deployment.canary_weight == 20
    with pytest.raises(errors.Aborted):
        client.rollback("svc", etag=etag)


def test_promoting_the_canary_version_directly_clears_the_canary(client):
    three_versions(client)
    client.set_canary("svc", 2, 10)
    client.promote("svc", 2, "production", reason="by hand")
    d = client.get_deployment("svc")
    assert (d.stable.version_number, d.canary.version_number) == (2, 0)


def test_deployment_cli_walkthrough(cli, tmp_path):
    w = tmp_path / "m.onnx"
    for i in (1, 2):
        w.write_bytes(onnx_bytes(100 + i))
        cli("register", "web", str(w))
    cli("promote", "web", "1", "production")
    out = json.loads(cli("canary", "web", "2", "--weight", "10", "--reason", "try", "-o", "json").stdout)
    assert out["deployment"]["canary"]["version"] == "models/web/versions/2"
    assert out["deployment"]["canary"]["versionNumber"] == "2" and out["deployment"]["canaryWeight"] == 10
    both = json.loads(cli("deployment", "web", "-o", "json").stdout)
    shown = both["deployment"]
    assert shown["stable"]["versionNumber"] == "1" and shown["etag"]
    assert both["rollout"]["deployment"]["canary"]["versionNumber"] == "2"
    text = cli("deployment", "web").stdout
    assert "v2 at 10%" in text
    assert "no agent follows this model yet" in text
    out = json.loads(cli("canary", "web", "--promote", "-o", "json").stdout)
    assert out["deployment"]["stable"]["version"] == "models/web/versions/2"
    out = json.loads(cli("rollback", "web", "--reason", "bad", "-o", "json").stdout)
    assert out["deployment"]["stable"]["versionNumber"] == "1"
    hist = json.loads(cli("deployment", "history", "web", "-o", "json").stdout)["entries"]
    assert [e["action"] for e in hist] == [
        "DEPLOYMENT_ACTION_ROLLBACK",
        "DEPLOYMENT_ACTION_PROMOTE_CANARY",
        "DEPLOYMENT_ACTION_SET_CANARY",
        "DEPLOYMENT_ACTION_PROMOTE",
    ]
    assert "rollback" in cli("deployment", "history", "web").stdout
    policy = json.loads(
        cli("deployment", "policy", "web", "--max-error-rate", "0.05", "--min-requests", "50", "-o", "json").stdout
    )
    assert policy["policy"]["maxErrorRate"] == 0.05
    bad = cli("canary", "web", "--weight", "5", check=False)
    assert bad.returncode == 2 and "VERSION --weight" in bad.stderr
    stale = cli("canary", "web", "2", "--weight", "5", "--etag", "0", check=False)
    assert stale.returncode == 1 and "ABORTED" in stale.stderr


def test_grpc_status_codes_for_deployments(client):
    three_versions(client)
    with pytest.raises(grpc.RpcError) as e:
        client.deployment_stub.SetCanary(ds.SetCanaryRequest(name="models/svc/deployment", weight=5))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as e:
        client.deployment_stub.GetDeployment(ds.GetDeploymentRequest(name="models/svc/oops/x"))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# ---------------------------------------------------------------------- the judge (pure)

POLICY = CanaryPolicy(max_error_rate=0.05, max_latency_ratio=2.0, min_requests=100, auto_promote_after=1000)


@pytest.mark.parametrize(
    "policy, stable, canary, verdict, why",
    [
        (
            POLICY,
            VersionStats(5000, 5, 10),
            VersionStats(99, 99, 50),
            Verdict.WAIT,
            "too few canary requests to judge, however bad they look",
        ),
        (
            POLICY,
            VersionStats(5000, 5, 10),
            VersionStats(200, 11, 10),
            Verdict.ABORT,
            "5.5 % errors breaches a 5 % limit",
        ),
        (
            POLICY,
            VersionStats(5000, 5, 10),
            VersionStats(200, 10, 10),
            Verdict.WAIT,
            "exactly at the limit is within it",
        ),
        (
            POLICY,
            VersionStats(5000, 5, 10),
            VersionStats(200, 0, 20.5),
            Verdict.ABORT,
            "p95 above twice stable's breaches the latency ratio",
        ),
        (
            POLICY,
            VersionStats(0, 0, 0),
            VersionStats(200, 0, 500),
            Verdict.WAIT,
            "no stable latency to compare against: latency is not judged",
        ),
        (
            POLICY,
            VersionStats(5000, 5, 10),
            VersionStats(1000, 3, 12),
            Verdict.PROMOTE,
            "enough good requests: promote",
        ),
        (
            CanaryPolicy(max_error_rate=0.05),
            VersionStats(5000, 5, 10),
            VersionStats(10**6, 0, 1),
            Verdict.WAIT,
            "without auto_promote_after a healthy canary waits for a human",
        ),
        (
            CanaryPolicy(),
            VersionStats(5000, 5, 10),
            VersionStats(1000, 1000, 99),
            Verdict.WAIT,
            "an empty policy never judges",
        ),
    ],
)
def test_judge_canary(policy, stable, canary, verdict, why):
    got, reason = judge_canary(policy, stable, canary)
    assert got == verdict, why
    assert bool(reason) == (verdict != Verdict.WAIT), why


def test_the_running_canarys_version_cannot_be_deleted(client):
    """Deleting the canary's version would leave the deployment pointing at nothing: refused,
    and the deployment is unchanged; once the canary is aborted the version can go."""
    client.register("cdel", b"stable")
    client.register("cdel", b"canary")
    client.promote("cdel", 1, "production")
    client.set_canary("cdel", 2, 10)
    with pytest.raises(errors.FailedPrecondition, match="is the running canary; abort it"):
        client.delete_version("cdel", 2)
    d = client.get_deployment("cdel")
    assert (d.stable.version_number, d.canary.version_number, d.canary_weight) == (1, 2, 10)
    client.abort_canary("cdel")
    client.delete_version("cdel", 2)
    assert [v.version for v in client.list_versions("cdel")] == [1]
