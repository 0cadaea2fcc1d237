"""Webhooks against a real HTTP receiver on loopback (tests/webhook_helpers.py): delivery
through a receiver outage and a registry crash, in order, signed; failures that are final
at once; redelivery; parallel webhooks; one delivery per event with two replicas; the
destination rules; the secret kept out of answers and logs."""

from __future__ import annotations

import json
import logging
import re
import signal
import subprocess
import time
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import BIN, run_cli
from webhook_helpers import Receiver, wait_until

from modelreg import Client, errors
from modelreg.v1 import webhook_pb2 as wh
from modelreg.watch import list_events

pytestmark = pytest.mark.timeout(90)

FAST = dict(webhook_allow_private=True, webhook_backoff=0.3, webhook_backoff_max=1.0, webhook_lease=3.0)


def versions(reg: Client, model: str, n: int, project: str = "") -> None:
    reg.create_model(model, project=project)
    for i in range(n):
        reg.register(model, f"{model}-{i}".encode(), format="other")


def stage_events(reg: Client, model: str) -> list[int]:
    """The sequences of the model's stage changes, from the event log."""
    return [e.sequence for e in list_events(reg._channel, models=[model], types=["stage_changed"])]


@pytest.fixture
def receiver():
    r = Receiver().start()
    yield r
    r.stop()


def test_promotions_while_the_receiver_is_down_arrive_afterwards_complete_in_order_and_signed(
    make_registry, receiver, caplog
):
    caplog.set_level(logging.DEBUG)
    reg = make_registry(**FAST)
    with Client(reg.address, actor="tester") as c:
        versions(c, "det", 3)
        hook, secret = c.create_webhook("ci", receiver.url, ["stage_changed"], models=["det"])
        assert secret.startswith("whsec_") and hook.project == "default"
        receiver.stop()  # down for 10 s: every attempt meanwhile is refused
        down_since = time.monotonic()
        for v in (1, 2, 3):
            c.promote("det", v, "staging")
            c.promote("det", v, "production")
        wait_until(lambda: any(d.attempts > 1 for d in c.list_deliveries("ci")), 5, "retries during the outage")
        time.sleep(max(0.0, down_since + 10 - time.monotonic()))
        assert receiver.snapshot() == []
        receiver.start()
        expected = stage_events(c, "det")
        assert len(expected) >= 6
        wait_until(lambda: len(receiver.snapshot()) >= len(expected), 20, "every delivery after the outage")
        got = receiver.snapshot()
        assert [r.sequence for r in got] == expected  # complete, in order, no duplicate (no crash)
        assert len({r.delivery for r in got}) == len(got)
        readme_verify = _readme_verify()
        for r in got:
            assert r.verify(secret), "bad signature"
            assert readme_verify(secret.encode(), r.headers, r.body)
            assert r.event_type == "stage_changed"
            assert r.payload["delivery"] == r.delivery and r.payload["webhook"] == "webhooks/ci"
            assert r.payload["event"]["type"] == "EVENT_TYPE_STAGE_CHANGED"
            assert r.payload["event"]["model"] == "models/det"
        wait_until(lambda: c.get_webhook("ci").pending_deliveries == 0, 5, "deliveries recorded")
        retried = [d for d in c.list_deliveries("ci") if d.attempts > 1]
        assert retried and all(d.state == wh.DELIVERY_STATE_DELIVERED for d in c.list_deliveries("ci"))
        # Never shown again, never logged.
        assert secret not in str(c.get_webhook("ci")) and secret not in str(list(c.list_webhooks()))
    assert secret not in caplog.text


def _readme_verify():
    """The README's five-line receiver check, as printed there."""
    text = (Path(__file__).parent.parent / "README.md").read_text()
    section = text[text.index("## Webhooks") :]
    block = re.search(r"```python\n(import hashlib.*?)```", section, re.DOTALL)
    assert block is not None and len(block[1].strip().splitlines()) == 5
    namespace: dict = {}
    exec(block[1], namespace)  # noqa: S102 - the README's own snippet
    return namespace["verify"]


