"""Named aliases (`champion`) against a real registry: set, move, resolve in Get, Download and
List, ModelVersion.aliases, history, bad names, a refused delete of an aliased version, the
ALIAS_CHANGED event at a watcher, the CLI, protection by role with auth on, and the read
cache across two replicas."""

from __future__ import annotations

import json

import grpc
import pytest
from agent_helpers import wait_until
from auth_helpers import bearer

from modelreg import Client, errors
from modelreg.v1 import event_service_pb2 as es
from modelreg.v1 import event_service_pb2_grpc as es_grpc
from modelreg.v1 import governance_pb2 as gv
from modelreg.v1 import governance_service_pb2 as gs
from modelreg.v1 import governance_service_pb2_grpc as gs_grpc
from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import registry_service_pb2_grpc as rs_grpc


def three_versions(client: Client, model: str = "det") -> list:
    return [client.register(model, f"weights-{i}".encode(), filename="w.bin") for i in (1, 2, 3)]


def test_set_move_and_resolve_an_alias_in_get_list_and_download(client, tmp_path):
    v1, v2, _ = three_versions(client)
    resp = client.set_alias("det", "champion", v1.version, reason="first good one")
    assert resp.alias.name == "models/det/aliases/champion"
    assert (resp.alias.alias, resp.alias.version, resp.alias.protected) == ("champion", 1, False)
    assert resp.alias.updated_by == "tester" and resp.sequence > 0

    assert client.get_version("det@champion").version == 1
    assert client.get_version("det", "champion").version == 1
    assert client.get_version("det", "CHAMPION").version == 1  # case-insensitive, like stages
    assert list(client.get_version("det", 1).aliases) == ["champion"]
    client.set_alias("det", "challenger", v1.version)
    assert list(client.get_version("det", 1).aliases) == ["challenger", "champion"]

    moved = client.set_alias("det", "champion", v2.version, reason="beats v1 on the June set")
    assert moved.alias.version == 2 and moved.sequence > resp.sequence
    assert client.get_version("det@champion").version == 2
    assert list(client.get_version("det", 1).aliases) == ["challenger"]
    assert list(client.get_version("det", 2).aliases) == ["champion"]
    listed = {v.version: list(v.aliases) for v in client.list_versions("det")}
    assert listed == {3: [], 2: ["champion"], 1: ["challenger"]}

    path = client.download("det@champion", dest=tmp_path)
    assert path.read_bytes() == b"weights-2"
    assert path.name == v2.artifact.download_filename

    # The version name itself, as grpcurl or any stub sends it.
    stub = rs_grpc.RegistryServiceStub(client._channel)
    got = stub.GetModelVersion(rs.GetModelVersionRequest(name="models/det/versions/champion"), timeout=10)
    assert got.model_version.name == "models/det/versions/2"
    chunks = list(stub.DownloadArtifact(rs.DownloadArtifactRequest(name="models/det/versions/champion"), timeout=10))
    assert chunks[0].header.model_version == "models/det/versions/2"
    assert b"".join(c.chunk for c in chunks[1:]) == b"weights-2"

    # Setting it where it already points changes nothing: no event, no history row.
    again = client.set_alias("det", "champion", v2.version, reason="again")
    assert again.sequence == 0 and again.alias.version == 2

    assert [(a.alias, a.version) for a in client.list_aliases("det")] == [("challenger", 1), ("champion", 2)]
    history = list(client.alias_history("det", "champion"))
    assert [(h.from_version, h.to_version, h.reason, h.actor) for h in history] == [
        (1, 2, "beats v1 on the June set", "tester"),
        (0, 1, "first good one", "tester"),
    ]
    assert history[0].sequence == moved.sequence and history[0].create_time.seconds > 0
    assert [h.alias for h in client.alias_history("det")] == ["champion", "challenger", "champion"]
    page = list(client.alias_history("det", page_size=1))  # pages through every row
    assert len(page) == 3

    # A promotion may name its version by alias too.
    assert client.promote("det", "champion", "staging", reason="on to staging").model_version.version == 2

    assert client.delete_alias("det", "champion", reason="retired") == 2
    with pytest.raises(errors.NotFound, match="has no alias 'champion'"):
        client.get_version("det@champion")
    assert [(h.from_version, h.to_version) for h in client.alias_history("det", "champion")][0] == (2, 0)
    with pytest.raises(errors.NotFound, match="has no alias 'champion'"):
        client.delete_alias("det", "champion")


