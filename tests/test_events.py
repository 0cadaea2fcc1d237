"""The durable stage-change stream (WatchEvents) against real Postgres and real servers:
snapshot, replay, live tail, bookmarks, resync, cuts, listener loss, Postgres restarts,
replicas, graceful shutdown, the SDK watcher, the CLI and grpcurl."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import threading
import time
from datetime import UTC, timedelta

import grpc
import pytest
from conftest import BIN, run_cli
from events_helpers import Collector, CuttingProxy, PrivatePostgres, raw_watch, take
from grpc_health.v1 import health_pb2, health_pb2_grpc

from modelreg import Client, errors
from modelreg.v1 import event_service_pb2 as es
from modelreg.v1 import event_service_pb2_grpc as es_grpc
from modelreg.v1 import resources_pb2 as res
from modelreg.watch import AsyncWatcher, list_events
from registry_server.domain.events import EventDraft
from registry_server.storage import db
from registry_server.storage.outbox import Outbox


def all_sequences(client: Client) -> list[int]:
    return [e.sequence for e in list_events(client._channel)]


def rpc_error(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as e:
        for _ in call:
            pass
    return e.value


# ---------------------------------------------------------------------- snapshot and basics


def test_snapshot_has_production_version_and_sha256_then_live_events(client, registry):
    v1 = client.register("det", b"weights-1")
    v2 = client.register("det", b"weights-2")
    client.promote("det", v1.version, "production")
    client.create_model("other")
    ch, call = raw_watch(registry.address, es.WatchEventsRequest(models=["models/det", "models/ghost"]))
    try:
        first = next(call)
        snap = first.snapshot
        assert first.WhichOneof("payload") == "snapshot"
        assert snap.sequence == all_sequences(client)[-1]
        # One deployment per watched model that exists: the unknown "ghost" has none.
        states = {d.name: d for d in snap.deployments}
        assert set(states) == {"models/det/deployment"}
        stable = states["models/det/deployment"].stable
        assert (stable.version, stable.version_number) == (f"models/det/versions/{v1.version}", v1.version)
        assert stable.sha256 == v1.artifact.sha256
        assert stable.size_bytes == v1.artifact.size_bytes
        assert stable.filename == v1.artifact.download_filename
        assert not states["models/det/deployment"].HasField("canary")

        client.promote("det", v2.version, "production", reason="better")
        client.create_model("unwatched")  # filtered out
        got = take(call, 2)
        assert [m.event.type for m in got] == [es.EVENT_TYPE_STAGE_CHANGED] * 2
        archived, promoted = got[0].event, got[1].event
        assert (archived.model_version, archived.from_stage, archived.to_stage) == (
            v1.name,
            res.STAGE_PRODUCTION,
            res.STAGE_ARCHIVED,
        )
        assert (promoted.model_version, promoted.from_stage, promoted.to_stage) == (
            v2.name,
            res.STAGE_NONE,
            res.STAGE_PRODUCTION,
        )
        assert promoted.model == "models/det"
        assert promoted.actor == "tester"
        assert promoted.reason == "better"
        assert promoted.details["sha256"] == v2.artifact.sha256
        assert promoted.sequence == archived.sequence + 1 == snap.sequence + 2
        assert promoted.create_time.seconds > 0
    finally:
        call.cancel()
        ch.close()


def test_snapshot_carries_the_canary_and_its_weight(client, registry):
    v1 = client.register("can", b"stable")
    v2 = client.register("can", b"canary")
    client.promote("can", v1.version, "production")
    client.set_canary("can", v2.version, 25, reason="try it")
    ch, call = raw_watch(registry.address, es.WatchEventsRequest(models=["can"]))
    try:
        state = next(call).snapshot.deployments[0]
        assert (state.stable.version_number, state.stable.sha256) == (v1.version, v1.artifact.sha256)
        assert (state.canary.version, state.canary.sha256, state.canary_weight) == (v2.name, v2.artifact.sha256, 25)
    finally:
        call.cancel()
        ch.close()
    out = run_cli("watch", "can", "--count", "0", "--snapshot-only", address=registry.address).stdout
    assert "production=v1" in out and "canary=v2 at 25%" in out


def test_snapshot_without_models_lists_every_model(client, registry):
    client.create_model("a")
    client.create_model("b")
    ch, call = raw_watch(registry.address, es.WatchEventsRequest())
    try:
        snap = next(call).snapshot
        assert [d.name for d in snap.deployments] == ["models/a/deployment", "models/b/deployment"]
        assert not any(d.HasField("stable") for d in snap.deployments)
    finally:
        call.cancel()
        ch.close()


def test_type_filter_and_replay_from_zero(client, registry):
    v = client.register("f", b"w")
    client.promote("f", v.version, "staging")
    client.promote("f", v.version, "production")
    req = es.WatchEventsRequest(types=[es.EVENT_TYPE_STAGE_CHANGED], after_sequence=0, skip_snapshot=True)
    ch, call = raw_watch(registry.address, req)
    try:
        got = [m.event for m in take(call, 2)]
        assert [(e.from_stage, e.to_stage) for e in got] == [
            (res.STAGE_NONE, res.STAGE_STAGING),
            (res.STAGE_STAGING, res.STAGE_PRODUCTION),
        ]
    finally:
        call.cancel()
        ch.close()
    everything = list(list_events(client._channel))
    types = [es.EventType.Name(e.type) for e in everything]
    assert types[:2] == ["EVENT_TYPE_MODEL_CREATED", "EVENT_TYPE_VERSION_READY"]
    assert [e.sequence for e in everything] == list(range(1, len(everything) + 1))


def test_list_events_pages_and_filters(client):
    for i in range(5):
        client.create_model(f"p{i}")
    page = es_grpc.EventServiceStub(client._channel).ListEvents(es.ListEventsRequest(page_size=2))
    assert [e.model for e in page.events] == ["models/p0", "models/p1"]
    assert page.next_page_token
    assert [e.model for e in list_events(client._channel, page_size=2)] == [f"models/p{i}" for i in range(5)]
    assert [e.model for e in list_events(client._channel, models=["p3"])] == ["models/p3"]
    assert [e.sequence for e in list_events(client._channel, after_sequence=3)] == [4, 5]
    with pytest.raises(grpc.RpcError) as e:
        es_grpc.EventServiceStub(client._channel).ListEvents(es.ListEventsRequest(page_token="bogus"))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token is not valid" in e.value.details()


@pytest.mark.parametrize(
    "request_, message",
    [
        (es.WatchEventsRequest(models=["Bad_Name"]), "invalid model"),
        (es.WatchEventsRequest(models=["models/a/versions/1"]), "expected 'models/{model}'"),
        (es.WatchEventsRequest(types=[99]), "not an event type"),
        (es.WatchEventsRequest(types=[es.EVENT_TYPE_UNSPECIFIED]), "not an event type"),
        (es.WatchEventsRequest(after_sequence=-1), "after_sequence must be 0 or more"),
        (es.WatchEventsRequest(bookmark_interval_seconds=-5), "bookmark_interval_seconds must be positive"),
    ],
)
def test_bad_watch_requests_are_invalid_argument(registry, request_, message):
    ch, call = raw_watch(registry.address, request_, timeout=30)
    try:
        err = rpc_error(call)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert message in err.details()
    finally:
        ch.close()


def test_bookmarks_on_an_idle_stream_carry_the_latest_sequence(client, registry):
    client.create_model("idle")
    client.create_model("busy")
    req = es.WatchEventsRequest(models=["models/idle"], bookmark_interval_seconds=1)
    ch, call = raw_watch(registry.address, req)
    try:
        snap = next(call).snapshot
        bm = next(call)
        assert bm.WhichOneof("payload") == "bookmark"
        assert bm.bookmark.sequence == snap.sequence
        client.update_model("busy", description="changed")  # not watched: only moves the bookmark
        latest = all_sequences(client)[-1]
        for msg in call:
            assert msg.WhichOneof("payload") == "bookmark"
            if msg.bookmark.sequence == latest:
                break
    finally:
        call.cancel()
        ch.close()


def test_server_default_bookmark_interval_applies(make_registry):
    reg = make_registry(bookmark_interval=1.0)
    ch, call = raw_watch(reg.address, es.WatchEventsRequest(skip_snapshot=True))
    try:
        kinds = [m.WhichOneof("payload") for m in take(call, 2)]
        assert kinds == ["bookmark", "bookmark"]
    finally:
        call.cancel()
        ch.close()


def test_backoff_is_jittered_exponential_from_0_8_to_30_seconds():
    from modelreg.watch import backoff_delay

    for attempt, full in enumerate([0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30.0, 30.0]):
        draws = [backoff_delay(attempt) for _ in range(200)]
        assert all(full / 2 <= d <= full for d in draws)
        assert len(set(draws)) > 1  # jittered


def test_sdk_cursor_drops_duplicates_and_forgets_its_cursor_on_resync():
    """Pure logic of the watcher's resume point (no server)."""
    from modelreg.watch import _Cursor

    cur = _Cursor(["m"], ["stage_changed"], None, True, False, 0)
    assert not cur.request().HasField("after_sequence") and not cur.request().skip_snapshot
    assert cur.accept(es.WatchEventsResponse(snapshot=es.Snapshot(sequence=10)))
    assert cur.last_sequence == 10
    cur.connected_once = True
    assert cur.accept(es.WatchEventsResponse(event=es.Event(sequence=11)))
    assert not cur.accept(es.WatchEventsResponse(event=es.Event(sequence=11)))  # duplicate after a resume
    assert not cur.accept(es.WatchEventsResponse(event=es.Event(sequence=9)))
    assert cur.accept(es.WatchEventsResponse(bookmark=es.Bookmark(sequence=15)))
    req = cur.request()
    assert (req.after_sequence, req.skip_snapshot, list(req.models)) == (15, True, ["models/m"])
    assert list(req.types) == [es.EVENT_TYPE_STAGE_CHANGED]

    class Resync(grpc.RpcError):
        def code(self):
            return grpc.StatusCode.FAILED_PRECONDITION

        def trailing_metadata(self):
            from google.rpc import error_details_pb2, status_pb2

            info = error_details_pb2.ErrorInfo(reason="RESYNC_REQUIRED")
            st = status_pb2.Status(code=9, message="old")
            st.details.add().Pack(info)
            return (("grpc-status-details-bin", st.SerializeToString()),)

        def details(self):
            return "old"

    assert cur.failed(Resync()) is True
    assert cur.last_sequence is None and cur.resyncs == 1
    req = cur.request()
    assert not req.HasField("after_sequence") and not req.skip_snapshot
    assert cur.accept(es.WatchEventsResponse(snapshot=es.Snapshot(sequence=20)))  # shown: re-read state

    # snapshot=False "from now": the snapshot is still fetched (it is the cursor) but hidden.
    quiet = _Cursor([], [], None, False, False, 0)
    assert not quiet.request().skip_snapshot
    assert not quiet.accept(es.WatchEventsResponse(snapshot=es.Snapshot(sequence=7)))
    assert quiet.last_sequence == 7
    quiet.connected_once = True
    assert quiet.request().skip_snapshot and quiet.request().after_sequence == 7


