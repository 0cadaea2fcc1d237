"""One focused test per cause of INTERNAL or UNKNOWN that `make fuzz` found (issue 13), each
asserting what the caller now sees, and the NaN/Infinity decision: metrics, metric history
points and JSON config values must be finite numbers, refused with INVALID_ARGUMENT naming
the key, and a refused registration leaves no version and no blob.
"""

from __future__ import annotations

import hashlib
import math
import uuid
from pathlib import Path

import grpc
import pytest
from auth_helpers import SecureRegistry, admin_token_of, bearer, registry_on_a_new_database
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


@pytest.fixture(scope="module")
def registry(postgres, tmp_path_factory):
    """One registry (auth off) for the module: every test uses models of its own."""
    with registry_on_a_new_database(postgres, tmp_path_factory.mktemp("regressions")) as reg:
        yield reg


@pytest.fixture(scope="module")
def secure_registry(postgres, tmp_path_factory):
    root = tmp_path_factory.mktemp("regressions-auth")
    with registry_on_a_new_database(postgres, root, auth="on") as reg:
        channel = grpc.insecure_channel(reg.address)
        yield SecureRegistry(reg, reg.address, admin_token_of(root / "data"), channel)
        channel.close()


@pytest.fixture(scope="module")
def channel(registry):
    ch = grpc.insecure_channel(registry.address)
    yield ch
    ch.close()


@pytest.fixture(scope="module")
def stub(channel) -> rs_grpc.RegistryServiceStub:
    return rs_grpc.RegistryServiceStub(channel)


@pytest.fixture
def model(stub) -> str:
    """A model of this test's own, created; `fresh` is one that does not exist."""
    name = f"m-{uuid.uuid4().hex[:10]}"
    stub.CreateModel(rs.CreateModelRequest(model=res.Model(name=f"models/{name}")), timeout=10)
    return name


@pytest.fixture
def fresh() -> str:
    return f"n-{uuid.uuid4().hex[:10]}"


def _refusal(fn, *args, **kw) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        fn(*args, timeout=10, **kw)
    return info.value


def _stream(header: rs.RegisterModelVersionHeader, data: bytes) -> list[rs.RegisterModelVersionRequest]:
    header.size_bytes = len(data)
    header.sha256 = hashlib.sha256(data).hexdigest()
    return [rs.RegisterModelVersionRequest(header=header), rs.RegisterModelVersionRequest(chunk=data)]


def _nothing_stored(stub, registry, model: str, data: bytes = b"") -> None:
    """No version of `model` (nor the model, where the registration would have created it)
    and no blob of `data`."""
    try:
        got = stub.ListModelVersions(rs.ListModelVersionsRequest(parent=f"models/{model}"), timeout=10)
        assert list(got.model_versions) == []
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.NOT_FOUND
    if data:
        blobs = Path(registry.settings.artifacts)
        assert not list(blobs.rglob(f"*{hashlib.sha256(data).hexdigest()}*"))


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
    channel, stub, registry, model
):
    """Was INTERNAL ('internal error (a bug in modelreg): DecodeError') mid-stream."""
    header = rs.RegisterModelVersionRequest(
        header=rs.RegisterModelVersionHeader(parent=f"models/{model}", filename="m.bin", size_bytes=8)
    )
    call = channel.stream_unary(
        "/modelreg.v1.RegistryService/RegisterModelVersion",
        request_serializer=_identity,
        response_deserializer=_identity,
    )
    err = _refusal(call, iter([header.SerializeToString(), b"\xff\xff\xff\xff"]))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "modelreg.v1.RegisterModelVersionRequest" in err.details()
    _nothing_stored(stub, registry, model)


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


