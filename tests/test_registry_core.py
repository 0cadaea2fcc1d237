"""The registry core against real Postgres and a real gRPC server: models, registration,
versions, stages, history, compare, download and every error a caller can cause."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import grpc
import pytest
from onnx_helpers import onnx_bytes

from modelreg import errors
from modelreg.v1 import event_service_pb2 as es
from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import registry_service_pb2_grpc as rs_grpc
from modelreg.v1 import resources_pb2 as res
from modelreg.watch import list_events


def blob_files(root: Path) -> list[Path]:
    return [p for p in (root / "sha256").rglob("*") if p.is_file()]


# ---------------------------------------------------------------------- models


def test_create_get_and_list_models_in_pages(client):
    for i in range(7):
        client.create_model(f"m-{i}", description=f"model {i}", model_type="resnet18")
    got = client.get_model("m-3")
    assert got.name == "models/m-3"
    assert got.description == "model 3"
    assert got.created_by == "tester"
    page = client.stub.ListModels(rs.ListModelsRequest(page_size=3))
    assert [m.name for m in page.models] == ["models/m-0", "models/m-1", "models/m-2"]
    assert page.next_page_token
    names = [m.name for m in client.list_models(page_size=3)]
    assert names == [f"models/m-{i}" for i in range(7)]


def test_duplicate_model_is_already_exists(client):
    client.create_model("dup")
    with pytest.raises(errors.AlreadyExists, match="already exists"):
        client.create_model("dup")


@pytest.mark.parametrize("bad", ["Bad_Name", "-lead", "a/b", "x" * 64, "sp ace"])
def test_bad_model_name_is_invalid_argument(client, bad):
    with pytest.raises(errors.InvalidArgument, match="invalid model"):
        client.create_model(bad)


def test_update_model_changes_only_masked_fields(client):
    client.create_model("upd", description="old", model_type="yolov8n", default_config={"imgsz": 640})
    m = client.update_model("upd", description="new", tags={"team": "vision"})
    assert m.description == "new"
    assert dict(m.tags) == {"team": "vision"}
    assert m.model_type == "yolov8n"
    assert dict(m.default_config) == {"imgsz": 640}
    bad = rs.UpdateModelRequest(model=res.Model(name="models/upd"))
    bad.update_mask.paths.append("production_version")
    with pytest.raises(grpc.RpcError) as e:
        client.stub.UpdateModel(bad)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "cannot be updated" in e.value.details()


def test_delete_model_refused_while_a_version_is_in_production(client, registry):
    v = client.register("prod", b"weights-1")
    client.promote("prod", v.version, "production")
    with pytest.raises(errors.FailedPrecondition, match="archive it first"):
        client.delete_model("prod")
    client.promote("prod", v.version, "archived")
    assert client.delete_model("prod") == 1
    with pytest.raises(errors.NotFound):
        client.get_model("prod")
    assert blob_files(Path(registry.settings.artifacts)) == []


# ---------------------------------------------------------------------- registration


def test_register_stores_complete_metadata_and_merges_default_config(client):
    client.create_model("det", model_type="yolov8n", default_config={"imgsz": 640, "epochs": 100, "lr": 0.01})
    v = client.register(
        "det",
        b"\x00" * 1000,
        filename="best.pt",
        config={"epochs": 50},
        metrics={"map50": 0.71, "precision": 0.8},
        metric_history={"loss": [3.0, 2.0, 1.5]},
        dataset_id="coco-sub",
        dataset_hash="abc123",
        run_id="run-7",
        code_revision="deadbeef",
        tags={"owner": "ana"},
        description="first",
    )
    assert v.name == "models/det/versions/1"
    assert v.state == res.MODEL_VERSION_STATE_READY
    assert v.stage == res.STAGE_NONE
    assert v.format == res.ARTIFACT_FORMAT_ULTRALYTICS_PT
    assert v.model_type == "yolov8n"
    assert dict(v.config) == {"imgsz": 640, "epochs": 50, "lr": 0.01}
    assert dict(v.metrics) == {"map50": 0.71, "precision": 0.8}
    assert [(p.step, p.value) for p in v.metric_history["loss"].points] == [(0, 3.0), (1, 2.0), (2, 1.5)]
    assert v.lineage.dataset_hash == "abc123" and v.lineage.run_id == "run-7"
    assert v.artifact.sha256 == hashlib.sha256(b"\x00" * 1000).hexdigest()
    assert v.artifact.size_bytes == 1000
    assert v.artifact.download_filename == "det_v1_yolov8n.pt"
    assert v.created_by == "tester"
    # What was stored is what a later read returns.
    again = client.get_version("det", 1)
    assert again == v


def test_register_into_missing_model_without_create_is_not_found(client):
    with pytest.raises(errors.NotFound, match="does not exist"):
        client.register("ghost", b"x", create_model=False)


async def test_200_concurrent_registrations_get_versions_1_to_200(registry):
    async with grpc.aio.insecure_channel(registry.address) as channel:
        stub = rs_grpc.RegistryServiceStub(channel)
        await stub.CreateModel(rs.CreateModelRequest(model=res.Model(name="models/race")))

        async def register(i: int) -> int:
            async def requests():
                yield rs.RegisterModelVersionRequest(
                    header=rs.RegisterModelVersionHeader(parent="models/race", filename="m.onnx")
                )
                yield rs.RegisterModelVersionRequest(chunk=onnx_bytes(16 + i))

            resp = await stub.RegisterModelVersion(requests(), timeout=120)
            return resp.model_version.version

        versions = await asyncio.gather(*(register(i) for i in range(200)))
    assert sorted(versions) == list(range(1, 201))


def test_retry_with_same_request_id_returns_same_version_and_stores_once(client, registry):
    data = os.urandom(300_000)
    first = client.register_full("idem", data, request_id="train-42")
    second = client.register_full("idem", data, request_id="train-42")
    assert not first.deduplicated and second.deduplicated
    assert second.model_version == first.model_version
    assert [v.version for v in client.list_versions("idem")] == [1]
    assert len(blob_files(Path(registry.settings.artifacts))) == 1


async def test_concurrent_retries_with_one_request_id_create_one_version(registry):
    async with grpc.aio.insecure_channel(registry.address) as channel:
        stub = rs_grpc.RegistryServiceStub(channel)

        async def register() -> rs.RegisterModelVersionResponse:
            async def requests():
                yield rs.RegisterModelVersionRequest(
                    header=rs.RegisterModelVersionHeader(parent="models/idem2", create_model=True, request_id="same")
                )
                yield rs.RegisterModelVersionRequest(chunk=b"identical bytes")

            return await stub.RegisterModelVersion(requests())

        results = await asyncio.gather(*(register() for _ in range(10)))
    assert {r.model_version.version for r in results} == {1}
    assert sum(not r.deduplicated for r in results) == 1


async def test_registrations_committed_together_keep_numbers_events_and_request_ids(registry, client):
    """Registrations that arrive together are committed together (group commit); a request-id
    race inside one batch fails only the losers, which get the winner's version."""
    async with grpc.aio.insecure_channel(registry.address) as channel:
        stub = rs_grpc.RegistryServiceStub(channel)
        await stub.CreateModel(rs.CreateModelRequest(model=res.Model(name="models/batch")))

        async def register(data: bytes, request_id: str = "") -> rs.RegisterModelVersionResponse:
            async def requests():
                yield rs.RegisterModelVersionRequest(
                    header=rs.RegisterModelVersionHeader(parent="models/batch", request_id=request_id)
                )
                yield rs.RegisterModelVersionRequest(chunk=data)

            return await stub.RegisterModelVersion(requests(), timeout=120)

        calls = [register(f"distinct {i}".encode()) for i in range(60)]
        calls += [register(b"retried", request_id="retry-7") for _ in range(10)]
        results = await asyncio.gather(*calls)
    distinct, retried = results[:60], results[60:]
    assert len({r.model_version.version for r in retried}) == 1
    assert sum(not r.deduplicated for r in retried) == 1
    numbers = sorted({r.model_version.version for r in results})
    assert numbers == list(range(1, 62))
    assert [v.version for v in client.list_versions("batch")] == list(range(61, 0, -1))
    ready = [
        int(e.model_version.removeprefix("models/batch/versions/"))
        for e in list_events(client._channel)
        if e.model == "models/batch" and e.type == es.EVENT_TYPE_VERSION_READY
    ]
    assert sorted(ready) == numbers
    assert all(r.model_version.state == res.MODEL_VERSION_STATE_READY for r in distinct)