def test_the_readmes_verify_refuses_a_tampered_body_a_wrong_secret_and_a_stale_timestamp(make_registry, receiver):
    verify = _readme_verify()
    reg = make_registry(**FAST)
    with Client(reg.address, actor="tester") as c:
        versions(c, "m", 1)
        _, secret = c.create_webhook("h", receiver.url, ["stage_changed"])
        c.promote("m", 1, "staging")
        wait_until(lambda: receiver.snapshot(), 10, "the delivery")
    (r,) = receiver.snapshot()
    assert verify(secret.encode(), r.headers, r.body)
    assert not verify(secret.encode(), r.headers, r.body.replace(b'"project":"default"', b'"project":"other"'))
    assert not verify(b"another-secret-0123456789", r.headers, r.body)
    assert not verify(secret.encode(), r.headers, r.body, window=-1)  # outside any replay window
    # grpcurl, as the README shows it.
    listed = subprocess.run(
        [str(BIN / "grpcurl"), "-plaintext", "-d", '{"webhook": "webhooks/h"}', reg.address,
         "modelreg.v1.WebhookService/ListDeliveries"],
        capture_output=True, text=True, timeout=30, check=True,
    )  # fmt: skip
    (d,) = json.loads(listed.stdout)["deliveries"]  # grpcurl prints the protos' field names
    assert d["delivery_id"] == r.delivery and d["state"] == "DELIVERY_STATE_DELIVERED"


def test_a_slow_receiver_does_not_delay_another_webhook(make_registry):
    slow = Receiver(answer=lambda r: (200, 2.5)).start()
    fast = Receiver().start()
    try:
        reg = make_registry(**FAST)
        with Client(reg.address, actor="tester") as c:
            versions(c, "m", 2)
            c.create_webhook("slow", slow.url, ["stage_changed"])
            c.create_webhook("fast", fast.url, ["stage_changed"])
            c.promote("m", 1, "staging")
            c.promote("m", 2, "staging")
            wait_until(lambda: len(fast.snapshot()) == 2, 3, "both events at the fast receiver")
            assert len(slow.snapshot()) == 1  # still answering the first
            wait_until(lambda: len(slow.snapshot()) == 2, 10, "the slow receiver's second event")
            assert [r.sequence for r in slow.snapshot()] == [r.sequence for r in fast.snapshot()]
    finally:
        slow.stop()
        fast.stop()


def test_410_and_400_fail_at_once_show_in_deliveries_failed_and_redeliver_sends_them_again(
    make_registry, receiver, tmp_path
):
    receiver.answer = lambda r: (410, 0.0) if len(receiver.received) == 1 else (400, 0.0)
    reg = make_registry(**FAST)
    secret_file = tmp_path / "secret"
    secret_file.write_text("a-secret-from-a-file-0123456789\n")

    def cli(*args: str):
        return run_cli(*args, "-o", "json", address=reg.address)

    with Client(reg.address, actor="tester") as c:
        versions(c, "m", 2)
    created = json.loads(
        cli("webhooks", "create", "gone", "--url", receiver.url, "--events", "stage_changed,deployment_changed",
            "--model", "m", "--secret-file", str(secret_file)).stdout
    )  # fmt: skip
    assert "secret" not in created and created["webhook"]["eventTypes"] == [
        "EVENT_TYPE_STAGE_CHANGED",
        "EVENT_TYPE_DEPLOYMENT_CHANGED",
    ]
    with Client(reg.address, actor="tester") as c:
        c.promote("m", 1, "staging")
        c.promote("m", 2, "staging")

    with Client(reg.address, actor="tester") as c:
        wait_until(lambda: len(list(c.list_deliveries("gone", failed_only=True))) == 2, 10, "both failed")
    rows = json.loads(cli("webhooks", "deliveries", "gone", "--failed").stdout)["deliveries"]
    assert [r["lastStatusCode"] for r in rows] == [400, 410]  # newest first
    assert all(r["attempts"] == 1 and r["state"] == "DELIVERY_STATE_FAILED" for r in rows)
    assert len(receiver.snapshot()) == 2  # no retry of a final answer
    assert all(r.verify("a-secret-from-a-file-0123456789") for r in receiver.snapshot())
    with Client(reg.address, actor="tester") as c:
        shown = c.get_webhook("gone")
    assert shown.failed_deliveries == 2 and shown.pending_deliveries == 0

    receiver.answer = lambda r: (200, 0.0)
    first = rows[1]
    again = json.loads(cli("webhooks", "redeliver", "gone", first["deliveryId"]).stdout)["delivery"]
    assert again["state"] == "DELIVERY_STATE_PENDING" and again["redeliveries"] == 1
    wait_until(lambda: len(receiver.snapshot()) == 3, 10, "the redelivery")
    resent = receiver.snapshot()[2]
    assert resent.delivery == first["deliveryId"] and resent.sequence == int(first["sequence"])
    assert resent.body == receiver.snapshot()[0].body  # the same payload, signed anew
    with Client(reg.address, actor="tester") as c:
        wait_until(lambda: c.get_webhook("gone").failed_deliveries == 1, 5, "the redelivery recorded")
        assert [d.state for d in c.list_deliveries("gone")] == [wh.DELIVERY_STATE_FAILED, wh.DELIVERY_STATE_DELIVERED]
        assert [w.name for w in c.list_webhooks()] == ["webhooks/gone"]
        c.delete_webhook("gone")
        with pytest.raises(errors.NotFound, match="does not exist"):
            c.redeliver("gone", "x")