# ---------------------------------------------------------------------- ordering and durability


def test_late_commit_is_delivered_in_order_and_nothing_is_skipped(client, registry):
    """One event-writing transaction held open 2 s while 100 others try to commit: the
    watcher receives all 101, in sequence order, none skipped."""
    from concurrent.futures import ThreadPoolExecutor

    client.create_model("late")
    col = Collector(client.watch())
    col.wait_for(lambda c: c.of("snapshot"))
    start = col.of("snapshot")[0].sequence

    async def open_and_emit():
        conn = await db.connect(registry.database_url)
        tx = conn.transaction()
        await tx.start()
        seq = await Outbox(None).emit(conn, "late-writer", [EventDraft("MODEL_UPDATED", "late", reason="held")])
        return conn, tx, seq

    conn, tx, late_seq = registry.call(open_and_emit())
    assert late_seq == start + 1
    with ThreadPoolExecutor(20) as pool:
        futures = [pool.submit(client.create_model, f"m-{i}") for i in range(100)]
        time.sleep(2.0)
        # Every other writer waits for the counter lock the open transaction holds.
        assert not any(f.done() for f in futures)
        registry.call(tx.commit())
        registry.call(conn.close())
        for f in futures:
            f.result()
    col.wait_for_sequence(start + 101)
    col.close()
    seqs = col.sequences()
    assert seqs == list(range(start + 1, start + 102))
    events = col.of("event")
    assert (events[0].actor, events[0].model) == ("late-writer", "models/late")
    assert sorted(e.model for e in events[1:]) == sorted(f"models/m-{i}" for i in range(100))
    assert seqs == all_sequences(client)[-101:]


