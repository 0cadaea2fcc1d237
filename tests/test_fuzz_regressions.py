"""One focused test per cause of INTERNAL or UNKNOWN that `make fuzz` found (issue 13), each
asserting what the caller now sees, and the NaN/Infinity decision: metrics, metric history
points and JSON config values must be finite numbers, refused with INVALID_ARGUMENT naming
the key, and a refused registration leaves no version and no blob.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import grpc
import pytest
from auth_helpers import bearer
from google.protobuf import struct_pb2

from modelreg.v1 import agent_service_pb2 as ag
from modelreg.v1 import agent_service_pb2_grpc as ag_grpc
from modelreg.v1 import auth_service_pb2 as au
from modelreg.v1 import governance_service_pb2 as gs
from modelreg.v1 import governance_service_pb2_grpc as gs_grpc
from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import registry_service_pb2_grpc as rs_grpc
from modelreg.v1 import resources_pb2 as res

pytestmark = pytest.mark.timeout(60)


def _identity(b: bytes) -> bytes:
    return b


@pytest.fixture
def channel(registry):
    ch = grpc.insecure_channel(registry.address)
    yield ch
    ch.close()


@pytest.fixture
def stub(channel) -> rs_grpc.RegistryServiceStub:
    return rs_grpc.RegistryServiceStub(channel)


def _refusal(fn, *args, **kw) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        fn(*args, timeout=10, **kw)
    return info.value


def _stream(header: rs.RegisterModelVersionHeader, data: bytes) -> list[rs.RegisterModelVersionRequest]:
    header.size_bytes = len(data)
    header.sha256 = hashlib.sha256(data).hexdigest()
    return [rs.RegisterModelVersionRequest(header=header), rs.RegisterModelVersionRequest(chunk=data)]


def _nothing_stored(stub, registry, model: str) -> None:
    """No version of `model` (nor the model, where the registration would have created it)
    and no blob."""
    try:
        got = stub.ListModelVersions(rs.ListModelVersionsRequest(parent=f"models/{model}"), timeout=10)
        assert list(got.model_versions) == []
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.NOT_FOUND
    blobs = Path(registry.settings.artifacts) / "sha256"
    assert not blobs.exists() or not any(p.is_file() for p in blobs.rglob("*"))


# ---------------------------------------------------------------- cause 1: undecodable requests


def test_bytes_that_are_not_the_request_message_are_invalid_argument_naming_its_type(channel):
    """Was UNKNOWN ('Unexpected <class DecodeError>'), from grpc itself, for every unary RPC."""
    call = channel.unary_unary(
        "/modelreg.v1.RegistryService/GetModel", request_serializer=_identity, response_deserializer=_identity
    )
    err = _refusal(call, b"\xff\xff\xff\xff")
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid modelreg.v1.GetModelRequest" in err.details()


def test_a_string_field_that_is_not_utf8_is_invalid_argument(channel):
    call = channel.unary_unary(
        "/modelreg.v1.RegistryService/GetModel", request_serializer=_identity, response_deserializer=_identity
    )
    raw = rs.GetModelRequest(name="abcd").SerializeToString().replace(b"abcd", b"\xff\xfe\xc3\x28")
    err = _refusal(call, raw)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "UTF-8" in err.details()


def test_an_undecodable_message_inside_the_upload_stream_is_invalid_argument_and_stores_nothing(
    channel, stub, registry
):
    """Was INTERNAL ('internal error (a bug in modelreg): DecodeError') mid-stream."""
    stub.CreateModel(rs.CreateModelRequest(model=res.Model(name="models/m")), timeout=10)
    header = rs.RegisterModelVersionRequest(
        header=rs.RegisterModelVersionHeader(parent="models/m", filename="m.onnx", size_bytes=8)
    )
    call = channel.stream_unary(
        "/modelreg.v1.RegistryService/RegisterModelVersion",
        request_serializer=_identity,
        response_deserializer=_identity,
    )
    err = _refusal(call, iter([header.SerializeToString(), b"\xff\xff\xff\xff"]))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "modelreg.v1.RegisterModelVersionRequest" in err.details()
    _nothing_stored(stub, registry, "m")


def test_a_config_nested_past_protobufs_limit_is_invalid_argument(channel):
    """A Struct 200 levels deep cannot be parsed (protobuf stops at 100): INVALID_ARGUMENT."""
    from fuzz import wire

    body = wire.with_field(b"", 1, wire.with_field(b"", 5, wire.deep_struct(200)))  # model.default_config
    call = channel.unary_unary(
        "/modelreg.v1.RegistryService/CreateModel", request_serializer=_identity, response_deserializer=_identity
    )
    err = _refusal(call, body)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "nesting" in err.details()


# ---------------------------------------------------------------- cause 2: messages past the trailer limit


def test_a_refusal_quoting_a_100_kb_name_reaches_the_caller_shortened(stub):
    """Was RESOURCE_EXHAUSTED 'Stream removed (received metadata size exceeds hard limit)':
    the message quoted the whole name and the client dropped the call's trailers."""
    err = _refusal(stub.GetModel, rs.GetModelRequest(name="z" * 100_000))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.details().startswith("invalid model id 'zzz")
    assert "characters cut" in err.details()
    assert "for example 'fraud-detector'" in err.details()  # the tail says what to change
    assert len(err.details()) <= 2100