def test_429_waits_for_retry_after_and_5xx_is_retried_until_the_window_ends_then_failed(make_registry):
    limited = Receiver(answer=lambda r: (429, 0.0, {"Retry-After": "2"}) if len(limited.received) == 1 else (200, 0.0))
    broken = Receiver(answer=lambda r: (503, 0.0))
    limited.start()
    broken.start()
    try:
        reg = make_registry(**{**FAST, "webhook_retry_window": timedelta(seconds=3)})
        with Client(reg.address, actor="tester") as c:
            versions(c, "m", 1)
            c.create_webhook("limited", limited.url, ["stage_changed"])
            c.create_webhook("broken", broken.url, ["stage_changed"])
            c.promote("m", 1, "staging")
            wait_until(lambda: len(limited.snapshot()) == 2, 10, "the retry after Retry-After")
            first, second = limited.snapshot()
            assert second.at - first.at >= 1.9  # not the 0.3 s backoff
            assert first.delivery == second.delivery and first.body == second.body
            wait_until(lambda: list(c.list_deliveries("broken", failed_only=True)), 10, "the window to end")
            (d,) = c.list_deliveries("broken", failed_only=True)
            assert d.last_status_code == 503 and "gave up after" in d.last_error
            assert d.attempts == len(broken.snapshot()) >= 3
    finally:
        limited.stop()
        broken.stop()


def test_private_and_non_http_urls_are_refused_without_the_setting(make_registry):
    reg = make_registry()
    with Client(reg.address, actor="tester") as c:
        for url, why in [
            ("http://127.0.0.1:9/hook", "loopback"),
            ("http://localhost/hook", "loopback"),
            ("http://10.1.2.3/hook", "private"),
            ("http://169.254.169.254/latest/meta-data", "link-local"),
            ("http://[::1]/hook", "loopback"),
            ("ftp://ci.example/hook", "http:// or https://"),
            ("https://user:pw@ci.example/hook", "user info"),
        ]:
            with pytest.raises(errors.InvalidArgument) as refused:
                c.create_webhook("x", url, ["stage_changed"])
            assert why in refused.value.message, (url, refused.value.message)
        with pytest.raises(errors.InvalidArgument) as refused:
            c.create_webhook("x", "http://127.0.0.1/", ["stage_changed"])
        assert "MODELREG_WEBHOOK_ALLOW_PRIVATE" in refused.value.message
        with pytest.raises(errors.InvalidArgument) as refused:
            c.create_webhook("x", "https://ci.example/hook", [])
        assert "event type" in refused.value.message
        assert list(c.list_webhooks()) == []
    bad = run_cli(
        "webhooks", "create", "x", "--url", "http://127.0.0.1:9/", "--events", "no_such", address=reg.address,
        check=False,
    )  # fmt: skip
    assert bad.returncode == 2 and "stage_changed" in bad.stderr


