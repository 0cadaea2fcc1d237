"""Bad input, property-based: every RPC of every registry service, with requests generated
from the proto descriptors (tests/fuzz/), against a real `modelreg server` process on a real
Postgres, with auth on (as a global admin, so cases reach the use cases) and with auth off.
Then HTTP/2 below gRPC: socket garbage, a bad preface, a half-sent frame, a gRPC message
whose length prefix lies, and connections dropped mid-upload.

The invariants (tests/fuzz/runner.py): never INTERNAL, UNKNOWN or UNAVAILABLE; a refusal has a
message that reaches the caller; a refused call writes nothing (no row, no blob, no temp
upload); the server keeps answering its health check and a real RPC.

`make test` runs MODELREG_FUZZ_CASES=3 generated cases per RPC (plus the fixed boundary
cases) with the fixed seed MODELREG_FUZZ_SEED; `make fuzz` runs 5,000 per RPC and prints the
count per RPC and the totals.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator

import grpc
import pytest
from fuzz import runner, wire
from fuzz.runner import Report
from fuzz.world import World, methods, rpc_id, running_worlds
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import seed as hypothesis_seed
from hypothesis import strategies as st

CASES = int(os.environ.get("MODELREG_FUZZ_CASES", "3"))
SEED = int(os.environ.get("MODELREG_FUZZ_SEED", "20261201"))
LONG = "MODELREG_FUZZ_CASES" in os.environ  # `make fuzz`: every boundary case for every RPC
# Auth off: a fifth of the cases (the use cases are the same; the metadata differs).
OPEN_CASES = max(1, CASES // 5)

pytestmark = pytest.mark.timeout(120 + int(CASES * 0.5))


@pytest.fixture(scope="module")
def report(request) -> Iterator[Report]:
    r = Report()
    yield r
    terminal = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if terminal is None or capture is None:
        return
    lines = [r.table()] if LONG else []
    lines += [f"fuzz finding x{n}: {cause}" for cause, n in r.causes().most_common()]
    lines.append(
        f"fuzz: {sum(r.cases.values())} cases, {len(r.findings)} findings, "
        f"seed {SEED} (MODELREG_FUZZ_SEED), {CASES} generated cases per RPC (MODELREG_FUZZ_CASES)"
    )
    with capture.global_and_fixture_disabled():
        terminal.write_line("")
        for line in lines:
            terminal.write_line(line)


@pytest.fixture(scope="module")
def worlds(postgres, tmp_path_factory) -> Iterator[dict[str, World]]:
    """Two servers, started together: auth on (the fuzzer is a global admin) and auth off."""
    from conftest import _admin

    names = [f"t_{uuid.uuid4().hex[:12]}" for _ in range(2)]
    for name in names:
        _admin(postgres, f'CREATE DATABASE "{name}"')
    specs = [
        (postgres.url_for(n), tmp_path_factory.mktemp("fuzz"), auth)
        for n, auth in zip(names, (True, False), strict=True)
    ]
    try:
        with running_worlds(specs) as (secure, open_):
            yield {"secure": secure, "open": open_}
    finally:
        for name in names:
            _admin(postgres, f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def secure_world(worlds) -> World:
    return worlds["secure"]


@pytest.fixture(scope="module")
def open_world(worlds) -> World:
    return worlds["open"]


def _no_new_findings(report: Report, before: int) -> None:
    new = report.findings[before:]
    if new:
        lines = [f"{f.rpc} [{f.case.label}] {f.problem[:500]}" for f in new[:20]]
        pytest.fail(f"{len(new)} findings:\n" + "\n".join(lines))


@pytest.mark.parametrize("method", methods(), ids=rpc_id)
def test_every_rpc_answers_bad_input_with_a_canonical_status_auth_on(secure_world, report, method):
    before = len(report.findings)
    runner.run_rpc(secure_world, method, CASES, SEED, report, huge=LONG or runner.stores_text(method))
    assert report.cases[rpc_id(method)] > 0  # every RPC is called, whatever its message
    _no_new_findings(report, before)


@pytest.mark.parametrize("method", methods(), ids=rpc_id)
def test_every_rpc_answers_bad_input_with_a_canonical_status_auth_off(open_world, report, method):
    before = len(report.findings)
    runner.run_rpc(open_world, method, OPEN_CASES, SEED, report, huge=LONG, boundary=LONG)
    _no_new_findings(report, before)


# ---------------------------------------------------------------- below gRPC


def _still_serving(world: World) -> None:
    assert world.healthy() == ""


def test_socket_garbage_and_bad_prefaces_leave_the_server_serving(secure_world, report):
    """Random bytes, with and without a good preface in front; an HTTP/1.1 request; a TLS
    ClientHello; a wrong preface; a HEADERS frame cut off after 9 of 1,000 bytes."""
    fixed = [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"PRI * HTTP/1.1\r\n\r\nSM\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n",
        bytes.fromhex("160301002e010000"),  # a TLS ClientHello's start
        wire.PREFACE + wire.frame(0x4, 0, 0, b"\x00" * 5),  # SETTINGS of a bad length
        wire.PREFACE + wire.frame(0x0, 0, 1, b"data on a stream never opened"),
        wire.PREFACE + wire.frame(0x8, 0, 0, b"\x00\x00\x00\x00"),  # WINDOW_UPDATE of 0
    ]
    for data in fixed:
        wire.send_raw(secure_world.address, data)
        report.record("HTTP/2.garbage", grpc.StatusCode.OK)
    wire.half_frame(secure_world.address)
    report.record("HTTP/2.garbage", grpc.StatusCode.OK)

    @settings(
        max_examples=max(10, CASES // 10),
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @hypothesis_seed(SEED)
    @given(st.booleans(), st.binary(max_size=4096), st.booleans())
    def garbage(with_preface: bool, data: bytes, abrupt: bool) -> None:
        wire.send_raw(secure_world.address, (wire.PREFACE if with_preface else b"") + data, 0.3, abrupt)
        report.record("HTTP/2.garbage", grpc.StatusCode.OK)

    garbage()
    _still_serving(secure_world)


def _upload(world: World) -> tuple[str, list[bytes]]:
    """RegisterModelVersion's path and a valid stream of it for models/fz-a, 200 KB declared."""
    from modelreg.v1 import registry_service_pb2 as rs

    method = next(m for m in methods() if m.name == "RegisterModelVersion")
    data = os.urandom(200_000)
    import hashlib

    header = rs.RegisterModelVersionHeader(
        parent="models/fz-a", filename="m.onnx", size_bytes=len(data), sha256=hashlib.sha256(data).hexdigest()
    )
    msgs = [rs.RegisterModelVersionRequest(header=header).SerializeToString()]
    msgs += [
        rs.RegisterModelVersionRequest(chunk=data[i : i + 30_000]).SerializeToString() for i in range(0, 60_000, 30_000)
    ]
    return wire.path_of(method), msgs