def test_identical_bytes_are_stored_once(client, registry):
    a = client.register("dedupe", b"same bytes")
    b = client.register("dedupe", b"same bytes")
    assert (a.version, b.version) == (1, 2)
    assert a.artifact.sha256 == b.artifact.sha256
    assert len(blob_files(Path(registry.settings.artifacts))) == 1


def test_sha256_mismatch_is_rejected_with_nothing_stored(client, registry):
    client.create_model("mm")
    with pytest.raises(errors.InvalidArgument, match="sha256 mismatch"):
        client.register("mm", b"real bytes", sha256="0" * 64)
    assert list(client.list_versions("mm")) == []
    root = Path(registry.settings.artifacts)
    assert blob_files(root) == []
    assert list((root / "tmp").iterdir()) == []
    assert client.get_model("mm").latest_version == 0


def test_empty_artifact_is_invalid_argument(client):
    with pytest.raises(errors.InvalidArgument, match="artifact is empty"):
        client.register("empty", b"")


def test_header_must_come_first(client):
    def requests():
        yield rs.RegisterModelVersionRequest(chunk=b"bytes before header")

    with pytest.raises(grpc.RpcError) as e:
        client.stub.RegisterModelVersion(requests())
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "first message must carry `header`" in e.value.details()


# ---------------------------------------------------------------------- versions


