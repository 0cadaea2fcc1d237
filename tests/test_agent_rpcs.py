"""What agents ask the registry while a change rolls out: the event stream carries the whole
deployment, so an agent's calls are the stream, its status reports and the download of the
new artifact, and nothing else (no GetDeployment or GetModelVersion to learn what it was
just told).

A server interceptor on the real registry records every call with the caller's
`x-modelreg-actor` ("agent:<id>" for an agent); two real `modelreg agent` processes follow
one model.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import grpc
import numpy as np
import pytest
from agent_helpers import onnx_scale_model, serving_states, wait_until
from conftest import ThreadedRegistry

from modelreg import Client
from modelreg.v1 import agent_service_pb2 as ag

X = {"x": np.ones((1, 4), np.float32)}
SERVING = ag.SERVED_VERSION_STATE_SERVING
AGENTS = ("agent:a1", "agent:a2")
# Everything an agent may call: the watch, its reports, and the artifact download (a
# presigned URL when the store offers one, else the registry stream).
ALLOWED = {
    "/modelreg.v1.EventService/WatchEvents",
    "/modelreg.v1.AgentService/ReportAgentStatus",
    "/modelreg.v1.RegistryService/GetArtifactUrl",
    "/modelreg.v1.RegistryService/DownloadArtifact",
}
DOWNLOAD = {"/modelreg.v1.RegistryService/GetArtifactUrl", "/modelreg.v1.RegistryService/DownloadArtifact"}


@dataclass(frozen=True)
class Call:
    at: float  # time.monotonic() when the call arrived
    actor: str
    method: str


class CallRecorder(grpc.aio.ServerInterceptor):
    """Records every RPC the server receives (streams once, when they open)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: list[Call] = []

    async def intercept_service(self, continuation, details: grpc.HandlerCallDetails):
        actor = dict(details.invocation_metadata or ()).get("x-modelreg-actor", "")
        with self._lock:
            self._calls.append(Call(time.monotonic(), actor, details.method))
        return await continuation(details)

    def calls(self, since: float = 0.0, until: float = float("inf")) -> list[Call]:
        with self._lock:
            return [c for c in self._calls if since <= c.at <= until]


class RecordedRegistry(ThreadedRegistry):
    def __init__(self, settings, recorder: CallRecorder):
        self.recorder = recorder
        super().__init__(settings)

    async def _start(self):
        from registry_server.app import start

        return await start(self.settings, interceptors=[self.recorder])


@pytest.fixture
def recorded(database_url, tmp_path):
    from registry_server.config import Settings

    settings = Settings(
        address="127.0.0.1:0",
        database_url=database_url,
        data_dir=tmp_path / "data",
        artifacts=str(tmp_path / "artifacts"),
        bookmark_interval=1.0,
        shutdown_grace=0.5,
    )
    reg = RecordedRegistry(settings, CallRecorder())
    yield reg
    reg.stop()


def by_agent(calls: list[Call]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {a: set() for a in AGENTS}
    for c in calls:
        if c.actor in out:
            out[c.actor].add(c.method)
    return out


def serves(agent, version: int) -> bool:
    with agent.client() as c:
        return c.predict("rpc", X).model_version == f"models/rpc/versions/{version}"


def assert_only_allowed(calls: list[Call], what: str) -> dict[str, set[str]]:
    """Every agent called nothing beyond the stream, status reports and downloads."""
    methods = by_agent(calls)
    for actor, seen in methods.items():
        extra = seen - ALLOWED
        assert not extra, f"{actor} called {sorted(extra)} during {what}; an agent needs only {sorted(ALLOWED)}"
    unknown = {c.actor for c in calls} - {*AGENTS, "tester"}
    assert not unknown, f"calls from unexpected callers {unknown}: an agent call without its actor metadata?"
    return methods


def test_during_a_promotion_agents_call_only_the_stream_reports_and_the_download(recorded, agents):
    with Client(recorded.address, actor="tester") as client:
        v1 = client.register("rpc", onnx_scale_model(1.0), filename="r.onnx")
        client.promote("rpc", v1.version, "production")
        fleet = [agents(recorded.address, ["rpc"], name=n.removeprefix("agent:")) for n in AGENTS]
        for a in fleet:
            a.wait_serving()
        v2 = client.register("rpc", onnx_scale_model(2.0), filename="r.onnx")

        started = time.monotonic()
        client.promote("rpc", v2.version, "production")
        for a in fleet:
            wait_until(lambda a=a: serves(a, 2), 60, what=f"{a.address} serving v2")
        wait_until(
            lambda: all(
                by_agent(recorded.recorder.calls(since=started))[n] & {"/modelreg.v1.AgentService/ReportAgentStatus"}
                for n in AGENTS
            ),
            30,
            what="a report from each agent",
        )
        window = recorded.recorder.calls(since=started, until=time.monotonic())

    methods = assert_only_allowed(window, "the promotion")
    for actor, seen in methods.items():
        # The recorder sees the agent's unary RegistryService calls: a GetModelVersion
        # would have been caught the same way.
        assert seen & DOWNLOAD, f"{actor} never downloaded v2 (is the recorder seeing its calls?): {seen}"
    assert_only_allowed(recorded.recorder.calls(), "its whole life")


def test_during_a_canary_agents_call_only_the_stream_reports_and_the_download(recorded, agents):
    with Client(recorded.address, actor="tester") as client:
        v1 = client.register("rpc", onnx_scale_model(1.0), filename="r.onnx")
        client.promote("rpc", v1.version, "production")
        fleet = [agents(recorded.address, ["rpc"], name=n.removeprefix("agent:")) for n in AGENTS]
        for a in fleet:
            a.wait_serving()
        v2 = client.register("rpc", onnx_scale_model(2.0), filename="r.onnx")

        started = time.monotonic()
        client.set_canary("rpc", v2.version, 50)
        for a in fleet:
            wait_until(
                lambda a=a: serving_states(a, "rpc") == {1: SERVING, 2: SERVING},
                60,
                what=f"{a.address} serving stable v1 and canary v2",
            )
        canary = recorded.recorder.calls(since=started, until=time.monotonic())

        started = time.monotonic()
        client.promote_canary("rpc")
        for a in fleet:
            wait_until(lambda a=a: serving_states(a, "rpc") == {2: SERVING}, 60, what=f"{a.address} on v2 alone")
        promoted = recorded.recorder.calls(since=started, until=time.monotonic())

    methods = assert_only_allowed(canary, "the canary's start")
    for actor, seen in methods.items():
        assert seen & DOWNLOAD, f"{actor} never downloaded the canary: {seen}"
    assert_only_allowed(promoted, "the canary's promotion")
    assert_only_allowed(recorded.recorder.calls(), "its whole life")
