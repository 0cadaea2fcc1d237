"""Quality gates and approvals as a user drives them: the real `modelreg` console script
(gates set/get/clear/check, promote, requests list, approve, reject) and the SDK, against a
real registry, with auth on where identity matters (four eyes). The README's CI step runs
as written."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli
from onnx_helpers import onnx_bytes

from modelreg import errors

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

REGRESSION = "map50 0.571 is below production v1's 0.612 by 0.041; the policy allows a drop of at most 0.02"


class Cli:
    """The real `modelreg` script against one registry, as a given token (or none)."""

    def __init__(self, address: str, tmp_path: Path, token: str = ""):
        self.address, self.tmp_path, self.token = address, tmp_path, token

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        env = {"MODELREG_TOKEN": self.token, "MODELREG_TOKEN_FILE": ""}
        return run_cli(*args, address=self.address, check=check, env=env)

    def json(self, *args: str, check: bool = True) -> dict:
        return json.loads(self(*args, "-o", "json", check=check).stdout)

    def as_(self, token: str) -> Cli:
        return Cli(self.address, self.tmp_path, token)

    def register(self, model: str, metrics: dict[str, float]) -> int:
        weights = self.tmp_path / f"w-{os.urandom(4).hex()}.onnx"
        weights.write_bytes(onnx_bytes(2000))
        created = self.json("register", model, str(weights), "--metrics", json.dumps(metrics))
        return int(created["modelVersion"]["version"])


@pytest.fixture
def mr(registry, tmp_path) -> Cli:
    return Cli(registry.address, tmp_path)


@pytest.fixture
def detector(mr) -> Cli:
    """`det` with v1 (map50 0.612, latency 12 ms) in production and v2, a regression."""
    assert mr.register("det", {"map50": 0.612, "latency_ms": 12.0}) == 1
    mr("promote", "det", "1", "production")
    assert mr.register("det", {"map50": 0.571, "latency_ms": 14.2}) == 2
    return mr


# ---------------------------------------------------------------------- policies


def test_gates_set_get_clear_round_trip_with_json(detector):
    mr = detector
    policy = mr.json(
        "gates",
        "set",
        "det",
        "--stage",
        "production",
        "--min",
        "map50=0.5",
        "--max-drop",
        "map50=0.02",
        "--max",
        "latency_ms=13",
        "--max-rise",
        "latency_ms=5",
        "--require-card",
        "--rollback-skips-metrics",
        "false",
    )["policy"]
    assert policy["name"] == "models/det/gates/production" and policy["target"] == "production"
    assert policy["checks"] == [
        {"type": "GATE_CHECK_TYPE_MIN", "metric": "map50", "value": 0.5},
        {"type": "GATE_CHECK_TYPE_MAX", "metric": "latency_ms", "value": 13.0},
        {"type": "GATE_CHECK_TYPE_MAX_DROP", "metric": "map50", "value": 0.02},
        {"type": "GATE_CHECK_TYPE_MAX_RISE", "metric": "latency_ms", "value": 5.0},
        {"type": "GATE_CHECK_TYPE_REQUIRE_CARD", "metric": "", "value": 0.0},
    ]
    assert policy["rollbackSkipsMetrics"] is False and policy["updatedBy"] == "cli-user"
    assert mr.json("gates", "set", "det", "--stage", "staging", "--min", "map50=0.3")["policy"]["target"] == "staging"

    assert mr.json("gates", "get", "det")["policies"] == [
        mr.json("gates", "get", "det", "--stage", "production")["policies"][0],
        mr.json("gates", "get", "det", "--stage", "staging")["policies"][0],
    ]
    assert mr.json("gates", "get", "det", "--stage", "production")["policies"] == [policy]
    table = mr("gates", "get", "det").stdout
    assert "min map50=0.5, max latency_ms=13, max-drop map50=0.02, max-rise latency_ms=5, require-card" in table
    assert "staging" in table and "min map50=0.3" in table

    # Replacing a policy keeps only the new checks.
    replaced = mr.json("gates", "set", "det", "--stage", "staging", "--max-drop", "map50=0.1")["policy"]
    assert [c["type"] for c in replaced["checks"]] == ["GATE_CHECK_TYPE_MAX_DROP"]
    assert replaced["rollbackSkipsMetrics"] is True  # the default

    assert mr.json("gates", "clear", "det", "--stage", "staging") == {"removed": True}
    assert mr.json("gates", "clear", "det", "--stage", "staging") == {"removed": False}
    assert mr.json("gates", "get", "det", "--stage", "staging") == {"policies": []}
    assert "has no gate policy for staging" in mr("gates", "get", "det", "--stage", "staging").stdout
    assert [p["target"] for p in mr.json("gates", "get", "det")["policies"]] == ["production"]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--min", "map50"), "--min 'map50' must look like METRIC=NUMBER"),
        (("--max-drop", "map50=two"), "'two' is not a number"),
        ((), "give at least one check"),
        (("--approvals", "-1"), "--approvals N counts approvals"),
        (("--min", "m=1", "--rollback-skips-metrics", "maybe"), "invalid choice: 'maybe'"),
    ],
)
def test_gates_set_bad_usage_exits_2_saying_what_to_change(mr, args, says):
    proc = mr("gates", "set", "det", "--stage", "production", *args, check=False)
    assert proc.returncode == 2 and says in proc.stderr


def test_server_refusals_exit_1_with_its_message(detector):
    mr = detector
    # Approvals mean nothing with auth off.
    proc = mr("gates", "set", "det", "--stage", "production", "--approvals", "1", check=False)
    assert proc.returncode == 1 and "needs auth on" in proc.stderr and "FAILED_PRECONDITION" in proc.stderr
    proc = mr("gates", "set", "det", "--stage", "latest", "--min", "m=1", check=False)
    assert proc.returncode == 1 and "'latest' cannot be gated" in proc.stderr
    proc = mr("gates", "get", "nope", check=False)
    assert proc.returncode == 1 and "NOT_FOUND" in proc.stderr


# ---------------------------------------------------------------------- check (CI)


def test_gates_check_prints_every_check_and_exits_1_on_a_failure(detector):
    mr = detector
    mr("gates", "set", "det", "--stage", "production", "--min", "map50=0.5", "--max-drop", "map50=0.02")

    failed = mr("gates", "check", "det", "2", check=False)
    assert failed.returncode == 1
    lines = failed.stdout.splitlines()
    assert lines[0].split() == ["CHECK", "SUBJECT", "REQUIRED", "ACTUAL", "RESULT"]
    assert lines[1].split() == ["min", "map50", ">=", "0.5", "0.571", "pass"]
    assert lines[2].split() == ["max-drop", "map50", "drop", "<=", "0.02", "from", "v1", "0.571", "FAIL"]
    assert "models/det/versions/2 FAILED the production gate (1 of 2 checks):" in failed.stdout
    assert f"  - {REGRESSION}" in failed.stdout

    as_json = mr.json("gates", "check", "det", "2", check=False)["evaluation"]
    assert as_json["passed"] is False and as_json["modelVersion"] == "models/det/versions/2"
    assert as_json["target"] == "production"
    assert as_json["checks"][1] == {
        "type": "max-drop",
        "subject": "map50",
        "passed": False,
        "required": "drop <= 0.02 from v1",
        "actual": "0.571",
        "description": REGRESSION,
    }

    assert mr.register("det", {"map50": 0.62}) == 3
    passed = mr("gates", "check", "det", "3")
    assert "models/det/versions/3 PASSED the production gate (2 checks)" in passed.stdout
    assert mr.json("gates", "check", "det", "latest")["evaluation"]["passed"] is True
    # No policy for staging: nothing to check, which passes.
    assert "no gate policy for staging" in mr("gates", "check", "det", "2", "--stage", "staging").stdout
    assert mr.json("gates", "check", "det", "2", "--stage", "staging")["evaluation"]["checks"] == []


def readme_block(marker: str) -> str:
    """The ```bash block right after `<!-- MARKER -->` in the README."""
    text = (REPO / "README.md").read_text()
    found = re.search(rf"^<!-- {re.escape(marker)} -->\n```bash\n(.*?)^```$", text, re.MULTILINE | re.DOTALL)
    assert found, f"README has no ```bash block after <!-- {marker} -->"
    return found.group(1)