def test_changes_made_while_no_one_watches_arrive_on_resume(make_registry):
    reg = make_registry()
    with Client(reg.address, actor="t") as c:
        v = c.register("quiet", b"w")
        watcher = c.watch(["quiet"])
        col = Collector(watcher)
        col.wait_for(lambda x: x.of("snapshot"))  # else the snapshot may already include the change
        c.promote("quiet", v.version, "staging")
        col.wait_for(lambda x: len(x.of("event")) == 1)
        col.close()
        cursor = watcher.last_sequence
    # Every watcher is gone, and so is the server (and its in-memory tail).
    reg.stop()
    reg.stop = lambda: None  # already stopped; the fixture's teardown must not stop it again
    reg2 = make_registry()
    with Client(reg2.address, actor="t") as c:
        c.promote("quiet", v.version, "production")
        c.update_model("quiet", description="changed while nobody listened")
        c.create_model("noise")
        col = Collector(
            c.watch(["quiet"], types=["stage_changed", "model_updated"], after_sequence=cursor, snapshot=False)
        )
        col.wait_for(lambda x: len(x.of("event")) == 2)
        col.close()
        got = col.of("event")
        assert [es.EventType.Name(e.type) for e in got] == ["EVENT_TYPE_STAGE_CHANGED", "EVENT_TYPE_MODEL_UPDATED"]
        assert got[0].sequence == cursor + 1
        assert got[0].model_version == v.name and got[0].to_stage == res.STAGE_PRODUCTION
        assert not col.of("snapshot")