def test_a_nul_character_in_a_text_field_is_invalid_argument_and_writes_nothing(stub, fresh):
    """Was INTERNAL: CharacterNotInRepertoireError from Postgres, which stores no NUL."""
    err = _refusal(stub.ListModels, rs.ListModelsRequest(project="a\x00b"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "NUL character" in err.details()
    err = _refusal(
        stub.CreateModel, rs.CreateModelRequest(model=res.Model(name=f"models/{fresh}", description="a\x00b"))
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _refusal(stub.GetModel, rs.GetModelRequest(name=f"models/{fresh}")).code() == grpc.StatusCode.NOT_FOUND


# ---------------------------------------------------------------- cause 4: token ttl overflow


@pytest.mark.parametrize("seconds", [10**12, 2**62])
def test_a_token_ttl_past_100_years_is_invalid_argument(secure_registry, seconds):
    """Was INTERNAL: OverflowError('date value out of range') computing the expiry."""
    req = au.CreateTokenRequest(token_id=f"t-long-{seconds}", principal="admin")
    req.ttl.seconds = seconds
    err = _refusal(secure_registry.auth.CreateToken, req, metadata=bearer(secure_registry.admin_token))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "ttl" in err.details()
    tokens = secure_registry.admin("ListTokens", au.ListTokensRequest(principal="admin")).tokens
    assert f"t-long-{seconds}" not in {t.token_id for t in tokens}


def test_a_token_ttl_of_a_year_still_works(secure_registry):
    req = au.CreateTokenRequest(token_id="t-year", principal="admin")
    req.ttl.seconds = 365 * 86400
    assert secure_registry.admin("CreateToken", req).token


# ---------------------------------------------------------------- cause 5: version numbers


@pytest.mark.parametrize("version", ["9223372036854775808", "99999999999999999999", "\u00b2", "\u0661"])
def test_a_version_past_int64_or_in_non_ascii_digits_is_invalid_argument(stub, model, version):
    """Was INTERNAL: DataError (value out of int64 range) from asyncpg, or ValueError from
    int('²') after str.isdigit() had said yes."""
    for call, req in (
        (stub.GetModelVersion, rs.GetModelVersionRequest(name=f"models/{model}/versions/{version}")),
        (stub.DeleteModelVersion, rs.DeleteModelVersionRequest(name=f"models/{model}/versions/{version}")),
    ):
        err = _refusal(call, req)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
        assert repr(version) in err.details()


def test_a_forged_page_token_with_a_huge_key_is_invalid_argument(stub, model):
    import base64

    token = base64.urlsafe_b64encode(b"versions:99999999999999999999").decode().rstrip("=")
    err = _refusal(stub.ListModelVersions, rs.ListModelVersionsRequest(parent=f"models/{model}", page_token=token))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "page_token" in err.details()


# ---------------------------------------------------------------- cause 6: gate values stored as JSON


@pytest.mark.parametrize("kind", ["GATE_CHECK_TYPE_REQUIRE_CARD", "GATE_CHECK_TYPE_APPROVALS"])
def test_a_gate_check_with_a_non_finite_value_is_invalid_argument(channel, model, kind):
    """Was INTERNAL: the NaN of a require-card check reached Postgres' jsonb (and int(nan) for
    approvals)."""
    from modelreg.v1 import governance_pb2 as gv

    req = gs.SetGatePolicyRequest(model=f"models/{model}")
    req.policy.target = "production"
    req.policy.checks.add(type=gv.GateCheckType.Value(kind), value=math.nan)
    err = _refusal(gs_grpc.GovernanceServiceStub(channel).SetGatePolicy, req)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "policy.checks[0]" in err.details() and "finite" in err.details()


@pytest.mark.parametrize("ratio", [math.nan, math.inf])
def test_a_canary_policy_with_a_non_finite_latency_ratio_is_invalid_argument(channel, model, ratio):
    """Was INTERNAL (make fuzz, SetCanaryPolicy): NaN passed `max_latency_ratio < 0` and
    reached Postgres' jsonb."""
    from modelreg.v1 import deployment_service_pb2 as ds
    from modelreg.v1 import deployment_service_pb2_grpc as ds_grpc

    req = ds.SetCanaryPolicyRequest(name=f"models/{model}/deployment")
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
def test_a_non_finite_metric_is_refused_naming_the_key_and_stores_nothing(stub, registry, fresh, value):
    header = rs.RegisterModelVersionHeader(parent=f"models/{fresh}", create_model=True, filename="m.bin")
    header.metrics["accuracy"] = 0.9
    header.metrics["val_loss"] = value
    err = _refusal(stub.RegisterModelVersion, iter(_stream(header, fresh.encode())))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'val_loss'" in err.details() and "finite" in err.details()
    _nothing_stored(stub, registry, fresh, fresh.encode())


def test_a_non_finite_metric_history_point_is_refused_naming_the_key_and_step(stub, registry, fresh):
    """Was INTERNAL: the NaN reached Postgres' jsonb, which has no NaN."""
    header = rs.RegisterModelVersionHeader(parent=f"models/{fresh}", create_model=True, filename="m.bin")
    header.metric_history["loss"].points.add(step=1, value=0.5)
    header.metric_history["loss"].points.add(step=2, value=math.nan)
    err = _refusal(stub.RegisterModelVersion, iter(_stream(header, fresh.encode())))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "'loss'" in err.details() and "step 2" in err.details()
    _nothing_stored(stub, registry, fresh, fresh.encode())


def test_a_non_finite_config_value_is_refused_naming_its_path(stub, registry, fresh):
    """Was INTERNAL: ValueError('Fail to serialize NaN for Value.number_value')."""
    header = rs.RegisterModelVersionHeader(parent=f"models/{fresh}", create_model=True, filename="m.bin")
    header.config.update({"optimizer": {"lr": math.inf}, "epochs": 3})
    err = _refusal(stub.RegisterModelVersion, iter(_stream(header, fresh.encode())))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "header.config.optimizer.lr is inf" in err.details()
    _nothing_stored(stub, registry, fresh, fresh.encode())
    config = struct_pb2.Struct()
    config.update({"layers": [1, math.nan]})
    err = _refusal(
        stub.CreateModel, rs.CreateModelRequest(model=res.Model(name=f"models/{fresh}-n", default_config=config))
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "model.default_config.layers[1] is nan" in err.details()


def test_finite_metrics_and_config_still_register(stub, fresh):
    header = rs.RegisterModelVersionHeader(parent=f"models/{fresh}", create_model=True, filename="m.bin")
    header.metrics["accuracy"] = 1e308
    header.metric_history["loss"].points.add(step=1, value=-0.0)
    header.config.update({"lr": 5e-324})
    got = stub.RegisterModelVersion(iter(_stream(header, fresh.encode())), timeout=10).model_version
    assert got.version == 1 and got.metrics["accuracy"] == 1e308