def test_the_readme_ci_step_fails_the_build_on_a_regression(registry, mr, tmp_path):
    """A pipeline step as the README writes it: register the candidate, `modelreg gates check`
    it; a regression fails the step (exit 1), a good model passes."""
    step = readme_block("ci-step: gates check")
    mr.register("detector", {"map50": 0.612})
    mr("promote", "detector", "1", "production")
    mr("gates", "set", "detector", "--stage", "production", "--max-drop", "map50=0.02", "--min", "map50=0.5")

    def run_step(metrics: dict) -> subprocess.CompletedProcess:
        work = tmp_path / f"ci-{os.urandom(3).hex()}"
        weights = work / "runs/detect/train/weights/best.onnx"
        weights.parent.mkdir(parents=True)
        weights.write_bytes(onnx_bytes(5000))
        (work / "metrics.json").write_text(json.dumps(metrics))
        env = {**os.environ, "MODELREG_ADDRESS": registry.address, "PATH": f"{BIN}:{os.environ['PATH']}"}
        env["GIT_SHA"] = "0123abcd"
        return subprocess.run(
            ["bash", "-c", step], cwd=work, env=env, capture_output=True, text=True, timeout=120, check=False
        )

    regressed = run_step({"map50": 0.571})
    assert regressed.returncode == 1, regressed.stderr
    assert "FAIL" in regressed.stdout and REGRESSION in regressed.stdout
    good = run_step({"map50": 0.63})
    assert good.returncode == 0, good.stdout + good.stderr
    assert "models/detector/versions/3 PASSED the production gate" in good.stdout
    assert mr.json("get", "detector", "3")["lineage"]["codeRevision"] == "0123abcd"