def test_a_destination_that_became_private_is_refused_at_delivery_time(make_registry, receiver, database_url, tmp_path):
    from conftest import ThreadedRegistry

    from registry_server.config import Settings

    first = ThreadedRegistry(
        Settings(
            address="127.0.0.1:0",
            database_url=database_url,
            data_dir=tmp_path / "data",
            artifacts=str(tmp_path / "artifacts"),
            **FAST,
        )
    )
    try:
        with Client(first.address, actor="tester") as c:
            versions(c, "m", 1)
            c.create_webhook("h", receiver.url, ["stage_changed"])
    finally:
        first.stop()
    strict = make_registry(webhook_lease=3.0)  # same database and key, private destinations not allowed
    with Client(strict.address, actor="tester") as c:
        c.promote("m", 1, "staging")
        wait_until(lambda: list(c.list_deliveries("h", failed_only=True)), 10, "the refused delivery")
        (d,) = c.list_deliveries("h", failed_only=True)
        assert d.attempts == 1 and "loopback" in d.last_error
    assert receiver.snapshot() == []


def test_two_replicas_deliver_each_event_once_and_only_the_webhooks_project(make_registry, receiver):
    a = make_registry(**FAST)
    b = make_registry(**FAST)
    with Client(a.address, actor="tester") as c:
        versions(c, "mine", 4, project="default")
        versions(c, "theirs", 2, project="other")
        _, secret = c.create_webhook("h", receiver.url, ["stage_changed", "version_ready"])
    with Client(b.address, actor="tester") as c:
        for v in (1, 2, 3, 4):
            c.promote("mine", v, "staging")
        c.promote("theirs", 1, "staging")
        c.register("mine", b"five", format="other")
        wait_until(lambda: len(receiver.snapshot()) >= 5, 10, "the deliveries")
    got = receiver.snapshot()
    assert [r.payload["event"]["model"] for r in got] == ["models/mine"] * 5
    assert len({r.delivery for r in got}) == len(got) == 5
    assert [r.sequence for r in got] == sorted(r.sequence for r in got)
    assert [r.event_type for r in got] == ["stage_changed"] * 4 + ["version_ready"]
    assert all(r.verify(secret) for r in got)


def test_deliveries_resume_after_the_registry_is_killed_mid_delivery(spawn_registry, tmp_path):
    receiver = Receiver(answer=lambda r: (200, 0.5)).start()  # slow: the kill lands mid-request
    env = dict(
        MODELREG_WEBHOOK_ALLOW_PRIVATE="true",
        MODELREG_WEBHOOK_BACKOFF_SECONDS="0.3",
        MODELREG_WEBHOOK_BACKOFF_MAX_SECONDS="1",
        MODELREG_WEBHOOK_LEASE_SECONDS="2",
    )
    try:
        proc, address = spawn_registry(**env)
        with Client(address, actor="tester") as c:
            versions(c, "m", 2)
            _, secret = c.create_webhook("h", receiver.url, ["stage_changed"])
            for v in (1, 2):
                c.promote("m", v, "staging")
                c.promote("m", v, "production")
            expected = stage_events(c, "m")
        wait_until(lambda: len(receiver.snapshot()) >= 2, 10, "deliveries under way")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        port = int(address.rsplit(":", 1)[1])
        _, address = spawn_registry(port=port, **env)
        wait_until(
            lambda: {r.sequence for r in receiver.snapshot()} == set(expected), 30, "every delivery after restart"
        )
        got = receiver.snapshot()
        sequences = [r.sequence for r in got]
        assert sequences == sorted(sequences), sequences  # in order; a repeat only right where the kill was
        ids: dict[int, set[str]] = {}
        for r in got:
            ids.setdefault(r.sequence, set()).add(r.delivery)
            assert r.verify(secret)
        assert all(len(v) == 1 for v in ids.values()), "a duplicate carries the same delivery id"
        assert len(got) - len(expected) <= 1, "duplicates only for what was in flight at the crash"
        with Client(address, actor="tester") as c:
            wait_until(lambda: c.get_webhook("h").pending_deliveries == 0, 10, "all recorded")
    finally:
        receiver.stop()
    for log in tmp_path.glob("server-*.log"):
        assert secret not in log.read_text()