def test_list_versions_newest_first_filtered_by_stage_and_paged(client):
    for i in range(5):
        client.register("lv", f"v{i}".encode())
    client.promote("lv", 2, "staging")
    client.promote("lv", 4, "staging")
    assert [v.version for v in client.list_versions("lv")] == [5, 4, 3, 2, 1]
    assert [v.version for v in client.list_versions("lv", page_size=2)] == [5, 4, 3, 2, 1]
    assert [v.version for v in client.list_versions("lv", stage="staging")] == [4, 2]
    assert client.get_version("lv", "staging").version == 4
    assert client.get_version("lv", "latest").version == 5


def test_only_description_and_tags_of_a_version_can_change(client):
    v = client.register("imm", b"bytes", description="before")
    updated = client.update_version("imm", v.version, description="after", tags={"k": "v"})
    assert updated.description == "after" and dict(updated.tags) == {"k": "v"}
    assert updated.artifact == v.artifact
    req = rs.UpdateModelVersionRequest(model_version=res.ModelVersion(name=v.name))
    req.update_mask.paths.append("metrics")
    with pytest.raises(grpc.RpcError) as e:
        client.stub.UpdateModelVersion(req)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "immutable" in e.value.details()


def test_unknown_version_and_model_are_not_found(client):
    client.register("nf", b"x")
    with pytest.raises(errors.NotFound, match="versions/9"):
        client.get_version("nf", 9)
    with pytest.raises(errors.NotFound, match="no version in production"):
        client.get_version("nf", "production")
    with pytest.raises(errors.NotFound, match="models/nobody"):
        client.get_version("nobody", 1)
    with pytest.raises(errors.InvalidArgument, match="invalid version"):
        client.get_version("nf", "0")
    with pytest.raises(errors.NotFound, match="has no alias 'zero'"):
        client.get_version("nf", "zero")  # a name that is not a number or a stage is an alias


# ---------------------------------------------------------------------- stages


def test_promote_to_production_archives_previous_production(client):
    for i in range(3):
        client.register("stg", f"w{i}".encode())
    client.promote("stg", 1, "production", reason="first")
    resp = client.promote("stg", 2, "production", reason="better map")
    assert resp.model_version.stage == res.STAGE_PRODUCTION
    assert resp.archived_version.version == 1
    assert resp.archived_version.stage == res.STAGE_ARCHIVED
    stages = {v.version: v.stage for v in client.list_versions("stg")}
    assert stages == {1: res.STAGE_ARCHIVED, 2: res.STAGE_PRODUCTION, 3: res.STAGE_NONE}
    assert client.get_model("stg").production_version == 2
    assert client.get_version("stg", "production").version == 2
    # Rollback: an archived version can go back to production.
    client.promote("stg", 1, "production", reason="rollback")
    assert client.get_version("stg", "production").version == 1