# ---------------------------------------------------------------- cause 3: NUL characters


def test_a_nul_character_in_a_text_field_is_invalid_argument_and_writes_nothing(stub):
    """Was INTERNAL: CharacterNotInRepertoireError from Postgres, which stores no NUL."""
    err = _refusal(stub.ListModels, rs.ListModelsRequest(project="a\x00b"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "NUL character" in err.details()
    err = _refusal(stub.CreateModel, rs.CreateModelRequest(model=res.Model(name="models/m", description="a\x00b")))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert list(stub.ListModels(rs.ListModelsRequest(), timeout=10).models) == []


# ---------------------------------------------------------------- cause 4: token ttl overflow


@pytest.mark.parametrize("seconds", [10**12, 2**62])
def test_a_token_ttl_past_100_years_is_invalid_argument(secure_registry, seconds):
    """Was INTERNAL: OverflowError('date value out of range') computing the expiry."""
    req = au.CreateTokenRequest(token_id="t-long", principal="admin")
    req.ttl.seconds = seconds
    err = _refusal(secure_registry.auth.CreateToken, req, metadata=bearer(secure_registry.admin_token))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "ttl" in err.details()
    tokens = secure_registry.admin("ListTokens", au.ListTokensRequest(principal="admin")).tokens
    assert "t-long" not in {t.token_id for t in tokens}


def test_a_token_ttl_of_a_year_still_works(secure_registry):
    req = au.CreateTokenRequest(token_id="t-year", principal="admin")
    req.ttl.seconds = 365 * 86400
    assert secure_registry.admin("CreateToken", req).token


# ---------------------------------------------------------------- cause 5: version numbers


@pytest.mark.parametrize("version", ["9223372036854775808", "99999999999999999999", "\u00b2", "\u0661"])
def test_a_version_past_int64_or_in_non_ascii_digits_is_invalid_argument(stub, version):
    """Was INTERNAL: DataError (value out of int64 range) from asyncpg, or ValueError from
    int('²') after str.isdigit() had said yes."""
    stub.CreateModel(rs.CreateModelRequest(model=res.Model(name="models/m")), timeout=10)
    for call, req in (
        (stub.GetModelVersion, rs.GetModelVersionRequest(name=f"models/m/versions/{version}")),
        (stub.DeleteModelVersion, rs.DeleteModelVersionRequest(name=f"models/m/versions/{version}")),
    ):
        err = _refusal(call, req)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
        assert repr(version) in err.details()


def test_a_forged_page_token_with_a_huge_key_is_invalid_argument(stub):
    import base64

    stub.CreateModel(rs.CreateModelRequest(model=res.Model(name="models/m")), timeout=10)
    token = base64.urlsafe_b64encode(b"versions:99999999999999999999").decode().rstrip("=")
    err = _refusal(stub.ListModelVersions, rs.ListModelVersionsRequest(parent="models/m", page_token=token))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in err.details()


# ---------------------------------------------------------------- cause 6: gate values stored as JSON


@pytest.mark.parametrize("kind", ["GATE_CHECK_TYPE_REQUIRE_CARD", "GATE_CHECK_TYPE_APPROVALS"])
def test_a_gate_check_with_a_non_finite_value_is_invalid_argument(channel, stub, kind):
    """Was INTERNAL: the NaN of a require-card check reached Postgres' jsonb (and int(nan) for
    approvals)."""
    from modelreg.v1 import governance_pb2 as gv

    stub.CreateModel(rs.CreateModelRequest(model=res.Model(name="models/m")), timeout=10)
    req = gs.SetGatePolicyRequest(model="models/m")
    req.policy.target = "production"
    req.policy.checks.add(type=gv.GateCheckType.Value(kind), value=math.nan)
    err = _refusal(gs_grpc.GovernanceServiceStub(channel).SetGatePolicy, req)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "policy.checks[0]" in err.details() and "finite" in err.details()


@pytest.mark.parametrize("ratio", [math.nan, math.inf])
def test_a_canary_policy_with_a_non_finite_latency_ratio_is_invalid_argument(channel, stub, ratio):
    """Was INTERNAL (make fuzz, SetCanaryPolicy): NaN passed `max_latency_ratio < 0` and
    reached Postgres' jsonb."""
    from modelreg.v1 import deployment_service_pb2 as ds
    from modelreg.v1 import deployment_service_pb2_grpc as ds_grpc

    stub.CreateModel(rs.CreateModelRequest(model=res.Model(name="models/m")), timeout=10)
    req = ds.SetCanaryPolicyRequest(name="models/m/deployment")
    req.policy.max_error_rate = 0.05
    req.policy.max_latency_ratio = ratio
    err = _refusal(ds_grpc.DeploymentServiceStub(channel).SetCanaryPolicy, req)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "max_latency_ratio" in err.details()


# ---------------------------------------------------------------- cause 7: timestamps out of range


def test_an_agent_report_with_a_timestamp_out_of_range_is_invalid_argument(channel):
    """Was INTERNAL: ValueError('Timestamp is not valid') from ToDatetime."""
    req = ag.ReportAgentStatusRequest()
    req.agent.agent_id = "node-1"
    req.agent.start_time.seconds = 2**40
    err = _refusal(ag_grpc.AgentServiceStub(channel).ReportAgentStatus, req)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "agent.start_time is out of range" in err.details()


# ---------------------------------------------------------------- NaN and Infinity


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_non_finite_metric_is_refused_naming_the_key_and_stores_nothing(stub, registry, value):
    header = rs.RegisterModelVersionHeader(parent="models/m", create_model=True, filename="m.onnx")
    header.metrics["accuracy"] = 0.9
    header.metrics["val_loss"] = value
    err = _refusal(stub.RegisterModelVersion, iter(_stream(header, b"weights")))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'val_loss'" in err.details() and "finite" in err.details()
    _nothing_stored(stub, registry, "m")


def test_a_non_finite_metric_history_point_is_refused_naming_the_key_and_step(stub, registry):
    """Was INTERNAL: the NaN reached Postgres' jsonb, which has no NaN."""
    header = rs.RegisterModelVersionHeader(parent="models/m", create_model=True, filename="m.onnx")
    header.metric_history["loss"].points.add(step=1, value=0.5)
    header.metric_history["loss"].points.add(step=2, value=math.nan)
    err = _refusal(stub.RegisterModelVersion, iter(_stream(header, b"weights")))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'loss'" in err.details() and "step 2" in err.details()
    _nothing_stored(stub, registry, "m")


def test_a_non_finite_config_value_is_refused_naming_its_path(stub, registry):
    """Was INTERNAL: ValueError('Fail to serialize NaN for Value.number_value')."""
    header = rs.RegisterModelVersionHeader(parent="models/m", create_model=True, filename="m.onnx")
    header.config.update({"optimizer": {"lr": math.inf}, "epochs": 3})
    err = _refusal(stub.RegisterModelVersion, iter(_stream(header, b"weights")))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "header.config.optimizer.lr is inf" in err.details()
    _nothing_stored(stub, registry, "m")
    config = struct_pb2.Struct()
    config.update({"layers": [1, math.nan]})
    err = _refusal(stub.CreateModel, rs.CreateModelRequest(model=res.Model(name="models/n", default_config=config)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "model.default_config.layers[1] is nan" in err.details()


def test_finite_metrics_and_config_still_register(stub):
    header = rs.RegisterModelVersionHeader(parent="models/m", create_model=True, filename="m.onnx")
    header.metrics["accuracy"] = 1e308
    header.metric_history["loss"].points.add(step=1, value=-0.0)
    header.config.update({"lr": 5e-324})
    got = stub.RegisterModelVersion(iter(_stream(header, b"weights")), timeout=10).model_version
    assert got.version == 1 and got.metrics["accuracy"] == 1e308
