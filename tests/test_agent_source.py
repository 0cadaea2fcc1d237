"""The agent's source as a translator over the SDK's AsyncWatcher: snapshot and
DEPLOYMENT_CHANGED in, `Desired` out, cursor and desired state persisted.

A unit test of that translation: the gRPC server is real (127.0.0.1, port 0) but its
EventService is a script of WatchEvents answers, so each case pins one message sequence
(a replay the snapshot covers, a deleted model, RESYNC_REQUIRED, a dropped stream). The
end-to-end behaviour against the real registry is in the other test_agent_* modules.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import grpc
import pytest
from google.protobuf import struct_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from modelreg.v1 import event_service_pb2 as ev
from modelreg.v1 import event_service_pb2_grpc as ev_grpc
from modelreg.v1 import resources_pb2 as res
from serving_agent.cache import StateFile
from serving_agent.source import RegistrySource, desired_from_deployment, spec_from_ref
from serving_agent.spec import Desired, VersionSpec

SHA = {n: f"{n:x}" * 64 for n in range(1, 10)}


def ref(model: str, n: int, fmt: int = res.ARTIFACT_FORMAT_ONNX, **config) -> res.ArtifactRef:
    r = res.ArtifactRef(
        version=f"models/{model}/versions/{n}",
        version_number=n,
        sha256=SHA[n][:64],
        size_bytes=100 * n,
        format=fmt,
        filename=f"{model}_v{n}.onnx",
    )
    if config:
        r.config.CopyFrom(struct_pb2.Struct())
        r.config.update(config)
    return r


def deployment(
    model: str, stable: int | None, canary: int | None = None, weight: int = 0, revision: int = 1
) -> res.Deployment:
    d = res.Deployment(name=f"models/{model}/deployment", canary_weight=weight, revision=revision)
    if stable:
        d.stable.CopyFrom(ref(model, stable))
    if canary:
        d.canary.CopyFrom(ref(model, canary))
    return d


def spec(model: str, n: int) -> VersionSpec:
    return spec_from_ref(model, ref(model, n))


def snapshot(sequence: int, *deployments: res.Deployment) -> ev.WatchEventsResponse:
    return ev.WatchEventsResponse(snapshot=ev.Snapshot(sequence=sequence, deployments=list(deployments)))


def changed(sequence: int, d: res.Deployment) -> ev.WatchEventsResponse:
    model = d.name.removesuffix("/deployment")
    return ev.WatchEventsResponse(
        event=ev.Event(sequence=sequence, type=ev.EVENT_TYPE_DEPLOYMENT_CHANGED, model=model, deployment=d)
    )


class Fail:
    """A script step: end the stream with this status (and ErrorInfo reason)."""

    def __init__(self, code: grpc.StatusCode, message: str, reason: str = ""):
        self.code, self.message, self.reason = code, message, reason


class ScriptedEvents(ev_grpc.EventServiceServicer):
    """Answers the n-th WatchEvents call with the n-th script; past the end, holds the
    stream open. Records every request."""

    def __init__(self, scripts: list[list]):
        self.scripts = scripts
        self.requests: list[ev.WatchEventsRequest] = []

    async def WatchEvents(self, request, context):
        self.requests.append(request)
        script = self.scripts[len(self.requests) - 1] if len(self.requests) <= len(self.scripts) else []
        for step in script:
            if isinstance(step, Fail):
                st = status_pb2.Status(code=step.code.value[0], message=step.message)
                if step.reason:
                    st.details.add().Pack(error_details_pb2.ErrorInfo(reason=step.reason, domain="modelreg"))
                await context.abort_with_status(rpc_status.to_status(st))
            yield step
        await asyncio.Event().wait()


@pytest.fixture
async def scripted():
    servers: list[grpc.aio.Server] = []
    channels: list[grpc.aio.Channel] = []

    async def start(scripts: list[list]) -> tuple[ScriptedEvents, grpc.aio.Channel]:
        server = grpc.aio.server()
        events = ScriptedEvents(scripts)
        ev_grpc.add_EventServiceServicer_to_server(events, server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        channels.append(channel)
        return events, channel

    yield start
    for c in channels:
        await c.close()
    for s in servers:
        await s.stop(0)


async def until(predicate, timeout: float = 10.0, what: str = "condition"):
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def run_source(source: RegistrySource, predicate, what: str) -> None:
    task = asyncio.create_task(source.run())
    try:
        await until(predicate, what=what)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


def saved(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def test_an_artifact_ref_becomes_the_version_spec_the_fetcher_and_loaders_use():
    r = ref("det", 7, res.ARTIFACT_FORMAT_ULTRALYTICS_PT, imgsz=640)
    s = spec_from_ref("det", r)
    assert s == VersionSpec(
        model="det", version=7, sha256=SHA[7], format="ultralytics_pt", size_bytes=700, filename="det_v7.onnx"
    )
    assert s.config == {"imgsz": 640} and s.name == "models/det/versions/7"
    r.version_number = 0  # the name alone is enough
    assert spec_from_ref("det", r).version == 7
    # A canary's weight only counts with a canary; an empty deployment serves nothing.
    assert desired_from_deployment("m", deployment("m", 1, 2, 30)) == Desired(spec("m", 1), spec("m", 2), 30)
    assert desired_from_deployment("m", deployment("m", 1, None, 30)) == Desired(spec("m", 1))
    assert desired_from_deployment("m", deployment("m", None)) == Desired()


async def test_source_declares_from_snapshot_and_deployment_events_alone(scripted, tmp_path):
    state_path = tmp_path / "state.json"
    state_path.write_text(
        json.dumps(
            {
                "sequence": 5,
                "models": {"fraud": Desired(spec("fraud", 2)).to_dict(), "gone": Desired(spec("gone", 1)).to_dict()},
            }
        )
    )
    events, channel = await scripted(
        [
            [
                # "gone" was deleted while the agent was away: the snapshot has no entry for it.
                snapshot(9, deployment("fraud", 3, 4, 30)),
                changed(7, deployment("fraud", 2)),  # replayed after the cursor, older than the snapshot
                changed(10, deployment("fraud", 4, revision=3)),  # the canary promoted
                changed(11, deployment("other", 1)),  # a model this agent does not follow
                ev.WatchEventsResponse(
                    event=ev.Event(sequence=12, type=ev.EVENT_TYPE_DEPLOYMENT_CHANGED, model="models/fraud")
                ),  # carries nothing: ignored
                ev.WatchEventsResponse(bookmark=ev.Bookmark(sequence=13)),
            ]
        ]
    )
    declared: list[tuple[str, Desired]] = []
    source = RegistrySource(
        channel, ["fraud", "gone"], StateFile(state_path), lambda m, d: declared.append((m, d)), actor="agent:a1"
    )
    source.restore()  # serves from state.json before the registry answers
    assert declared == [("fraud", Desired(spec("fraud", 2))), ("gone", Desired(spec("gone", 1)))]

    await run_source(source, lambda: saved(state_path).get("sequence") == 13, "the bookmark persisted")

    assert declared[2:] == [
        ("fraud", Desired(spec("fraud", 3), spec("fraud", 4), 30)),
        ("gone", Desired()),  # absent from the snapshot: unloaded
        ("fraud", Desired(spec("fraud", 4))),
    ]
    (req,) = events.requests
    assert (req.after_sequence, req.skip_snapshot) == (5, False)
    assert list(req.models) == ["models/fraud", "models/gone"]
    assert set(req.types) == {ev.EVENT_TYPE_DEPLOYMENT_CHANGED, ev.EVENT_TYPE_MODEL_DELETED}
    state = saved(state_path)
    assert state["models"]["fraud"]["stable"]["sha256"] == SHA[4] and state["models"]["fraud"]["canary"] is None
    assert state["models"]["gone"] == Desired().to_dict()

    # A restarted agent declares what state.json now holds.
    again: list[tuple[str, Desired]] = []
    RegistrySource(channel, ["fraud", "gone"], StateFile(state_path), lambda m, d: again.append((m, d))).restore()
    assert again == [("fraud", Desired(spec("fraud", 4))), ("gone", Desired())]


async def test_model_deleted_event_unloads_it(scripted, tmp_path):
    _, channel = await scripted(
        [
            [
                snapshot(3, deployment("m", 1)),
                ev.WatchEventsResponse(event=ev.Event(sequence=4, type=ev.EVENT_TYPE_MODEL_DELETED, model="models/m")),
            ]
        ]
    )
    declared: list[tuple[str, Desired]] = []
    source = RegistrySource(channel, ["m"], StateFile(tmp_path / "state.json"), lambda m, d: declared.append((m, d)))
    await run_source(source, lambda: len(declared) == 2, "the deletion declared")
    assert declared == [("m", Desired(spec("m", 1))), ("m", Desired())]


async def test_resync_and_a_lost_stream_end_in_a_fresh_snapshot_logged_once_each(scripted, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="modelreg.agent.source")
    state_path = tmp_path / "state.json"
    state_path.write_text(json.dumps({"sequence": 999, "models": {}}))
    events, channel = await scripted(
        [
            [Fail(grpc.StatusCode.FAILED_PRECONDITION, "after_sequence=999 is ahead", "RESYNC_REQUIRED")],
            [snapshot(3, deployment("m", 1)), Fail(grpc.StatusCode.UNAVAILABLE, "going away")],
            [Fail(grpc.StatusCode.UNAVAILABLE, "going away")],
            [Fail(grpc.StatusCode.UNAVAILABLE, "going away")],
            [snapshot(6, deployment("m", 2))],
        ]
    )
    declared: list[tuple[str, Desired]] = []
    source = RegistrySource(
        channel,
        ["m"],
        StateFile(state_path),
        lambda m, d: declared.append((m, d)),
        backoff_first=0.01,
        backoff_max=0.02,
    )
    await run_source(
        source, lambda: saved(state_path).get("sequence") == 6 and source.connected, "the second snapshot persisted"
    )

    assert declared == [("m", Desired(spec("m", 1))), ("m", Desired(spec("m", 2)))]
    assert saved(state_path)["models"]["m"]["stable"]["version"] == 2
    cursors = [r.after_sequence if r.HasField("after_sequence") else None for r in events.requests]
    assert cursors == [999, None, 3, 3, 3], "the resync drops the cursor, a reconnect resumes after the snapshot"
    assert not any(r.skip_snapshot for r in events.requests), "every connection re-reads the desired state"
    lines = [r.getMessage() for r in caplog.records]
    assert len([x for x in lines if "RESYNC_REQUIRED" in x]) == 1
    assert len([x for x in lines if "registry unreachable (UNAVAILABLE: going away)" in x]) == 1, lines
    assert [x for x in lines if x.startswith("watching the registry")] == [
        "watching the registry at sequence 3",
        "watching the registry at sequence 6",
    ]
    assert not any(r.exc_info for r in caplog.records), "state changes are log lines, not tracebacks"
    assert source.watcher.resyncs == 1 and source.watcher.reconnects == 4
