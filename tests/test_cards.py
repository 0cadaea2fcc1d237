"""Model cards (issue 12) against a real server: write and read back, defaults from the
version, Markdown, the draft-on-edit rule, who may approve, the event at a watcher, and
bad input. The rules themselves are also pinned as a table over the pure domain function."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import grpc
import pytest
from conftest import run_cli
from onnx_helpers import onnx_bytes
from test_auth import client_for

from modelreg import errors
from modelreg.cards import card_markdown
from modelreg.v1 import event_service_pb2 as es
from modelreg.v1 import event_service_pb2_grpc as es_grpc
from modelreg.v1 import governance_pb2 as gov
from modelreg.v1 import governance_service_pb2 as gs
from modelreg.v1 import governance_service_pb2_grpc as gs_grpc
from modelreg.v1 import resources_pb2 as res
from registry_server.domain import cards as dc
from registry_server.domain.access import Permission
from registry_server.storage.cards import status_of

DRAFT, PENDING, APPROVED = (
    gov.MODEL_CARD_STATUS_DRAFT,
    gov.MODEL_CARD_STATUS_PENDING_REVIEW,
    gov.MODEL_CARD_STATUS_APPROVED,
)


def _register(c, model: str = "det", data: bytes | None = None, **kw):
    return c.register(model, data or onnx_bytes(), filename="m.onnx", **kw)


def _card_events(client, model: str) -> list[es.Event]:
    stub = es_grpc.EventServiceStub(client._channel)
    resp = stub.ListEvents(es.ListEventsRequest(page_size=1000), timeout=10)
    return [e for e in resp.events if e.type == es.EVENT_TYPE_MODEL_CARD_CHANGED and e.model == f"models/{model}"]


# ---------------------------------------------------------------- the rules, as a table


def _card(status: dc.CardStatus, **content) -> dc.ModelCard:
    return dc.ModelCard("det", 1, content=content, status=status)


U, A = Permission.UPDATE_VERSION, Permission.APPROVE
S = dc.CardStatus


@pytest.mark.parametrize(
    ("current", "edit", "status", "changed", "requirements", "why"),
    [
        (None, dc.CardEdit({"summary": "x"}), S.DRAFT, True, ((U,),), "a new card starts as a draft"),
        (
            None,
            dc.CardEdit({"summary": "x"}, S.APPROVED),
            S.APPROVED,
            True,
            ((U,), (A,)),
            "writing and approving at once needs both",
        ),
        (
            _card(S.APPROVED, summary="x"),
            dc.CardEdit({"summary": "y"}),
            S.DRAFT,
            True,
            ((U,),),
            "editing an approved card's content sets it back to draft",
        ),
        (
            _card(S.APPROVED, summary="x"),
            dc.CardEdit({"extra": {"license": "mit"}}),
            S.DRAFT,
            True,
            ((U,),),
            "extra is content too",
        ),
        (
            _card(S.APPROVED, summary="x"),
            dc.CardEdit({"summary": "y"}, S.APPROVED),
            S.APPROVED,
            True,
            ((U,), (A,)),
            "an edit that names approved is re-approved, by someone who may approve",
        ),
        (
            _card(S.APPROVED, summary="x"),
            dc.CardEdit({"summary": "x"}, S.APPROVED),
            S.APPROVED,
            False,
            ((U, A),),
            "rewriting the same content and status changes nothing",
        ),
        (
            _card(S.PENDING_REVIEW, summary="x"),
            dc.CardEdit({}, S.APPROVED),
            S.APPROVED,
            True,
            ((A,),),
            "approving alone needs only the approve permission (a releaser)",
        ),
        (
            _card(S.APPROVED, summary="x"),
            dc.CardEdit({}, S.DRAFT),
            S.DRAFT,
            True,
            ((U, A),),
            "sending a card back to draft needs either permission",
        ),
        (
            _card(S.PENDING_REVIEW, summary="x"),
            dc.CardEdit({"limitations": "night"}),
            S.PENDING_REVIEW,
            True,
            ((U,),),
            "editing a card under review keeps it under review",
        ),
    ],
)
def test_plan_update_rules(current, edit, status, changed, requirements, why):
    plan = dc.plan_update(current, edit)
    assert (plan.status, plan.changed, plan.requirements) == (status, changed, requirements), why


def test_an_empty_value_clears_a_field_and_defaults_fill_only_empty_ones():
    plan = dc.plan_update(_card(S.DRAFT, summary="x", limitations="y"), dc.CardEdit({"limitations": ""}))
    assert plan.content == {"summary": "x"} and plan.changed_fields == ("limitations",)
    from registry_server.domain.models import Lineage

    shown = dc.with_defaults(
        _card(S.DRAFT, evaluation="by hand"),
        Lineage(dataset_id="coco", dataset_hash="9f8e", parent_version=2, run_id="r-7", code_revision="3f2a"),
        {"map50": 0.6123456789},
    )
    assert shown.text("training_data") == (
        "Dataset coco (hash 9f8e); parent version 2; training run r-7; code revision 3f2a."
    )
    assert shown.text("evaluation") == "by hand"


# ---------------------------------------------------------------- through the server


def test_a_card_round_trips_and_shows_lineage_and_metrics_where_it_is_silent(client):
    _register(client, metrics={"map50": 0.612, "recall": 0.55}, dataset_id="coco-2017", dataset_hash="9f8e7d")
    _register(
        client,
        data=onnx_bytes(),
        metrics={"map50": 0.64},
        parent_version=1,
        run_id="run-42",
        code_revision="3f2a1c",
        dataset_id="coco-2017",
    )
    written = client.set_card(
        "det",
        2,
        summary="Finds people in CCTV frames.",
        intended_use="Counting people in shops.",
        limitations="Poor at night.",
        extra={"license": "apache-2.0", "languages": ["en"]},
    )
    assert written.name == "models/det/versions/2/card"
    assert written.status == DRAFT and written.updated_by == "tester"
    card = client.get_card("det", 2)
    assert card.summary == "Finds people in CCTV frames."
    assert card.intended_use == "Counting people in shops."
    assert card.limitations == "Poor at night."
    assert card.out_of_scope_use == ""
    assert card.training_data == "Dataset coco-2017; parent version 1; training run run-42; code revision 3f2a1c."
    assert card.evaluation == "map50=0.64"
    assert dict(card.extra) == {"license": "apache-2.0", "languages": ["en"]}
    # Written explicitly, they replace the defaults; cleared, the defaults come back.
    client.set_card("det", 2, training_data="COCO 2017 train, persons only.", evaluation="mAP50 0.64 on val.")
    card = client.get_card("det", 2)
    assert (card.training_data, card.evaluation) == ("COCO 2017 train, persons only.", "mAP50 0.64 on val.")
    card = client.set_card("det", 2, training_data="", evaluation="")
    assert card.training_data.startswith("Dataset coco-2017;") and card.evaluation == "map50=0.64"
    # Another version has its own card; one addressed by stage resolves to its number.
    client.set_card("det", 1, summary="The first one.")
    client.promote("det", 1, "production")
    assert client.get_card("det", "production").name == "models/det/versions/1/card"
    assert client.get_card("det", "production").evaluation == "map50=0.612, recall=0.55"
    assert client.get_card("det", "production").training_data == "Dataset coco-2017 (hash 9f8e7d)."


def test_a_version_without_a_card_is_not_found_saying_how_to_write_one(client, cli):
    _register(client)
    with pytest.raises(errors.NotFound) as nf:
        client.get_card("det", 1)
    assert "models/det/versions/1 has no model card" in nf.value.message
    assert "modelreg card set det 1 --summary" in nf.value.message
    with pytest.raises(errors.NotFound) as nf:
        client.get_card("det", 7)
    assert "models/det/versions/7" in nf.value.message
    with pytest.raises(errors.NotFound):
        client.set_card("nope", 1, summary="x")
    proc = cli("card", "get", "det", "1", check=False)
    assert proc.returncode == 1 and "has no model card" in proc.stderr


def test_editing_an_approved_card_sets_it_back_to_draft_unless_the_edit_names_a_status(client, registry):
    _register(client)

    def status() -> str | None:
        async def read():
            async with registry.running.pool.acquire() as conn:
                return await status_of(conn, "det", 1)

        return registry.call(read())

    assert status() is None
    client.set_card("det", 1, summary="v1", status="pending_review")
    assert status() == "pending_review"
    assert client.set_card("det", 1, status="approved").status == APPROVED
    assert status() == "approved"
    # Rewriting what is there changes nothing: still approved, no event.
    events = len(_card_events(client, "det"))
    assert client.set_card("det", 1, summary="v1").status == APPROVED
    assert len(_card_events(client, "det")) == events
    # An edit of the content falls back to draft.
    edited = client.set_card("det", 1, summary="v1, retrained on night footage")
    assert edited.status == DRAFT and status() == "draft"
    # An approver may edit and approve in one call.
    assert client.set_card("det", 1, limitations="rain", status="approved").status == APPROVED
    assert client.set_card("det", 1, extra={"owner": "vision-team"}).status == DRAFT
    got = [(e.details["status"], list(e.details["fields"])) for e in _card_events(client, "det")]
    assert got == [
        ("pending_review", ["summary", "status"]),
        ("approved", ["status"]),
        ("draft", ["summary", "status"]),
        ("approved", ["limitations", "status"]),
        ("draft", ["extra", "status"]),
    ]


def test_an_edited_approved_card_falls_back_to_draft_and_blocks_a_require_card_gate(client):
    _register(client)
    client.set_gate_policy("det", "production", require_card=True)
    with pytest.raises(errors.FailedPrecondition) as blocked:
        client.promote("det", 1, "production")
    assert "v1 has no model card; the policy requires an approved card" in blocked.value.message
    client.set_card("det", 1, summary="People counter.", status="approved")
    assert client.check_gates("det", 1).passed
    client.set_card("det", 1, limitations="Poor at night.")
    evaluation = client.check_gates("det", 1)
    assert not evaluation.passed
    assert [(c.type, c.passed, c.actual) for c in evaluation.checks] == [("require-card", False, "draft")]
    with pytest.raises(errors.FailedPrecondition) as blocked:
        client.promote("det", 1, "production")
    assert "v1 has a draft model card; the policy requires an approved card" in blocked.value.message
    client.set_card("det", 1, status="approved")
    assert client.promote("det", 1, "production").model_version.stage == res.STAGE_PRODUCTION


def test_a_gate_reading_the_status_holds_off_an_edit_until_its_transaction_ends(client, registry):
    """status_of share-locks the card: a promotion that checked `approved` commits before
    an edit can set the card back to draft, never after."""
    from conftest import open_asyncpg

    _register(client)
    client.set_card("det", 1, summary="v1", status="approved")

    async def scenario() -> tuple[str | None, bool, int]:
        conn = await open_asyncpg(registry.database_url)
        try:
            tr = conn.transaction()
            await tr.start()
            seen = await status_of(conn, "det", 1)
            edit = asyncio.create_task(asyncio.to_thread(client.set_card, "det", 1, summary="v2"))
            await asyncio.sleep(0.5)
            waited = not edit.done()
            await tr.commit()
            edited = await asyncio.wait_for(edit, 20)
            return seen, waited, edited.status
        finally:
            await conn.close()

    seen, waited, after = asyncio.run(scenario())
    assert seen == "approved"
    assert waited, "the edit went through while a transaction held the card's status"
    assert after == DRAFT


def test_concurrent_writers_of_a_new_card_all_land(client):
    _register(client)
    fields = ["summary", "intended_use", "out_of_scope_use", "limitations", "ethical_considerations"]
    start = threading.Barrier(len(fields))
    failures: list[BaseException] = []

    def write(field: str) -> None:
        start.wait()
        try:
            client.set_card("det", 1, **{field: f"{field} text"})
        except BaseException as e:  # noqa: BLE001 - reported below
            failures.append(e)

    threads = [threading.Thread(target=write, args=(f,)) for f in fields]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not failures
    card = client.get_card("det", 1)
    assert [getattr(card, f) for f in fields] == [f"{f} text" for f in fields]
    assert len(_card_events(client, "det")) == len(fields)


def test_a_trainer_cannot_approve_a_card_but_a_releaser_can(secure_registry):
    sr = secure_registry
    sr.project("vision")
    trainer = sr.principal("ci", ("trainer", "vision"), service_account=True)
    releaser = sr.principal("rita", ("releaser", "vision"))
    viewer = sr.principal("ann", ("viewer", "vision"))
    with client_for(sr.address, trainer) as ci:
        ci.create_model("det", project="vision")
        _register(ci, create_model=False)
        assert ci.set_card("det", 1, summary="People counter.", status="pending_review").updated_by == "ci"
        with pytest.raises(errors.PermissionDenied) as denied:
            ci.set_card("det", 1, status="approved")
        msg = denied.value.message
        assert "'ci'" in msg and "'promotions.approve'" in msg and "'vision'" in msg
        assert "leave the status out to save the edit as a draft" in msg
    with client_for(sr.address, releaser) as rita:
        approved = rita.set_card("det", 1, status="approved")
        assert (approved.status, approved.updated_by) == (APPROVED, "rita")
        # A releaser reviews; it does not write the content.
        with pytest.raises(errors.PermissionDenied) as denied:
            rita.set_card("det", 1, summary="Edited by the reviewer.")
        assert "'versions.update'" in denied.value.message
    with client_for(sr.address, viewer) as ann:
        assert ann.get_card("det", 1).status == APPROVED
        with pytest.raises(errors.PermissionDenied):
            ann.set_card("det", 1, status="draft")
    with client_for(sr.address, trainer) as ci:
        assert ci.set_card("det", 1, summary="People counter, v2.").status == DRAFT
    with client_for(sr.address, releaser) as rita:
        assert rita.get_card("det", 1).updated_by == "ci"
    # The CLI carries the token from MODELREG_TOKEN: a refusal exits 1 with the server's message.
    as_ci = {"MODELREG_TOKEN": trainer, "MODELREG_TOKEN_FILE": ""}
    proc = run_cli("card", "set", "det", "1", "--status", "approved", address=sr.address, check=False, env=as_ci)
    assert proc.returncode == 1 and "'promotions.approve'" in proc.stderr and "PERMISSION_DENIED" in proc.stderr
    as_rita = {"MODELREG_TOKEN": releaser, "MODELREG_TOKEN_FILE": ""}
    proc = run_cli("card", "set", "det", "1", "--status", "approved", address=sr.address, env=as_rita)
    assert "approved" in proc.stdout and "rita" in proc.stdout


def test_a_card_change_reaches_a_watcher_with_its_status(client):
    _register(client)
    got: list[es.Event] = []
    # From sequence 0, so an event committed before the stream is up is replayed, not lost.
    watcher = client.watch(["det"], types=["MODEL_CARD_CHANGED"], after_sequence=0, snapshot=False)

    def run() -> None:
        for msg in watcher:
            if msg.WhichOneof("payload") == "event":
                got.append(msg.event)

    threading.Thread(target=run, daemon=True).start()
    deadline = time.monotonic() + 20
    while not watcher.connected and time.monotonic() < deadline:
        time.sleep(0.02)
    client.set_card("det", 1, summary="People counter.")
    client.set_card("det", 1, status="approved")
    while len(got) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    watcher.close()
    assert [(e.type, e.model, e.model_version, e.actor, e.details["status"]) for e in got] == [
        (es.EVENT_TYPE_MODEL_CARD_CHANGED, "models/det", "models/det/versions/1", "tester", "draft"),
        (es.EVENT_TYPE_MODEL_CARD_CHANGED, "models/det", "models/det/versions/1", "tester", "approved"),
    ]


# ---------------------------------------------------------------- bad input over gRPC


def _code(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


def test_bad_card_requests_are_invalid_argument_saying_what_to_change(client):
    _register(client)
    stub = gs_grpc.GovernanceServiceStub(client._channel)

    def update(card: gov.ModelCard, mask=(), name="models/det/versions/1"):
        return lambda: stub.UpdateModelCard(
            gs.UpdateModelCardRequest(model_version=name, card=card, update_mask=list(mask)), timeout=10
        )

    code, msg = _code(update(gov.ModelCard(summary="x"), ["summary", "owner"]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "update_mask path 'owner' is not a model card field" in msg and "intended_use" in msg
    code, msg = _code(update(gov.ModelCard(status=9)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "card.status is unknown (9)" in msg and "MODEL_CARD_STATUS_APPROVED" in msg
    code, msg = _code(update(gov.ModelCard(), ["status"]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "card.status is unset" in msg
    code, msg = _code(update(gov.ModelCard()))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "nothing to write" in msg
    code, msg = _code(update(gov.ModelCard(summary="x" * (dc.MAX_TEXT_CHARS + 1))))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "card.summary is 65537 characters" in msg
    code, msg = _code(update(gov.ModelCard(summary="x"), name="models/det/v/1"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "expected 'models/{model}/versions/{version}'" in msg
    with pytest.raises(errors.InvalidArgument) as bad:
        client.set_card("det", 1, status="done")
    assert "unknown model card status 'done'" in bad.value.message
    # An empty mask writes what is set; a masked empty field is cleared.
    stub.UpdateModelCard(
        gs.UpdateModelCardRequest(
            model_version="models/det/versions/1", card=gov.ModelCard(summary="s", limitations="l")
        ),
        timeout=10,
    )
    stub.UpdateModelCard(
        gs.UpdateModelCardRequest(
            model_version="models/det/versions/1", card=gov.ModelCard(), update_mask=["limitations"]
        ),
        timeout=10,
    )
    card = client.get_card("det", 1)
    assert (card.summary, card.limitations) == ("s", "")


# ---------------------------------------------------------------- the CLI


CARD_YAML = """\
summary: Finds people in CCTV frames.
intended-use: Counting people in shops.
outOfScopeUse: Identifying anyone.
limitations: |
  Poor at night.
  Misses people under 20 px.