async def test_concurrent_promotions_leave_exactly_one_production(registry):
    async with grpc.aio.insecure_channel(registry.address) as channel:
        stub = rs_grpc.RegistryServiceStub(channel)
        for i in range(10):

            async def reqs(i=i):
                yield rs.RegisterModelVersionRequest(
                    header=rs.RegisterModelVersionHeader(parent="models/cp", create_model=True)
                )
                yield rs.RegisterModelVersionRequest(chunk=f"w{i}".encode())

            await stub.RegisterModelVersion(reqs())
        await asyncio.gather(
            *(
                stub.PromoteModelVersion(
                    rs.PromoteModelVersionRequest(name=f"models/cp/versions/{n}", stage=res.STAGE_PRODUCTION)
                )
                for n in range(1, 11)
            )
        )
        listed = await stub.ListModelVersions(rs.ListModelVersionsRequest(parent="models/cp"))
        model = await stub.GetModel(rs.GetModelRequest(name="models/cp"))
    production = [v.version for v in listed.model_versions if v.stage == res.STAGE_PRODUCTION]
    assert len(production) == 1
    assert model.model.production_version == production[0]
    assert sum(v.stage == res.STAGE_ARCHIVED for v in listed.model_versions) == 9


def test_illegal_stage_moves_are_failed_precondition(client):
    client.register("ill", b"x")
    with pytest.raises(errors.FailedPrecondition, match="cannot move back to stage 'none'"):
        client.promote("ill", 1, "none")
    client.promote("ill", 1, "staging")
    with pytest.raises(errors.FailedPrecondition, match="already in stage 'staging'"):
        client.promote("ill", 1, "staging")
    with pytest.raises(errors.InvalidArgument, match="unknown stage"):
        client.promote("ill", 1, "prod")
    with pytest.raises(grpc.RpcError) as e:
        client.stub.PromoteModelVersion(rs.PromoteModelVersionRequest(name="models/ill/versions/1"))
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_history_records_actor_reason_and_moves(registry):
    from modelreg import Client

    alice = Client(registry.address, actor="alice")
    bob = Client(registry.address, actor="bob")
    alice.register("hist", b"a")
    alice.register("hist", b"b")
    alice.promote("hist", 1, "production", reason="initial launch")
    bob.promote("hist", 2, "production", reason="v2 beats v1 on map50")
    moves = [(t.model_version, t.from_stage, t.to_stage, t.actor, t.reason) for t in bob.history("hist")]
    assert moves == [
        ("models/hist/versions/2", res.STAGE_NONE, res.STAGE_PRODUCTION, "bob", "v2 beats v1 on map50"),
        ("models/hist/versions/1", res.STAGE_PRODUCTION, res.STAGE_ARCHIVED, "bob", "v2 beats v1 on map50"),
        ("models/hist/versions/1", res.STAGE_NONE, res.STAGE_PRODUCTION, "alice", "initial launch"),
    ]
    assert [t.actor for t in bob.history("hist", page_size=1)] == ["bob", "bob", "alice"]


# ---------------------------------------------------------------------- compare


def test_compare_discovers_metric_keys_and_deltas_against_production(client):
    client.register("cmp", b"1", metrics={"map50": 0.5, "loss": 1.2})
    client.register("cmp", b"2", metrics={"map50": 0.6, "recall": 0.4})
    client.register("cmp", b"3", metrics={"map50": 0.65, "loss": 0.9, "f1": 0.7})
    client.promote("cmp", 2, "production")
    resp = client.compare("cmp")
    assert list(resp.metric_keys) == ["f1", "loss", "map50", "recall"]
    assert resp.production_version == 2
    by_version = {c.version: c for c in resp.versions}
    assert [c.version for c in resp.versions] == [3, 2, 1]
    assert dict(by_version[3].deltas) == pytest.approx({"map50": 0.05})
    assert dict(by_version[1].deltas) == pytest.approx({"map50": -0.1})
    assert dict(by_version[2].deltas) == {"map50": 0.0, "recall": 0.0}
    subset = client.compare("cmp", [1, 3])
    assert [c.version for c in subset.versions] == [1, 3]
    assert list(subset.metric_keys) == ["f1", "loss", "map50"]
    with pytest.raises(errors.InvalidArgument, match="no version"):
        client.compare("cmp", [1, 99])