# ---------------------------------------------------------------------- promote


def test_a_promote_the_gate_refuses_exits_1_listing_every_failing_check(detector, client):
    mr = detector
    mr("gates", "set", "det", "--stage", "production", "--max-drop", "map50=0.02", "--max", "latency_ms=13")
    proc = mr("promote", "det", "2", "production", check=False)
    assert proc.returncode == 1 and proc.stdout == ""
    assert "FAILED_PRECONDITION" in proc.stderr
    assert REGRESSION in proc.stderr and "latency_ms 14.2 is above the maximum 13" in proc.stderr
    assert "modelreg gates check det 2 --stage production" in proc.stderr
    assert mr.json("get", "det", "production")["version"] == "1"  # nothing moved

    # The SDK's error carries the PreconditionFailure detail: one violation per failing check.
    with pytest.raises(errors.FailedPrecondition) as info:
        client.promote("det", 2, "production")
    assert info.value.violations == [  # in policy order: max before max-drop
        ("max", "latency_ms", "latency_ms 14.2 is above the maximum 13"),
        ("max-drop", "map50", REGRESSION),
    ]
    assert info.value.violations[1].subject == "map50" and info.value.reason == "GATE_FAILED"


def test_sdk_gate_methods(detector, client):
    policy = client.set_gate_policy("det", "production", min={"map50": 0.5}, max_drop={"map50": 0.02})
    assert [(c.metric, c.value) for c in policy.checks] == [("map50", 0.5), ("map50", 0.02)]
    assert [p.target for p in client.get_gate_policies("det")] == ["production"]
    assert client.get_gate_policies("det", "staging") == []
    ev = client.check_gates("det", 2)
    assert not ev.passed and [r.passed for r in ev.checks] == [True, False]
    assert client.check_gates("det", 2, "staging").passed
    assert list(client.list_promotion_requests("det")) == []
    with pytest.raises(errors.InvalidArgument, match="unknown request state 'open'"):
        list(client.list_promotion_requests("det", "open"))
    assert client.clear_gate_policy("det", "production") is True
    assert client.clear_gate_policy("det", "production") is False
    resp = client.promote("det", 2, "production")
    assert not resp.HasField("promotion_request") and resp.archived_version.version == 1