ethical_considerations: Faces are never stored.
extra:
  license: apache-2.0
  reviewed: 2026-11-30
"""


def test_card_set_from_a_yaml_file_and_get_as_markdown_and_json(client, cli, tmp_path):
    _register(client, metrics={"map50": 0.612}, dataset_id="coco-2017", run_id="run-42")
    path = tmp_path / "card.yaml"
    path.write_text(CARD_YAML)
    proc = cli("card", "set", "det", "1", "--file", str(path), "--summary", "Counts people.")
    assert "models/det/versions/1/card" in proc.stdout and "draft" in proc.stdout
    md = cli("card", "get", "det", "1").stdout
    assert md.startswith("# Model card: models/det/versions/1\n\n**Status:** draft (updated ")
    assert "by cli-user)" in md.splitlines()[2]
    body = md.split("\n", 3)[3]
    assert body == (
        "\n## Summary\n\nCounts people.\n\n"
        "## Intended use\n\nCounting people in shops.\n\n"
        "## Out-of-scope use\n\nIdentifying anyone.\n\n"
        "## Limitations\n\nPoor at night.\nMisses people under 20 px.\n\n"
        "## Training data\n\nDataset coco-2017; training run run-42.\n\n"
        "## Evaluation\n\nmap50=0.612\n\n"
        "## Ethical considerations\n\nFaces are never stored.\n\n"
        "## Additional information\n\n"
        "- **license**: apache-2.0\n"
        "- **reviewed**: 2026-11-30\n"
    )
    assert md == card_markdown(client.get_card("det", 1))
    as_json = json.loads(cli("card", "get", "det", "1", "-o", "json").stdout)
    assert as_json["name"] == "models/det/versions/1/card"
    assert as_json["status"] == "MODEL_CARD_STATUS_DRAFT"
    assert as_json["summary"] == "Counts people."
    assert as_json["extra"] == {"license": "apache-2.0", "reviewed": "2026-11-30"}
    # `get -o json` written back with --file works (output-only fields are ignored).
    as_json["limitations"] = "Poor at night."
    back = tmp_path / "card.json"
    back.write_text(json.dumps(as_json))
    set_json = json.loads(cli("card", "set", "det", "1", "-f", str(back), "-o", "json").stdout)
    assert set_json["limitations"] == "Poor at night." and set_json["status"] == "MODEL_CARD_STATUS_DRAFT"
    # Status by flag; a content edit of the approved card puts it back to draft.
    assert "approved" in cli("card", "set", "det", "1", "--status", "approved").stdout
    assert "draft" in cli("card", "set", "det", "1", "--limitations", "Fog too.").stdout


def test_card_cli_bad_usage_exits_2_with_a_clear_message(client, cli, tmp_path):
    _register(client)
    proc = cli("card", "set", "det", "1", "--status", "done", check=False)
    assert proc.returncode == 2 and "invalid choice: 'done'" in proc.stderr
    not_yaml = tmp_path / "card.yaml"
    not_yaml.write_text("summary: [unclosed\n  intended_use: x: y\n")
    proc = cli("card", "set", "det", "1", "--file", str(not_yaml), check=False)
    assert proc.returncode == 2
    assert f"card file {not_yaml} is neither YAML nor JSON" in proc.stderr and "at line" in proc.stderr
    bad_json = tmp_path / "card.json"
    bad_json.write_text('{"summary": "x",}')
    proc = cli("card", "set", "det", "1", "--file", str(bad_json), check=False)
    assert proc.returncode == 2 and f"card file {bad_json} is not valid JSON" in proc.stderr
    prose = tmp_path / "notes.txt"
    prose.write_text("just some words\n")
    proc = cli("card", "set", "det", "1", "--file", str(prose), check=False)
    assert proc.returncode == 2 and "holds a mapping of card fields" in proc.stderr and "not str" in proc.stderr
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("sumary: typo\n")
    proc = cli("card", "set", "det", "1", "--file", str(unknown), check=False)
    assert proc.returncode == 2 and "unknown card field 'sumary'" in proc.stderr
    bad_status = tmp_path / "status.yaml"
    bad_status.write_text("status: done\n")
    proc = cli("card", "set", "det", "1", "--file", str(bad_status), check=False)
    assert proc.returncode == 2 and "unknown model card status 'done'" in proc.stderr
    proc = cli("card", "set", "det", "1", check=False)
    assert proc.returncode == 2 and "nothing to write" in proc.stderr
    proc = cli("card", "set", "det", "1", "--extra", "[1]", check=False)
    assert proc.returncode == 2 and "--extra must be a JSON object" in proc.stderr
    proc = cli("card", "set", "det", "1", "--file", str(tmp_path / "missing.yaml"), check=False)
    assert proc.returncode == 2 and "cannot read card file" in proc.stderr
    # Nothing was written by any of them.
    with pytest.raises(errors.NotFound):
        client.get_card("det", 1)