@pytest.mark.parametrize(
    ("alias", "message"),
    [
        ("production", "modelreg promote"),
        ("staging", "reserved"),
        ("latest", "reserved"),
        ("none", "reserved"),
        ("archived", "reserved"),
        ("v3", "looks like a version number"),
        ("3", "starting with a letter"),
        ("eu prod", "letters, digits"),
        ("-x", "starting with a letter"),
        ("a" * 64, "1 to 63"),
        ("", "'alias' is required"),
    ],
)
def test_bad_alias_names_are_invalid_argument(client, alias, message):
    client.register("bad", b"w")
    with pytest.raises(errors.InvalidArgument, match=message):
        client.set_alias("bad", alias, 1)


def test_bad_targets_and_unknown_names(client):
    client.register("tgt", b"w")
    with pytest.raises(errors.InvalidArgument, match="version number"):
        client.set_alias("tgt", "champion", 0)
    with pytest.raises(errors.NotFound, match="versions/9"):
        client.set_alias("tgt", "champion", 9)
    with pytest.raises(errors.NotFound, match="models/ghost"):
        client.set_alias("ghost", "champion", 1)
    with pytest.raises(errors.NotFound, match="modelreg alias list tgt"):
        client.get_version("tgt", "champion")
    with pytest.raises(errors.InvalidArgument, match="alias name"):
        client.get_version("tgt", "eu prod")
    with pytest.raises(errors.InvalidArgument, match="leave out the version"):
        client.get_version("tgt@champion", 1)
    assert client.list_aliases("tgt") == []


def test_an_aliased_version_cannot_be_deleted_until_the_alias_moves(client):
    v1, v2, _ = three_versions(client, "del")
    client.set_alias("del", "champion", v1.version)
    client.set_alias("del", "eu-prod", v1.version)
    with pytest.raises(errors.FailedPrecondition) as info:
        client.delete_version("del", v1.version)
    assert "'champion'" in info.value.message and "'eu-prod'" in info.value.message
    assert "modelreg alias set del champion" in info.value.message
    assert client.get_version("del", 1).version == 1  # still there

    client.set_alias("del", "champion", v2.version)
    client.delete_alias("del", "eu-prod")
    client.delete_version("del", v1.version)
    with pytest.raises(errors.NotFound):
        client.get_version("del", 1)
    # A model with aliases is deleted with them.
    assert client.delete_model("del") == 2
    client.register("del", b"again")
    assert client.list_aliases("del") == [] and list(client.alias_history("del")) == []


def test_alias_changed_event_carries_the_target_artifact(client, registry):
    v1, v2, _ = three_versions(client, "ev")
    with grpc.insecure_channel(registry.address) as ch:
        call = es_grpc.EventServiceStub(ch).WatchEvents(
            es.WatchEventsRequest(models=["models/ev"], types=[es.EVENT_TYPE_ALIAS_CHANGED]), timeout=30
        )
        assert next(call).WhichOneof("payload") == "snapshot"
        client.set_alias("ev", "champion", v1.version, reason="first")
        client.set_alias("ev", "champion", v2.version, reason="better")
        client.delete_alias("ev", "champion", reason="done")
        events = []
        for msg in call:
            if msg.WhichOneof("payload") == "event":
                events.append(msg.event)
            if len(events) == 3:
                break
        call.cancel()
    created, moved, deleted = events
    assert all(e.type == es.EVENT_TYPE_ALIAS_CHANGED and e.model == "models/ev" for e in events)
    assert (created.model_version, created.reason, created.actor) == ("models/ev/versions/1", "first", "tester")
    assert dict(created.details)["alias"] == "champion"
    assert (moved.details["from_version"], moved.details["to_version"]) == (1, 2)
    artifact = moved.details["artifact"]
    assert artifact["version"] == 2 and artifact["sha256"] == v2.artifact.sha256
    assert artifact["size_bytes"] == v2.artifact.size_bytes and artifact["filename"] == v2.artifact.download_filename
    assert (deleted.details["from_version"], deleted.details["to_version"]) == (2, 0)
    assert deleted.model_version == "" and "artifact" not in deleted.details
    assert created.sequence < moved.sequence < deleted.sequence