# ---------------------------------------------------------------------- four eyes (auth on)


@pytest.fixture
def team(secure_registry, tmp_path):
    """An auth-on registry with a trainer `ci` and releasers `rita` and `ravi`; `fraud` v1 in
    production and v2 registered; a production gate needing one approval and auc >= 0.8."""
    sr = secure_registry
    tokens = {"ci": sr.principal("ci", ("trainer", "default"))}
    tokens |= {name: sr.principal(name, ("releaser", "default")) for name in ("rita", "ravi")}
    ci = Cli(sr.address, tmp_path, tokens["ci"])
    rita, ravi = ci.as_(tokens["rita"]), ci.as_(tokens["ravi"])
    assert ci.register("fraud", {"auc": 0.9}) == 1
    rita("promote", "fraud", "1", "production")
    assert ci.register("fraud", {"auc": 0.91}) == 2
    rita("gates", "set", "fraud", "--stage", "production", "--approvals", "1", "--min", "auc=0.8")
    return ci, rita, ravi


def test_four_eyes_promote_prints_the_request_and_another_releaser_approves(team):
    ci, rita, ravi = team
    asked = rita("promote", "fraud", "2", "production", "--reason", "better auc")
    assert asked.returncode == 0
    assert "models/fraud/versions/2 is not in production yet: the production gate needs 1 approval" in asked.stdout
    assert "waiting for 1 more approval from a releaser or project-admin other than rita" in asked.stdout
    command = re.search(r"^  (modelreg approve .*)$", asked.stdout, re.MULTILINE).group(1)
    assert command == "modelreg approve fraud 2 --stage production"
    assert 'modelreg reject fraud 2 --stage production --reason "..."' in asked.stdout
    assert ci.json("get", "fraud", "production")["version"] == "1"

    pending = ci.json("requests", "list", "fraud", "--state", "pending")["requests"]
    assert len(pending) == 1
    req = pending[0]
    assert (req["modelVersion"], req["target"], req["state"]) == (
        "models/fraud/versions/2",
        "production",
        "PROMOTION_REQUEST_STATE_PENDING",
    )
    assert (req["requester"], req["reason"], req["requiredApprovals"], req["approvals"]) == (
        "rita",
        "better auc",
        1,
        [],
    )
    assert ci.json("requests", "list", "--state", "approved") == {"requests": []}
    table = ci("requests", "list").stdout
    assert re.search(r"fraud\s+2\s+production\s+pending\s+rita\s+0/1", table), table
    assert ci.json("gates", "check", "fraud", "2", check=False)["evaluation"]["passed"] is False

    mine = rita(*command.split()[1:], check=False)  # the requester never approves its own request
    assert mine.returncode == 1 and "four eyes" in mine.stderr and "PERMISSION_DENIED" in mine.stderr
    trainer = ci(*command.split()[1:], check=False)
    assert trainer.returncode == 1 and "promotions.approve" in trainer.stderr

    approved = ravi(*command.split()[1:], "--reason", "checked the eval")
    assert "approved: models/fraud/versions/2 is now in production (approved by ravi)" in approved.stdout
    assert ci.json("get", "fraud", "production")["version"] == "2"
    done = ci.json("requests", "list", "fraud")["requests"][0]
    assert done["state"] == "PROMOTION_REQUEST_STATE_APPROVED"
    assert [(a["principal"], a["approved"], a["reason"]) for a in done["approvals"]] == [
        ("ravi", True, "checked the eval")
    ]
    assert "requested by rita, approved by ravi" in ci.json("history", "fraud")["transitions"][0]["reason"]