@pytest.mark.slow
def test_random_cuts_during_1000_stage_changes_lose_nothing(client, registry):
    """A TCP proxy cuts connections at random (100 cuts) while 1,000 stage changes happen;
    each of 10 SDK watchers ends with exactly the server's event log, in order."""
    from concurrent.futures import ThreadPoolExecutor

    host, port = registry.address.rsplit(":", 1)
    proxy = CuttingProxy(host, int(port))
    models = [f"cut-{i}" for i in range(4)]
    versions = {m: client.register(m, f"w-{m}".encode()).version for m in models}
    clients = [Client(proxy.address, actor=f"w{i}") for i in range(10)]
    cols = [
        Collector(c.watch(after_sequence=0, snapshot=False, backoff_first=0.05, backoff_max=1.0, bookmark_interval=1))
        for c in clients
    ]
    try:

        def churn(model: str) -> None:
            for i in range(250):
                client.promote(model, versions[model], "staging" if i % 2 == 0 else "archived")

        with ThreadPoolExecutor(4) as pool:
            futures = [pool.submit(churn, m) for m in models]
            while proxy.cuts < 100:
                time.sleep(random.uniform(0.005, 0.05))
                proxy.cut()
            for f in futures:
                f.result()
        log = all_sequences(client)
        assert len(log) == 8 + 1000
        for col in cols:
            col.wait_for_sequence(log[-1], timeout=90)
            assert col.sequences() == log
        assert proxy.cuts == 100
        assert sum(c.watcher.reconnects for c in cols) >= 50
    finally:
        for col in cols:
            col.close()
        for c in clients:
            c.close()
        proxy.close()


