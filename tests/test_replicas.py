"""Three registry processes on one Postgres and one store, clients and an agent given all three
addresses (`ipv4:a,b,c`, round_robin): killing one under registrations and promotions loses
nothing, and the watcher and the agent fail over with no gap."""

from __future__ import annotations

import signal
import threading
import time
import urllib.request

import numpy as np
import pytest
from agent_helpers import onnx_scale_model, wait_until
from conftest import free_port, run_cli
from events_helpers import Collector

from modelreg import Client, errors
from modelreg.credentials import REPLICAS_SERVICE_CONFIG, channel_options
from modelreg.watch import list_events

pytestmark = [pytest.mark.timeout(120), pytest.mark.slow]


def watch_streams(metrics_port: int) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    return sum(
        float(line.split()[-1]) for line in text.splitlines() if line.startswith("modelreg_registry_watch_streams ")
    )


def test_a_target_listing_several_addresses_gets_round_robin_with_health_checks():
    assert channel_options("ipv4:127.0.0.1:1,127.0.0.1:2") == [("grpc.service_config", REPLICAS_SERVICE_CONFIG)]
    assert channel_options("127.0.0.1:1") == []
    assert channel_options("ipv4:127.0.0.1:1") == []
    own = [("grpc.service_config", "{}")]
    assert channel_options("ipv4:127.0.0.1:1,127.0.0.1:2", own) == own


def test_killing_one_of_three_replicas_under_load_loses_nothing_and_watchers_fail_over(spawn_registry, agents):
    replicas = []
    for _ in range(3):
        metrics = free_port()
        proc, address = spawn_registry(MODELREG_METRICS_ADDRESS=f"127.0.0.1:{metrics}", MODELREG_HEALTH_INTERVAL="0.2")
        replicas.append((proc, address, metrics))
    target = "ipv4:" + ",".join(address for _, address, _ in replicas)

    c = Client(target, actor="ops", timeout=10)
    versions = [c.register("served", onnx_scale_model(float(s)), format="onnx").version for s in (1, 2, 3)]
    c.promote("served", versions[0], "production")
    watcher = Collector(c.watch(["served", "load"], after_sequence=0, snapshot=False, backoff_first=0.1))
    # The replica the watcher's stream is on: the one to kill.
    victim = wait_until(
        lambda: (
            [r for r in replicas if watch_streams(r[2]) == 1] if sum(watch_streams(r[2]) for r in replicas) == 1 else []
        ),
        timeout=15,
        what="the watcher's stream to open",
    )[0]
    agent = agents(target, ["served"])
    agent.wait_serving(60)
    # The CLI takes the same target.
    assert "served" in run_cli("models", "list", address=target).stdout

    acknowledged: dict[str, int] = {}
    failures: list[BaseException] = []
    stop = threading.Event()

    def with_retries(fn, applied=lambda e: False):
        """What a client does with UNAVAILABLE: retry (a create with the same request id). A
        retry refused because the lost attempt was applied (`applied`) counts as done."""
        retried = False
        for _ in range(50):
            try:
                return fn()
            except errors.Unavailable:
                retried = True
                time.sleep(0.1)
            except errors.FailedPrecondition as e:
                if retried and applied(e):
                    return None
                raise
        raise AssertionError("still UNAVAILABLE after 50 tries")

    def register() -> None:
        try:
            for i in range(40):
                rid = f"load-{i}"
                acknowledged[rid] = with_retries(
                    lambda rid=rid: c.register("load", rid.encode(), request_id=rid)
                ).version
        except BaseException as e:  # noqa: BLE001 - reported below
            failures.append(e)

    promoted: list[int] = []

    def promote() -> None:
        try:
            i = 1  # versions[0] is in production already
            while not stop.is_set():
                v = versions[i % 3]
                with_retries(
                    lambda v=v: c.promote("served", v, "production"),
                    applied=lambda e: "already in stage 'production'" in e.message,
                )
                promoted.append(v)
                i += 1
                time.sleep(0.05)
        except BaseException as e:  # noqa: BLE001
            failures.append(e)

    threads = [threading.Thread(target=register), threading.Thread(target=promote)]
    for t in threads:
        t.start()
    wait_until(lambda: len(acknowledged) >= 15, timeout=30, what="registrations under way")
    assert watch_streams(victim[2]) >= 1
    victim[0].send_signal(signal.SIGKILL)
    victim[0].wait(10)
    threads[0].join(60)
    stop.set()
    threads[1].join(30)
    assert not failures, failures
    final = promoted[-1]

    # Nothing acknowledged is lost, nothing duplicated: versions 1..40, one per request id.
    assert sorted(acknowledged.values()) == list(range(1, 41))
    assert sorted(v.version for v in c.list_versions("load")) == list(range(1, 41))
    # Every event exactly once, in order, across the failover.
    latest = max(e.sequence for e in list_events(c._channel, models=["served", "load"]))
    watcher.wait_for(lambda w: w.watcher.last_sequence is not None and w.watcher.last_sequence >= latest, 30)
    expected = [e.sequence for e in list_events(c._channel, models=["served", "load"])]
    assert watcher.sequences() == expected
    assert watcher.watcher.reconnects >= 1  # it did fail over
    # The agent converged to the last promotion through the surviving replicas.
    x = {"x": np.ones((1, 4), np.float32)}
    with agent.client() as inference:
        wait_until(
            lambda: inference.predict("served", x).model_version == f"models/served/versions/{final}",
            timeout=30,
            what="the agent to serve the last production version",
        )
    c.close()