def test_compare_without_production_has_no_deltas(client):
    client.register("cmp0", b"1", metrics={"a": 1})
    resp = client.compare("cmp0")
    assert resp.production_version == 0
    assert dict(resp.versions[0].deltas) == {}


# ---------------------------------------------------------------------- download


def test_multi_mb_download_by_stage_has_verified_sha256(client, tmp_path):
    data = onnx_bytes(9 * 1024 * 1024 + 123)
    src = tmp_path / "model.onnx"
    src.write_bytes(data)
    client.create_model("dl", model_type="yolov8n")
    v = client.register("dl", src)
    client.promote("dl", v.version, "production")
    path = client.download("dl", "production", dest=tmp_path / "out")
    assert path.name == "dl_v1_yolov8n.onnx"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()
    chunks = list(client.stub.DownloadArtifact(rs.DownloadArtifactRequest(name="models/dl/versions/production")))
    header = chunks[0].header
    assert header.sha256 == v.artifact.sha256
    assert header.size_bytes == len(data)
    assert header.filename == "dl_v1_yolov8n.onnx"
    assert b"".join(c.chunk for c in chunks[1:]) == data


def test_download_resumes_from_an_offset(client, tmp_path):
    data = os.urandom(3 * 1024 * 1024)
    client.register("off", data)
    offset = 1_500_001
    chunks = list(client.stub.DownloadArtifact(rs.DownloadArtifactRequest(name="models/off/versions/1", offset=offset)))
    assert chunks[0].header.offset == offset
    assert b"".join(c.chunk for c in chunks[1:]) == data[offset:]
    # The SDK resumes a cut download from its .part file.
    dest = tmp_path / "resume"
    dest.mkdir()
    (dest / "off_v1_model.bin.part").write_bytes(data[:offset])
    path = client.download("off", 1, dest=dest)
    assert path.read_bytes() == data
    with pytest.raises(grpc.RpcError) as e:
        list(
            client.stub.DownloadArtifact(rs.DownloadArtifactRequest(name="models/off/versions/1", offset=len(data) + 1))
        )
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_corrupted_blob_download_fails_with_data_loss(client, registry, tmp_path):
    data = os.urandom(2 * 1024 * 1024)
    v = client.register("bad", data)
    blob = Path(registry.settings.artifacts) / "sha256" / v.artifact.sha256[:2] / v.artifact.sha256
    corrupted = bytearray(data)
    corrupted[-10] ^= 0xFF
    blob.write_bytes(bytes(corrupted))
    with pytest.raises(errors.DataLoss, match="corrupted"):
        client.download("bad", 1, dest=tmp_path)
    assert list(tmp_path.glob("bad_v1*")) == []
    blob.unlink()
    with pytest.raises(errors.DataLoss, match="missing"):
        client.download("bad", 1, dest=tmp_path)


def test_deleting_a_version_keeps_a_blob_another_version_references(client, registry):
    client.register("shared", b"common bytes")
    client.register("shared", b"common bytes")
    client.register("shared", b"unique bytes")
    root = Path(registry.settings.artifacts)
    assert len(blob_files(root)) == 2
    assert client.delete_version("shared", 1) is False
    assert len(blob_files(root)) == 2
    assert client.download("shared", 2, dest=root.parent / "d").read_bytes() == b"common bytes"
    assert client.delete_version("shared", 2) is True
    assert len(blob_files(root)) == 1
    client.promote("shared", 3, "production")
    with pytest.raises(errors.FailedPrecondition, match="in production"):
        client.delete_version("shared", 3)