def _settles(world: World, before: tuple[int, ...], timeout: float = 10) -> tuple[int, ...]:
    """The counts once the server has cleaned up (a dropped upload ends asynchronously)."""
    deadline = time.monotonic() + timeout
    counts = world.counts()
    while counts != before and time.monotonic() < deadline:
        time.sleep(0.1)
        counts = world.counts()
    return counts


def test_a_message_whose_length_prefix_lies_is_refused_and_writes_nothing(secure_world, report):
    path, msgs = _upload(secure_world)
    before = secure_world.counts()
    answer = wire.grpc_request(secure_world.address, path, msgs[:2], secure_world.metadata, lie=1000)
    report.record("HTTP/2.truncated-message", grpc.StatusCode(0) if not answer else grpc.StatusCode.OK)
    status = answer.get("grpc-status")
    assert status is not None and status != "0", f"a truncated message was accepted: {answer}"
    assert _settles(secure_world, before) == before
    _still_serving(secure_world)


@pytest.mark.parametrize("how", ["tcp-reset", "client-cancel", "half-open"])
def test_a_dropped_upload_leaves_no_version_blob_or_temp_file(secure_world, report, how):
    """Disconnects mid-stream: a TCP reset after part of the bytes, a client cancel (RST_STREAM)
    after the header and a chunk, a stream never half-closed (the client stops sending)."""
    path, msgs = _upload(secure_world)
    before = secure_world.counts()
    if how == "tcp-reset":
        wire.grpc_request(secure_world.address, path, msgs, secure_world.metadata, end=False, abrupt=True)
    elif how == "client-cancel":
        method = next(m for m in methods() if m.name == "RegisterModelVersion")
        wire.cancel_mid_upload(secure_world.channel, method, msgs, secure_world.metadata)
    else:
        wire.grpc_request(secure_world.address, path, msgs, secure_world.metadata, end=False, timeout=0.5)
    report.record(f"HTTP/2.dropped-upload:{how}", grpc.StatusCode.CANCELLED)
    assert _settles(secure_world, before) == before
    _still_serving(secure_world)
