"""Promotion gates and four-eyes approvals against a real registry: every check type, every
path into production, requests, approvals, expiry and a race."""

from __future__ import annotations

import threading
import time

import grpc
import pytest
from auth_helpers import bearer
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from modelreg.v1 import governance_pb2 as gv
from modelreg.v1 import governance_service_pb2 as gs
from modelreg.v1 import governance_service_pb2_grpc as gs_grpc
from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import registry_service_pb2_grpc as rs_grpc
from modelreg.v1 import resources_pb2 as res

T = gv.GateCheckType


def check(kind, metric: str = "", value: float = 0.0) -> gv.GateCheck:
    return gv.GateCheck(type=kind, metric=metric, value=value)


def violations(err: grpc.RpcError) -> list[tuple[str, str, str]]:
    status = rpc_status.from_call(err)
    out = []
    for d in status.details:
        if d.Is(error_details_pb2.PreconditionFailure.DESCRIPTOR):
            pf = error_details_pb2.PreconditionFailure()
            d.Unpack(pf)
            out += [(v.type, v.subject, v.description) for v in pf.violations]
    return out


def failed(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


class Env:
    """A model with versions carrying metrics, and the stubs, as one principal."""

    def __init__(self, address: str, token: str = ""):
        self.channel = grpc.insecure_channel(address)
        self.md = bearer(token) if token else ()
        self.reg = rs_grpc.RegistryServiceStub(self.channel)
        self.gov = gs_grpc.GovernanceServiceStub(self.channel)

    def as_(self, token: str) -> Env:
        other = Env.__new__(Env)
        other.__dict__.update(self.__dict__)
        other.md = bearer(token)
        return other

    def register(self, model: str, metrics: dict[str, float], payload: bytes) -> int:
        header = rs.RegisterModelVersionHeader(parent=f"models/{model}", create_model=True, metrics=metrics)
        reqs = [rs.RegisterModelVersionRequest(header=header), rs.RegisterModelVersionRequest(chunk=payload)]
        return self.reg.RegisterModelVersion(iter(reqs), metadata=self.md, timeout=30).model_version.version

    def promote(self, model: str, version: int, stage=res.STAGE_PRODUCTION, reason: str = ""):
        req = rs.PromoteModelVersionRequest(name=f"models/{model}/versions/{version}", stage=stage, reason=reason)
        return self.reg.PromoteModelVersion(req, metadata=self.md, timeout=30)

    def gate(self, model: str, *checks: gv.GateCheck, target: str = "production"):
        policy = gv.GatePolicy(target=target, checks=list(checks))
        return self.gov.SetGatePolicy(gs.SetGatePolicyRequest(model=f"models/{model}", policy=policy), metadata=self.md)

    def check_gates(self, model: str, version: int, target: str = "production") -> gv.GateEvaluation:
        req = gs.CheckGatesRequest(model_version=f"models/{model}/versions/{version}", target=target)
        return self.gov.CheckGates(req, metadata=self.md, timeout=30).evaluation

    def approve(self, model: str, version: int, reason: str = "lgtm"):
        req = gs.ApprovePromotionRequest(
            model_version=f"models/{model}/versions/{version}", target="production", reason=reason
        )
        return self.gov.ApprovePromotion(req, metadata=self.md, timeout=30)

    def stage_of(self, model: str, version: int) -> int:
        req = rs.GetModelVersionRequest(name=f"models/{model}/versions/{version}")
        return self.reg.GetModelVersion(req, metadata=self.md, timeout=30).model_version.stage


@pytest.fixture
def env(registry):
    e = Env(registry.address)
    yield e
    e.channel.close()


def test_each_check_type_passes_and_fails_with_its_message_and_detail(env):
    v1 = env.register("det", {"map50": 0.612, "latency_ms": 12.0}, b"w1")
    env.promote("det", v1)
    v2 = env.register("det", {"map50": 0.571, "latency_ms": 14.2}, b"w2")
    env.gate(
        "det",
        check(T.GATE_CHECK_TYPE_MIN, "map50", 0.5),
        check(T.GATE_CHECK_TYPE_MAX_DROP, "map50", 0.02),
        check(T.GATE_CHECK_TYPE_MAX, "latency_ms", 13),
        check(T.GATE_CHECK_TYPE_MAX_RISE, "latency_ms", 5),
        check(T.GATE_CHECK_TYPE_MIN, "recall", 0.5),
        check(T.GATE_CHECK_TYPE_REQUIRE_CARD),
    )
    ev = env.check_gates("det", v2)
    assert not ev.passed
    got = {(c.type, c.subject): (c.passed, c.description) for c in ev.checks}
    assert got[("min", "map50")] == (True, "map50 0.571 is at least the minimum 0.5")
    assert got[("max-drop", "map50")] == (
        False,
        "map50 0.571 is below production v1's 0.612 by 0.041; the policy allows a drop of at most 0.02",
    )
    assert got[("max", "latency_ms")] == (False, "latency_ms 14.2 is above the maximum 13")
    assert got[("max-rise", "latency_ms")][0] is True
    assert got[("min", "recall")] == (False, "metric recall is missing from v2; the policy needs it (min 0.5)")
    assert got[("require-card", "")] == (False, "v2 has no model card; the policy requires an approved card")

    err = failed(lambda: env.promote("det", v2))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    message = err.details()
    assert "map50 0.571 is below production v1's 0.612 by 0.041; the policy allows a drop of at most 0.02" in message
    assert "latency_ms 14.2 is above the maximum 13" in message and "recall is missing" in message
    assert [(t, s) for t, s, _ in violations(err)] == [
        ("max-drop", "map50"),
        ("max", "latency_ms"),
        ("min", "recall"),
        ("require-card", ""),
    ]
    assert env.stage_of("det", v2) == res.STAGE_NONE  # nothing moved


def test_change_checks_pass_with_nothing_in_the_stage_yet_and_say_why(env):
    v1 = env.register("fresh", {"map50": 0.3}, b"w1")
    env.gate("fresh", check(T.GATE_CHECK_TYPE_MAX_DROP, "map50", 0.01))
    ev = env.check_gates("fresh", v1)
    assert ev.passed
    assert ev.checks[0].description.startswith("no version is in production yet")
    env.promote("fresh", v1)


def test_every_path_into_production_is_gated(env, registry):
    from modelreg.v1 import deployment_service_pb2 as ds
    from modelreg.v1 import deployment_service_pb2_grpc as ds_grpc

    dep = ds_grpc.DeploymentServiceStub(env.channel)
    v1 = env.register("paths", {"map50": 0.7}, b"w1")
    env.promote("paths", v1)
    v2 = env.register("paths", {"map50": 0.6}, b"w2")
    env.gate("paths", check(T.GATE_CHECK_TYPE_MAX_DROP, "map50", 0.05))
    name = "models/paths/deployment"
    err = failed(lambda: dep.SetCanary(ds.SetCanaryRequest(name=name, version=v2, weight=10), timeout=30))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "cannot start a canary in production" in err.details()
    # Allowed in, then the policy tightens: promoting the canary is refused, by hand and by the judge.
    env.gov.ClearGatePolicy(gs.ClearGatePolicyRequest(model="models/paths", target="production"))
    dep.SetCanary(ds.SetCanaryRequest(name=name, version=v2, weight=50), timeout=30)
    env.gate("paths", check(T.GATE_CHECK_TYPE_MAX_DROP, "map50", 0.05))
    err = failed(lambda: dep.PromoteCanary(ds.PromoteCanaryRequest(name=name), timeout=30))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "map50" in err.details()

    async def judge_promotes():
        deployments = registry.running.deployments
        from registry_server.domain import deployments as dd

        return await deployments._apply_verdict("paths", v2, dd.Verdict.PROMOTE, "met its policy")

    assert registry.call(judge_promotes()) is False
    assert env.stage_of("paths", v2) == res.STAGE_NONE
    # Rollback to a version that once held production skips metric checks by default.
    dep.AbortCanary(ds.AbortCanaryRequest(name=name), timeout=30)
    env.gov.ClearGatePolicy(gs.ClearGatePolicyRequest(model="models/paths", target="production"))
    env.promote("paths", v2)
    env.gate("paths", check(T.GATE_CHECK_TYPE_MIN, "map50", 0.9))
    dep.Rollback(ds.RollbackRequest(name=name, to_version=v1), timeout=30)
    assert env.stage_of("paths", v1) == res.STAGE_PRODUCTION


def test_approvals_need_auth_on(env):
    env.register("m", {}, b"w")
    err = failed(lambda: env.gate("m", check(T.GATE_CHECK_TYPE_APPROVALS, value=1)))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "auth on" in err.details()


@pytest.fixture
def team(secure_registry):
    sr = secure_registry
    trainer = sr.principal("ci", ("trainer", "default"))
    tokens = {name: sr.principal(name, ("releaser", "default")) for name in ("rita", "ravi", "rosa")}
    e = Env(sr.address, trainer)
    yield e, tokens, sr
    e.channel.close()


def test_four_eyes_a_request_two_distinct_approvers_and_no_self_approval(team):
    e, tok, _ = team
    v1 = e.register("fraud", {"auc": 0.9}, b"w1")
    rita, ravi, rosa = (e.as_(tok[n]) for n in ("rita", "ravi", "rosa"))
    rita.gate("fraud", check(T.GATE_CHECK_TYPE_APPROVALS, value=2), check(T.GATE_CHECK_TYPE_MIN, "auc", 0.8))
    response = rita.promote("fraud", v1, reason="launch")
    req = response.promotion_request
    assert req.state == gv.PROMOTION_REQUEST_STATE_PENDING and req.requester == "rita" and req.required_approvals == 2
    assert response.sequence == 0 and e.stage_of("fraud", v1) == res.STAGE_NONE

    err = failed(lambda: rita.approve("fraud", v1))
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED and "four eyes" in err.details()
    err = failed(lambda: e.approve("fraud", v1))  # a trainer may not approve
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED and "promotions.approve" in err.details()

    first = ravi.approve("fraud", v1)
    assert first.request.state == gv.PROMOTION_REQUEST_STATE_PENDING and not first.HasField("model_version")
    assert failed(lambda: ravi.approve("fraud", v1)).code() == grpc.StatusCode.FAILED_PRECONDITION  # twice
    assert e.check_gates("fraud", v1).checks[0].actual == "1"
    second = rosa.approve("fraud", v1, reason="numbers look right")
    assert second.request.state == gv.PROMOTION_REQUEST_STATE_APPROVED
    assert second.model_version.stage == res.STAGE_PRODUCTION
    history = e.reg.ListStageTransitions(rs.ListStageTransitionsRequest(parent="models/fraud"), metadata=e.md)
    assert history.transitions[0].actor == "rosa"
    assert "requested by rita, approved by ravi, rosa" in history.transitions[0].reason
    listed = e.gov.ListPromotionRequests(gs.ListPromotionRequestsRequest(model="models/fraud"), metadata=e.md)
    assert [(a.principal, a.approved) for a in listed.requests[0].approvals] == [("ravi", True), ("rosa", True)]


def test_a_rejection_closes_the_request_and_a_newer_request_supersedes(team):
    e, tok, _ = team
    v1 = e.register("sup", {}, b"w1")
    v2 = e.register("sup", {}, b"w2")
    rita, ravi = e.as_(tok["rita"]), e.as_(tok["ravi"])
    rita.gate("sup", check(T.GATE_CHECK_TYPE_APPROVALS, value=1))
    rita.promote("sup", v1)
    rita.promote("sup", v2)  # supersedes the request for v1
    err = failed(lambda: ravi.approve("sup", v1))
    assert err.code() == grpc.StatusCode.NOT_FOUND and "the pending one is for v2" in err.details()
    req = gs.RejectPromotionRequest(model_version=f"models/sup/versions/{v2}", target="production", reason="no")
    assert ravi.gov.RejectPromotion(req, metadata=ravi.md).request.state == gv.PROMOTION_REQUEST_STATE_REJECTED
    states = [
        r.state
        for r in e.gov.ListPromotionRequests(
            gs.ListPromotionRequestsRequest(model="models/sup"), metadata=e.md
        ).requests
    ]
    assert states == [gv.PROMOTION_REQUEST_STATE_REJECTED, gv.PROMOTION_REQUEST_STATE_SUPERSEDED]


def test_a_request_expires(make_registry, tmp_path):
    from auth_helpers import SecureRegistry, admin_token_of

    from registry_server.config import Settings

    reg = make_registry(auth="on", promotion_request_ttl=Settings().promotion_request_ttl / (7 * 24 * 3600))
    sr = SecureRegistry(reg, reg.address, admin_token_of(tmp_path / "data"), grpc.insecure_channel(reg.address))
    e = Env(reg.address, sr.principal("rita", ("releaser", "default"), ("trainer", "default")))
    ravi = e.as_(sr.principal("ravi", ("releaser", "default")))
    v1 = e.register("exp", {}, b"w")
    e.gate("exp", check(T.GATE_CHECK_TYPE_APPROVALS, value=1))
    e.promote("exp", v1)
    time.sleep(1.2)
    err = failed(lambda: ravi.approve("exp", v1))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "expired" in err.details()
    listed = e.gov.ListPromotionRequests(
        gs.ListPromotionRequestsRequest(state=gv.PROMOTION_REQUEST_STATE_EXPIRED), metadata=e.md
    )
    assert [r.model_version for r in listed.requests] == [f"models/exp/versions/{v1}"]


def test_two_approvals_and_a_competing_promotion_race_to_exactly_one_outcome(team):
    e, tok, _ = team
    v1 = e.register("race", {}, b"w1")
    v2 = e.register("race", {}, b"w2")
    rita, ravi, rosa = (e.as_(tok[n]) for n in ("rita", "ravi", "rosa"))
    rita.gate("race", check(T.GATE_CHECK_TYPE_APPROVALS, value=2))
    rita.promote("race", v1)
    ravi.approve("race", v1)
    outcomes: dict[str, object] = {}

    def run(name, fn):
        try:
            outcomes[name] = fn()
        except grpc.RpcError as err:
            outcomes[name] = err.code()

    threads = [
        threading.Thread(target=run, args=("approve", lambda: rosa.approve("race", v1))),
        threading.Thread(target=run, args=("compete", lambda: ravi.promote("race", v2))),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    listed = e.gov.ListPromotionRequests(gs.ListPromotionRequestsRequest(model="models/race"), metadata=e.md).requests
    production = [v for v in (v1, v2) if e.stage_of("race", v) == res.STAGE_PRODUCTION]
    states = {r.model_version.rsplit("/", 1)[1]: r.state for r in listed}
    if production == [v1]:  # the approval won: v1 promoted, then the new request for v2 pending
        assert states == {str(v1): gv.PROMOTION_REQUEST_STATE_APPROVED, str(v2): gv.PROMOTION_REQUEST_STATE_PENDING}
    else:  # the competing request won: the request for v1 was superseded and its approval refused
        assert production == [] and outcomes["approve"] == grpc.StatusCode.NOT_FOUND
        assert states == {str(v1): gv.PROMOTION_REQUEST_STATE_SUPERSEDED, str(v2): gv.PROMOTION_REQUEST_STATE_PENDING}
    history = e.reg.ListStageTransitions(rs.ListStageTransitionsRequest(parent="models/race"), metadata=e.md)
    assert len(history.transitions) == len(production)


def test_a_protected_alias_under_an_approvals_gate_moves_only_once_approved(team):
    e, tok, _ = team
    v1 = e.register("champ", {"auc": 0.9}, b"w1")
    v2 = e.register("champ", {"auc": 0.91}, b"w2")
    rita, ravi = e.as_(tok["rita"]), e.as_(tok["ravi"])

    def set_alias(env: Env, version: int):
        req = gs.SetAliasRequest(model="models/champ", alias="champion", version=version, reason="best", protected=True)
        return env.gov.SetAlias(req, metadata=env.md, timeout=30)

    set_alias(rita, v1)
    rita.gate("champ", check(T.GATE_CHECK_TYPE_APPROVALS, value=1), target="champion")
    pending = set_alias(rita, v2)
    assert pending.sequence == 0 and pending.alias.version == v1
    assert pending.promotion_request.target == "champion" and pending.promotion_request.requester == "rita"
    req = gs.ApprovePromotionRequest(model_version=f"models/champ/versions/{v2}", target="champion", reason="ok")
    assert failed(lambda: rita.gov.ApprovePromotion(req, metadata=rita.md)).code() == grpc.StatusCode.PERMISSION_DENIED
    done = ravi.gov.ApprovePromotion(req, metadata=ravi.md, timeout=30)
    assert done.request.state == gv.PROMOTION_REQUEST_STATE_APPROVED and done.model_version.version == v2
    got = e.reg.GetModelVersion(rs.GetModelVersionRequest(name="models/champ/versions/champion"), metadata=e.md)
    assert got.model_version.version == v2
    history = e.gov.ListAliasHistory(gs.ListAliasHistoryRequest(model="models/champ", alias="champion"), metadata=e.md)
    assert history.changes[0].to_version == v2 and history.changes[0].actor == "ravi"
    assert "requested by rita, approved by ravi" in history.changes[0].reason