def test_only_project_admins_manage_webhooks_and_the_error_says_which_permission(secure_registry, receiver):
    """The full role table is in tests/test_auth_matrix.py; here, what a user reads."""
    del receiver
    secure_registry.project("team")
    token = secure_registry.principal("rel", ("releaser", "team"))
    with Client(secure_registry.address, token=token) as c:
        with pytest.raises(errors.PermissionDenied) as denied:
            c.create_webhook("x", "https://ci.example/hook", ["stage_changed"], project="team")
        assert "'webhooks.manage'" in denied.value.message and "'team'" in denied.value.message
        assert list(c.list_webhooks()) == []


def test_with_auth_on_nothing_reaches_a_webhook_whose_creator_may_no_longer_read_its_project(
    make_registry, receiver, tmp_path
):
    from auth_helpers import admin_token_of

    reg = make_registry(auth="on", **FAST)
    with Client(reg.address, token=admin_token_of(tmp_path / "data")) as admin:
        admin.create_project("team")
        admin.create_principal("lead")
        admin.grant_role("lead", "project-admin", "team")
        token = admin.create_token("lead-token", "lead").token
        versions(admin, "det", 2, project="team")
        versions(admin, "elsewhere", 1, project="default")
        with Client(reg.address, token=token) as lead:
            hook, secret = lead.create_webhook("team-hook", receiver.url, ["stage_changed"], models=["det"])
            assert hook.project == "team"  # the model's
            with pytest.raises(errors.PermissionDenied):
                lead.create_webhook("x", receiver.url, ["stage_changed"], project="default")
        admin.promote("det", 1, "staging")
        admin.promote("elsewhere", 1, "staging")
        wait_until(lambda: len(receiver.snapshot()) == 1, 10, "the team's event")
        admin.revoke_role("lead", "project-admin", "team")
        admin.promote("det", 2, "staging")
        wait_until(
            lambda: admin.get_webhook("team-hook").cursor_sequence >= stage_events(admin, "det")[-1],
            10,
            "the skipped event",
        )
        time.sleep(0.5)
    (only,) = receiver.snapshot()
    assert only.payload["event"]["modelVersion"] == "models/det/versions/1" and only.verify(secret)


def test_an_unknown_webhook_is_not_found(make_registry):
    reg = make_registry()
    with Client(reg.address, actor="tester") as c:
        for call in (lambda: c.get_webhook("nope"), lambda: c.delete_webhook("nope")):
            with pytest.raises(errors.NotFound) as missing:
                call()
            assert "webhooks/nope" in missing.value.message
        with pytest.raises(errors.InvalidArgument):
            c.get_webhook("bad name!")


def test_the_secret_is_stored_sealed_and_the_key_file_is_private(make_registry, database_url, tmp_path, receiver):
    """What the README's Safety says: the database holds the secret encrypted (Fernet, with the
    key in `<data dir>/webhook.key`, mode 0600), never the secret itself."""
    import asyncio
    import stat

    import asyncpg

    reg = make_registry(**FAST)
    with Client(reg.address) as c:
        _, secret = c.create_webhook("sealed", receiver.url, ["stage_changed"])

    async def stored() -> bytes:
        conn = await asyncpg.connect(database_url)
        try:
            return await conn.fetchval("SELECT secret FROM webhooks WHERE name = 'sealed'")
        finally:
            await conn.close()

    sealed = bytes(asyncio.run(stored()))
    assert sealed and secret.encode() not in sealed
    assert sealed.startswith(b"gAAAA")  # a Fernet token
    key = tmp_path / "data" / "webhook.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