async def test_three_hundred_watchers_each_get_every_event(registry):
    """Fan-out from the hub's in-memory tail: many streams on one server all receive the
    same events in the same order."""
    with Client(registry.address, actor="t") as c:
        await asyncio.to_thread(c.create_model, "fan")
        async with grpc.aio.insecure_channel(registry.address) as ch:
            stub = es_grpc.EventServiceStub(ch)
            calls = [stub.WatchEvents(es.WatchEventsRequest(models=["fan"])) for _ in range(300)]
            snaps = await asyncio.gather(*(call.read() for call in calls))
            assert {s.snapshot.sequence for s in snaps} == {1}
            for i in range(3):
                await asyncio.to_thread(c.update_model, "fan", description=f"d{i}")

            async def three_events(call) -> list[int]:
                got = []
                while len(got) < 3:
                    msg = await call.read()
                    if msg.WhichOneof("payload") == "event":
                        got.append(msg.event.sequence)
                call.cancel()
                return got

            results = await asyncio.gather(*(three_events(call) for call in calls))
    assert results == [[2, 3, 4]] * 300


def listener_pids(database_url: str) -> list[int]:
    async def q():
        conn = await db.connect(database_url)
        try:
            rows = await conn.fetch(
                "SELECT pid FROM pg_stat_activity WHERE application_name = 'modelreg-listener'"
                " AND datname = current_database()"
            )
            return [r["pid"] for r in rows]
        finally:
            await conn.close()

    return asyncio.run(q())


def wait_until(predicate, timeout: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what} not reached in {timeout}s")


def test_events_still_arrive_after_the_listening_connection_is_killed(client, registry):
    old = wait_until(lambda: listener_pids(registry.database_url), what="a LISTEN connection")
    assert len(old) == 1
    col = Collector(client.watch())
    col.wait_for(lambda c: c.of("snapshot"))

    async def kill():
        conn = await db.connect(registry.database_url)
        try:
            return await conn.fetchval("SELECT pg_terminate_backend($1)", old[0])
        finally:
            await conn.close()

    assert asyncio.run(kill())
    client.create_model("after-kill")
    col.wait_for(lambda c: [e.model for e in c.of("event")] == ["models/after-kill"])
    new = wait_until(lambda: [p for p in listener_pids(registry.database_url) if p != old[0]], what="a new listener")
    assert len(new) == 1
    client.create_model("after-relisten")
    col.wait_for(lambda c: len(c.of("event")) == 2)
    col.close()
    assert col.sequences() == all_sequences(client)[-2:]


def test_events_carried_by_notify_and_too_big_for_it_both_arrive_as_stored(client, registry):
    """A NOTIFY carries its events when they fit in Postgres's 8000-byte payload; a promotion
    with a long reason does not fit and reaches the watcher through the table. Either way the
    watcher gets exactly what ListEvents reads from the table."""
    client.register("talk", b"one")
    client.register("talk", b"two")
    col = Collector(client.watch(models=["talk"]))
    col.wait_for(lambda c: c.of("snapshot"))
    start = col.of("snapshot")[0].sequence
    client.promote("talk", 1, "production", reason="short")
    client.promote("talk", 2, "production", reason="x" * 9000)
    stored = [e for e in list_events(client._channel) if e.sequence > start]
    col.wait_for(lambda c: len(c.of("event")) >= len(stored))
    col.close()
    assert [e.event for e in col.items if e.WhichOneof("payload") == "event"] == stored
    assert {e.reason for e in stored if e.type == es.EVENT_TYPE_STAGE_CHANGED} >= {"short", "x" * 9000}