def test_cli_alias_commands_and_model_at_alias(client, cli, tmp_path):
    three_versions(client, "cl")
    out = json.loads(cli("alias", "set", "cl", "champion", "2", "--reason", "best", "-o", "json").stdout)
    assert out["alias"]["alias"] == "champion" and out["alias"]["version"] == "2"
    assert "cl@champion -> v3" in cli("alias", "set", "cl", "champion", "3").stdout
    listed = json.loads(cli("alias", "list", "cl", "-o", "json").stdout)
    assert [(a["alias"], a["version"]) for a in listed["aliases"]] == [("champion", "3")]
    assert "champion" in cli("alias", "list", "cl").stdout

    got = json.loads(cli("get", "cl@champion", "-o", "json").stdout)
    assert got["name"] == "models/cl/versions/3" and got["aliases"] == ["champion"]
    assert "aliases      champion" in cli("get", "cl", "champion").stdout
    dl = json.loads(cli("download", "cl@champion", "--dest", str(tmp_path), "-o", "json").stdout)
    assert dl["modelVersion"] == "models/cl/versions/3"
    assert (tmp_path / dl["path"].rsplit("/", 1)[1]).read_bytes() == b"weights-3"

    hist = json.loads(cli("alias", "history", "cl", "champion", "-o", "json").stdout)
    assert [(c.get("fromVersion", "0"), c["toVersion"]) for c in hist["changes"]] == [("2", "3"), ("0", "2")]

    bad = cli("alias", "set", "cl", "production", "1", check=False)
    assert bad.returncode == 1 and "modelreg promote" in bad.stderr and "INVALID_ARGUMENT" in bad.stderr
    usage = cli("alias", "set", "cl", "champion", "two", check=False)
    assert usage.returncode == 2 and "VERSION must be a version number" in usage.stderr
    promoted = json.loads(cli("promote", "cl@champion", "staging", "--reason", "r", "-o", "json").stdout)
    assert promoted["modelVersion"]["name"] == "models/cl/versions/3"
    assert promoted["modelVersion"]["stage"] == "STAGE_STAGING"
    no_stage = cli("promote", "cl", "3", check=False)
    assert no_stage.returncode == 2 and "give the stage" in no_stage.stderr
    deleted = json.loads(cli("alias", "delete", "cl", "champion", "-o", "json").stdout)
    lines = cli("events", "cl", "--type", "alias_changed").stdout.splitlines()
    assert [line.split("  ")[3] for line in lines] == [
        "models/cl@champion - -> v2",
        "models/cl@champion v2 -> v3",
        "models/cl@champion v3 -> -",
    ]
    assert deleted == {"alias": "champion", "version": "3"}
    missing = cli("alias", "delete", "cl", "champion", check=False)
    assert missing.returncode == 1 and "NOT_FOUND" in missing.stderr