def test_a_request_is_rejected_with_a_reason_and_json_shows_each_step(team):
    ci, rita, ravi = team
    asked = rita.json("promote", "fraud", "2", "production")
    assert asked["promotionRequest"]["state"] == "PROMOTION_REQUEST_STATE_PENDING"
    assert asked["modelVersion"]["name"] == "models/fraud/versions/2" and "sequence" not in asked

    no_reason = ravi("reject", "fraud", "2", "--stage", "production", check=False)
    assert no_reason.returncode == 2 and "--reason" in no_reason.stderr
    blank = ravi("reject", "fraud", "2", "--stage", "production", "--reason", " ", check=False)
    assert blank.returncode == 2 and "--reason must say why" in blank.stderr
    no_stage = ravi("approve", "fraud", "2", check=False)
    assert no_stage.returncode == 2 and "--stage" in no_stage.stderr

    rejected = ravi.json("reject", "fraud", "2", "--stage", "production", "--reason", "auc on the wrong split")
    assert rejected["request"]["state"] == "PROMOTION_REQUEST_STATE_REJECTED"
    assert rejected["request"]["approvals"][0]["approved"] is False
    assert [r["modelVersion"] for r in ci.json("requests", "list", "--state", "rejected")["requests"]] == [
        "models/fraud/versions/2"
    ]
    gone = ravi("approve", "fraud", "2", "--stage", "production", check=False)
    assert gone.returncode == 1 and "no pending promotion request" in gone.stderr
    assert ci.json("get", "fraud", "production")["version"] == "1"


def test_sdk_approve_and_reject_with_auth_on(team, secure_registry):
    from modelreg import Client

    ci, rita, ravi = team
    with (
        Client(secure_registry.address, token=rita.token) as as_rita,
        Client(secure_registry.address, token=ravi.token) as as_ravi,
    ):
        resp = as_rita.promote("fraud", 2, "production")
        assert resp.promotion_request.requester == "rita" and resp.sequence == 0
        with pytest.raises(errors.PermissionDenied, match="four eyes"):
            as_rita.approve("fraud", 2)
        [pending] = as_ravi.list_promotion_requests("fraud", "pending")
        assert pending.name == resp.promotion_request.name
        done = as_ravi.approve("fraud", 2, "production", reason="ok")
        assert done.model_version.version == 2 and done.request.state == 2  # APPROVED
        assert ci.register("fraud", {"auc": 0.95}) == 3
        as_rita.promote("fraud", 3, "production")
        closed = as_ravi.reject("fraud", 3, "production", "not this week")
        assert closed.request.state == 3  # REJECTED


def test_the_readme_grpcurl_examples_set_check_and_approve(team, secure_registry):
    """The README's grpcurl lines as written (the address replaced by the test's), as a
    releaser: SetGatePolicy and CheckGates on `detector`, ApprovePromotion of `fraud` v2."""
    from modelreg import Client

    ci, rita, ravi = team
    for map50 in (0.58, 0.6, 0.612, 0.571):
        ci.register("detector", {"map50": map50})
    rita("promote", "detector", "3", "production")
    rita("promote", "fraud", "2", "production")  # a request: the gate needs one approval
    block = readme_block("grpcurl: gates").replace("127.0.0.1:50051", secure_registry.address)
    env = {**os.environ, "MODELREG_TOKEN": ravi.token, "PATH": f"{BIN}:{os.environ['PATH']}"}
    proc = subprocess.run(["bash", "-ec", block], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert '"target": "production"' in proc.stdout and "GATE_CHECK_TYPE_MAX_DROP" in proc.stdout
    assert REGRESSION.replace("v1's", "v3's") in proc.stdout  # CheckGates: v4 regressed against v3
    assert "PROMOTION_REQUEST_STATE_APPROVED" in proc.stdout
    with Client(secure_registry.address, token=ravi.token) as c:
        assert c.get_version("fraud", "production").version == 2
        assert [p.target for p in c.get_gate_policies("detector")] == ["production"]