def test_notify_payloads_are_parsed_and_a_bare_sequence_means_read_the_table():
    from datetime import datetime

    from registry_server.storage.events import EventRow
    from registry_server.storage.outbox import parse_notify_payload

    payload = (
        '[[41,"STAGE_CHANGED","m",2,"staging","production","ci","why",{"k":[1,"two"]},'
        '"2026-11-29T07:00:00.123456+00:00","vision"]]'
    )
    at = datetime(2026, 11, 29, 7, 0, 0, 123456, tzinfo=UTC)
    assert parse_notify_payload(payload) == [
        EventRow(41, "STAGE_CHANGED", "m", 2, "staging", "production", "ci", "why", {"k": [1, "two"]}, at, "vision")
    ]
    assert parse_notify_payload("42") is None
    assert parse_notify_payload("[not json") is None


def test_an_event_committed_without_notify_still_arrives(client, registry):
    """The table is the truth: an event that no NOTIFY announced is found by the slow poll."""
    col = Collector(client.watch())
    col.wait_for(lambda c: c.of("snapshot"))

    async def write_silently():
        conn = await db.connect(registry.database_url)
        try:
            async with conn.transaction():
                seq = await conn.fetchval("UPDATE event_sequence SET last = last + 1 WHERE id = 1 RETURNING last")
                await conn.execute(
                    "INSERT INTO events (sequence, type, model, actor) VALUES ($1, 'MODEL_CREATED', 'silent', 'sql')",
                    seq,
                )
            return seq
        finally:
            await conn.close()

    seq = asyncio.run(write_silently())
    col.wait_for(lambda c: c.sequences() == [seq])
    assert col.of("event")[0].model == "models/silent"
    col.close()


@pytest.mark.slow
def test_postgres_restart_under_open_streams_loses_nothing(make_registry):
    pg = PrivatePostgres()
    try:

        async def create_db():
            conn = await db.connect(pg.url())
            try:
                await conn.execute('CREATE DATABASE "restart"')
            finally:
                await conn.close()

        asyncio.run(create_db())
        reg = make_registry(database_url=pg.url("restart"))
        c = Client(reg.address, actor="t")
        v = c.register("pgr", b"w")
        cols = [
            Collector(c.watch(after_sequence=0, snapshot=False, backoff_first=0.1, backoff_max=1.0)) for _ in range(3)
        ]
        for i in range(5):
            c.promote("pgr", v.version, "staging" if i % 2 == 0 else "archived")
        for col in cols:
            col.wait_for_sequence(7)

        pg.stop()
        # While Postgres is down, a new stream is refused with UNAVAILABLE (not INTERNAL).
        ch, call = raw_watch(reg.address, es.WatchEventsRequest(after_sequence=7), timeout=30)
        err = rpc_error(call)
        ch.close()
        assert err.code() == grpc.StatusCode.UNAVAILABLE, err.details()
        assert "after_sequence=7" in err.details()
        pg.start()

        def promote_with_retry(stage):
            deadline = time.monotonic() + 30
            while True:
                try:
                    return c.promote("pgr", v.version, stage)
                except errors.Unavailable:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)

        for i in range(5, 10):
            promote_with_retry("staging" if i % 2 == 0 else "archived")
        log = all_sequences(c)
        assert log == list(range(1, 13))
        for col in cols:
            col.wait_for_sequence(12)
            assert col.sequences() == log
        # The server stayed up all along: the same address answers health checks, SERVING again
        # within a few seconds of the database's return (its next probe).
        health = health_pb2_grpc.HealthStub(c._channel)
        deadline = time.monotonic() + 10
        while health.Check(health_pb2.HealthCheckRequest()).status != health_pb2.HealthCheckResponse.SERVING:
            assert time.monotonic() < deadline, "health is not SERVING 10 s after Postgres is back"
            time.sleep(0.1)
        for col in cols:
            col.close()
        c.close()
    finally:
        pg.close()