def test_the_read_cache_of_another_replica_follows_a_move(make_registry):
    a, b = make_registry(), make_registry()
    with Client(a.address, actor="a") as ca, Client(b.address, actor="b") as cb:
        three_versions(ca, "rep")
        ca.set_alias("rep", "champion", 1)
        assert cb.get_version("rep@champion").version == 1  # B reads and caches it
        assert cb.get_version("rep@champion").version == 1
        ca.set_alias("rep", "champion", 2)
        wait_until(lambda: cb.get_version("rep@champion").version == 2, 10, what="replica B sees the move")
        assert list(cb.get_version("rep", 1).aliases) == []
        ca.delete_alias("rep", "champion")
        wait_until(lambda: not list(cb.get_version("rep", 2).aliases), 10, what="replica B sees the delete")


# ---------------------------------------------------------------- protection, auth on


def test_protected_aliases_need_the_releaser_role(secure_registry):
    sr = secure_registry
    trainer = sr.principal("tina", ("trainer", "default"))
    releaser = sr.principal("rita", ("releaser", "default"))
    viewer = sr.principal("vic", ("viewer", "default"))
    gov = gs_grpc.GovernanceServiceStub(sr.channel)
    reg = rs_grpc.RegistryServiceStub(sr.channel)

    def register(token: str, data: bytes) -> None:
        header = rs.RegisterModelVersionHeader(parent="models/prot", create_model=True, filename="w.bin")
        reg.RegisterModelVersion(
            iter([rs.RegisterModelVersionRequest(header=header), rs.RegisterModelVersionRequest(chunk=data)]),
            metadata=bearer(token),
            timeout=10,
        )

    def set_alias(token: str, version: int, protected: bool | None = None, alias: str = "champion"):
        req = gs.SetAliasRequest(model="models/prot", alias=alias, version=version, reason="r")
        if protected is not None:
            req.protected = protected
        return gov.SetAlias(req, metadata=bearer(token), timeout=10)

    def refused(call) -> str:
        with pytest.raises(grpc.RpcError) as info:
            call()
        assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED, info.value.details()
        return info.value.details()

    for i in (1, 2, 3):
        register(trainer, f"w{i}".encode())

    # A trainer sets and moves an unprotected alias; a viewer may not.
    assert set_alias(trainer, 1).alias.updated_by == "tina"
    assert set_alias(trainer, 2).alias.version == 2
    assert "aliases.set" in refused(lambda: set_alias(viewer, 3))

    # Protecting needs the releaser; then the trainer can neither move, unprotect nor delete it.
    assert "protected" in refused(lambda: set_alias(trainer, 2, protected=True))
    assert set_alias(releaser, 2, protected=True).alias.protected
    message = refused(lambda: set_alias(trainer, 3))
    assert "'champion'" in message and "protected" in message and "versions.promote" in message and "tina" in message
    refused(lambda: set_alias(trainer, 2, protected=False))
    delete = gs.DeleteAliasRequest(model="models/prot", alias="champion")
    refused(lambda: gov.DeleteAlias(delete, metadata=bearer(trainer), timeout=10))

    # The releaser moves it (keeping the protection), and the history names who did what.
    moved = set_alias(releaser, 3)
    assert (moved.alias.version, moved.alias.protected, moved.alias.updated_by) == (3, True, "rita")
    hist = gov.ListAliasHistory(gs.ListAliasHistoryRequest(model="models/prot"), metadata=bearer(viewer), timeout=10)
    assert [(c.actor, c.from_version, c.to_version) for c in hist.changes] == [
        ("rita", 2, 3),
        ("rita", 2, 2),
        ("tina", 1, 2),
        ("tina", 0, 1),
    ]
    got = reg.GetModelVersion(
        rs.GetModelVersionRequest(name="models/prot/versions/champion"), metadata=bearer(viewer), timeout=10
    )
    assert got.model_version.version == 3 and list(got.model_version.aliases) == ["champion"]
    assert gov.DeleteAlias(delete, metadata=bearer(releaser), timeout=10).version == 3