def test_two_server_processes_deliver_each_others_changes(spawn_registry):
    _, a = spawn_registry()
    _, b = spawn_registry()
    ca, cb = Client(a, actor="a"), Client(b, actor="b")
    try:
        col_a = Collector(ca.watch())
        col_b = Collector(cb.watch())
        col_a.wait_for(lambda c: c.of("snapshot"))
        col_b.wait_for(lambda c: c.of("snapshot"))
        cb.create_model("from-b")
        col_a.wait_for(lambda c: [e.model for e in c.of("event")] == ["models/from-b"])
        ca.create_model("from-a")
        col_b.wait_for(lambda c: [e.model for e in c.of("event")] == ["models/from-b", "models/from-a"])
        col_a.wait_for(lambda c: len(c.of("event")) == 2)
        assert col_a.sequences() == col_b.sequences() == all_sequences(ca)
        col_a.close()
        col_b.close()
    finally:
        ca.close()
        cb.close()


# ---------------------------------------------------------------------- retention and resync


def test_too_old_cursor_is_resync_required_and_the_sdk_watcher_recovers(make_registry):
    reg = make_registry(event_retention=timedelta(seconds=1))
    c = Client(reg.address, actor="t")
    try:
        v = c.register("old", b"w")
        c.promote("old", v.version, "production")
        latest = all_sequences(c)[-1]
        # The retention sweep deletes everything older than 1 s but the latest event.
        wait_until(lambda: all_sequences(c) == [latest], what="retention to prune")

        ch, call = raw_watch(reg.address, es.WatchEventsRequest(after_sequence=1))
        err = rpc_error(call)
        ch.close()
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert errors.error_reason(err) == "RESYNC_REQUIRED"
        assert "older than the retained history" in err.details()

        ch, call = raw_watch(reg.address, es.WatchEventsRequest(after_sequence=latest + 100))
        err = rpc_error(call)
        ch.close()
        assert errors.error_reason(err) == "RESYNC_REQUIRED"
        assert "ahead of the registry's latest sequence" in err.details()

        # Resuming from the latest retained cursor - 1 still works.
        ch, call = raw_watch(reg.address, es.WatchEventsRequest(after_sequence=latest - 1, skip_snapshot=True))
        assert next(call).event.sequence == latest
        call.cancel()
        ch.close()

        watcher = c.watch(["old"], after_sequence=1)
        col = Collector(watcher)
        col.wait_for(lambda x: x.of("snapshot"))
        snap = col.of("snapshot")[0]
        assert watcher.resyncs == 1
        assert snap.deployments[0].stable.version_number == v.version
        assert snap.sequence == latest
        c.update_model("old", description="live after resync")
        col.wait_for(lambda x: len(x.of("event")) == 1)
        assert col.of("event")[0].sequence == latest + 1
        col.close()
    finally:
        c.close()


# ---------------------------------------------------------------------- shutdown


def test_sigterm_ends_streams_with_a_status_and_exits_zero(spawn_registry):
    proc, address = spawn_registry(MODELREG_SHUTDOWN_GRACE="3")
    with Client(address, actor="t") as c:
        c.create_model("bye")
    ch = grpc.insecure_channel(address)
    health_updates: list[int] = []
    health_call = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest())
    stream = es_grpc.EventServiceStub(ch).WatchEvents(es.WatchEventsRequest(models=["models/bye"]))
    assert next(stream).WhichOneof("payload") == "snapshot"
    assert next(health_call).status == health_pb2.HealthCheckResponse.SERVING

    def follow_health():
        try:
            for msg in health_call:
                health_updates.append(msg.status)
        except grpc.RpcError:
            pass

    t = threading.Thread(target=follow_health, daemon=True)
    t.start()
    proc.send_signal(signal.SIGTERM)
    err = rpc_error(stream)
    assert err.code() == grpc.StatusCode.UNAVAILABLE
    assert "shutting down" in err.details() and "after_sequence=1" in err.details()
    assert proc.wait(30) == 0
    t.join(10)
    assert health_pb2.HealthCheckResponse.NOT_SERVING in health_updates
    ch.close()


# ---------------------------------------------------------------------- SDK async, CLI, grpcurl


async def test_async_watcher_yields_snapshot_then_events(registry):
    with Client(registry.address, actor="t") as c:
        await asyncio.to_thread(c.create_model, "aw")
        async with AsyncWatcher(registry.address, models=["aw"]) as w:
            it = w.__aiter__()
            first = await anext(it)
            assert first.WhichOneof("payload") == "snapshot"
            assert first.snapshot.deployments[0].name == "models/aw/deployment"
            await asyncio.to_thread(c.update_model, "aw", description="x")
            second = await anext(it)
            assert second.event.type == es.EVENT_TYPE_MODEL_UPDATED
            assert w.last_sequence == second.event.sequence
            await it.aclose()


def test_cli_watch_prints_one_json_object_per_line(client, registry):
    v = client.register("cw", b"w")
    env = dict(os.environ, MODELREG_ADDRESS=registry.address)
    proc = subprocess.Popen(
        [str(BIN / "modelreg"), "watch", "cw", "--type", "stage_changed", "-o", "json", "--count", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        snap = json.loads(proc.stdout.readline())
        assert snap["snapshot"]["deployments"][0]["name"] == "models/cw/deployment"
        client.update_model("cw", description="filtered out")
        client.promote("cw", v.version, "staging")
        client.promote("cw", v.version, "production")
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    events = [x["event"] for x in lines if "event" in x]
    assert [(e["fromStage"], e["toStage"]) for e in events] == [
        ("STAGE_NONE", "STAGE_STAGING"),
        ("STAGE_STAGING", "STAGE_PRODUCTION"),
    ]
    assert events[0]["type"] == "EVENT_TYPE_STAGE_CHANGED"
    assert all("bookmark" in x for x in lines if "event" not in x)


def test_cli_watch_table_and_events_list(client, registry, cli):
    v = client.register("ct", b"w")
    client.promote("ct", v.version, "production", reason="ship it")
    latest = all_sequences(client)[-1]
    out = cli("watch", "ct", "--after-sequence", "0", "--count", str(latest)).stdout
    assert f"snapshot at sequence {latest}" in out
    assert "production=v1" in out
    assert "STAGE_CHANGED" in out and "models/ct v1 none -> production" in out and "ship it" in out
    listed = json.loads(cli("events", "ct", "-o", "json").stdout)
    assert [e["type"] for e in listed["events"]][:3] == [
        "EVENT_TYPE_MODEL_CREATED",
        "EVENT_TYPE_VERSION_READY",
        "EVENT_TYPE_STAGE_CHANGED",
    ]
    assert [e["sequence"] for e in listed["events"]] == [str(i) for i in range(1, latest + 1)]
    bad = cli("watch", "--type", "exploded", check=False)
    assert bad.returncode == 2 and "unknown event type" in bad.stderr


def test_cli_watch_says_it_is_reconnecting_when_the_registry_is_down():
    from conftest import free_port

    env = dict(os.environ, MODELREG_ADDRESS=f"127.0.0.1:{free_port()}")
    proc = subprocess.Popen(
        [str(BIN / "modelreg"), "watch"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        line = proc.stderr.readline()
    finally:
        proc.kill()
        proc.communicate(timeout=30)
    assert "watch interrupted (UNAVAILABLE" in line and "reconnecting in" in line


def test_grpcurl_receives_a_snapshot(client, registry):
    v = client.register("gc", b"w")
    client.promote("gc", v.version, "production")
    proc = subprocess.run(
        [
            str(BIN / "grpcurl"),
            "-plaintext",
            "-max-time",
            "3",
            "-d",
            '{"models": ["models/gc"]}',
            registry.address,
            "modelreg.v1.EventService/WatchEvents",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    first = json.loads(proc.stdout.split("\n}\n")[0] + "\n}")
    deployment = first["snapshot"]["deployments"][0]
    assert deployment["name"] == "models/gc/deployment"
    assert {k: deployment["stable"][k] for k in ("version", "version_number", "sha256")} == {
        "version": v.name,
        "version_number": str(v.version),
        "sha256": v.artifact.sha256,
    }
    assert "bookmark" in proc.stdout  # the test server's bookmark interval is 1 s