def test_a_protected_alias_moves_only_past_its_gate_policy(client, registry):
    low = client.register("gated", b"low", metrics={"map50": 0.52})
    high = client.register("gated", b"high", metrics={"map50": 0.71})
    client.set_alias("gated", "champion", high.version, protected=True)
    client.set_alias("gated", "scratch", high.version)  # unprotected: no gate applies
    gov = gs_grpc.GovernanceServiceStub(client._channel)
    policy = gv.GatePolicy(
        target="champion", checks=[gv.GateCheck(type=gv.GATE_CHECK_TYPE_MAX_DROP, metric="map50", value=0.02)]
    )
    gov.SetGatePolicy(gs.SetGatePolicyRequest(model="models/gated", policy=policy), timeout=10)

    with pytest.raises(errors.FailedPrecondition) as info:
        client.set_alias("gated", "champion", low.version, reason="cheaper")
    message = info.value.message
    assert "models/gated/versions/1 cannot become alias champion" in message
    assert "map50" in message and "0.02" in message
    assert client.get_version("gated@champion").version == high.version  # not moved
    assert [h.to_version for h in client.alias_history("gated", "champion")] == [high.version]

    assert client.set_alias("gated", "scratch", low.version).alias.version == low.version
    # Unprotected, the policy no longer guards it.
    client.set_alias("gated", "champion", high.version, protected=False)
    assert client.set_alias("gated", "champion", low.version).alias.version == low.version


def test_concurrent_moves_leave_one_consistent_history(client):
    """Moves of one alias serialize on the model's row lock: the history is a chain (each
    move starts where the one before ended) and ends where the alias points."""
    import random
    from concurrent.futures import ThreadPoolExecutor

    for i in range(4):
        client.register("race", f"w{i}".encode())
    client.set_alias("race", "champion", 1)
    rng = random.Random(12)
    targets = [rng.randint(1, 4) for _ in range(24)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: client.set_alias("race", "champion", n, reason=f"to {n}"), targets))
    chain = list(reversed(list(client.alias_history("race", "champion"))))
    assert chain[0].from_version == 0
    for before, after in zip(chain, chain[1:], strict=False):
        assert after.from_version == before.to_version and after.from_version != after.to_version
        assert after.sequence > before.sequence
    assert chain[-1].to_version == client.get_version("race@champion").version


def test_alias_rules_as_pure_functions():
    from registry_server.domain import aliases as da
    from registry_server.domain.access import Permission
    from registry_server.errors import NotFound

    assert da.normalize_alias(" Champion ") == "champion"
    assert da.is_alias("eu-prod_2") and not da.is_alias("v12") and not da.is_alias("staging")
    protected = da.Alias("m", "champion", 3, protected=True)
    plain = da.Alias("m", "scratch", 3)
    # Anything that touches a protected alias, or makes one, needs the releaser's permission.
    assert da.required_permission(None, False) is Permission.SET_ALIAS
    assert da.required_permission(plain, False) is Permission.SET_ALIAS
    assert da.required_permission(plain, True) is Permission.PROMOTE
    assert da.required_permission(protected, False) is Permission.PROMOTE
    # A set that changes nothing is not a change; protecting in place is, without a move.
    same = da.plan_set("m", "scratch", 3, plain, None, "", "a", None)
    assert not same.changed and not same.moves
    guard = da.plan_set("m", "scratch", 3, plain, True, "", "a", None)
    assert guard.changed and not guard.moves and guard.event().details["protected"] is True
    move = da.plan_set("m", "champion", 4, protected, None, "r", "a", {"version": 4})
    assert move.moves and move.after is not None and move.after.protected  # None keeps the protection
    assert move.event().version == 4 and move.event().details["artifact"] == {"version": 4}
    gone = da.plan_delete("m", "champion", protected, "bye")
    assert gone.event().version == 0 and gone.event().details["to_version"] == 0
    with pytest.raises(NotFound, match="has no alias 'ghost'"):
        da.plan_delete("m", "ghost", None, "")
