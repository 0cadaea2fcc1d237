"""The product as a new user drives it: the real `modelreg` console script and the real
grpcurl binary, against a real server."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from onnx_helpers import onnx_bytes

GRPCURL = Path(sys.executable).parent / "grpcurl"


def grpcurl(address: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """`grpcurl -plaintext [flags...] ADDRESS VERB/METHOD [SYMBOL]`: flags are the args that
    start with '-' and their values; the rest follow the address."""
    flags, tail = [], list(args)
    while tail and tail[0].startswith("-"):
        flags += tail[:2]
        tail = tail[2:]
    proc = subprocess.run(
        [str(GRPCURL), "-plaintext", *flags, address, *tail], capture_output=True, text=True, timeout=60
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"grpcurl {args} failed: {proc.stderr}")
    return proc


def test_grpcurl_lists_services_and_calls_the_registry(registry, client):
    listed = grpcurl(registry.address, "list").stdout.split()
    assert "modelreg.v1.RegistryService" in listed
    assert "grpc.health.v1.Health" in listed
    methods = grpcurl(registry.address, "list", "modelreg.v1.RegistryService").stdout
    assert "modelreg.v1.RegistryService.PromoteModelVersion" in methods

    created = grpcurl(
        registry.address,
        "-H",
        "x-modelreg-actor: ops-oncall",
        "-d",
        '{"model": {"name": "models/from-grpcurl", "modelType": "resnet18", "defaultConfig": {"lr": 0.1}}}',
        "modelreg.v1.RegistryService/CreateModel",
    )
    model = json.loads(created.stdout)["model"]
    assert model["name"] == "models/from-grpcurl"
    # grpcurl 1.8 prints the proto field names (snake_case).
    assert model["created_by"] == "ops-oncall"

    client.register("from-grpcurl", b"weights")
    promoted = grpcurl(
        registry.address,
        "-H",
        "x-modelreg-actor: ops-oncall",
        "-d",
        '{"name": "models/from-grpcurl/versions/1", "stage": "STAGE_PRODUCTION", "reason": "ops"}',
        "modelreg.v1.RegistryService/PromoteModelVersion",
    )
    assert json.loads(promoted.stdout)["model_version"]["stage"] == "STAGE_PRODUCTION"
    assert [t.actor for t in client.history("from-grpcurl")] == ["ops-oncall"]

    missing = grpcurl(
        registry.address, "-d", '{"name": "models/nope"}', "modelreg.v1.RegistryService/GetModel", check=False
    )
    assert missing.returncode != 0
    assert "NotFound" in missing.stderr and "models/nope" in missing.stderr

    health = grpcurl(registry.address, "grpc.health.v1.Health/Check")
    assert json.loads(health.stdout)["status"] == "SERVING"


def test_cli_quickstart_flow_with_json_output(cli, tmp_path):
    weights = tmp_path / "best.onnx"
    weights.write_bytes(onnx_bytes(200_000))
    created = json.loads(
        cli(
            "models",
            "create",
            "detector",
            "--model-type",
            "yolov8n",
            "--default-config",
            '{"imgsz": 640}',
            "-o",
            "json",
        ).stdout
    )
    assert created["name"] == "models/detector"

    reg = json.loads(
        cli(
            "register",
            "detector",
            str(weights),
            "--metrics",
            '{"map50": 0.61, "recall": 0.5}',
            "--config",
            '{"epochs": 30}',
            "--dataset-id",
            "coco-mini",
            "--dataset-hash",
            "h1",
            "--run-id",
            "r1",
            "--tag",
            "owner=ana",
            "--request-id",
            "train-1",
            "-o",
            "json",
        ).stdout
    )
    v = reg["modelVersion"]
    assert v["name"] == "models/detector/versions/1"
    assert v["config"] == {"imgsz": 640.0, "epochs": 30.0}
    assert v["lineage"]["datasetId"] == "coco-mini"
    assert v["artifact"]["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert v["createdBy"] == "cli-user"

    again = json.loads(cli("register", "detector", str(weights), "--request-id", "train-1", "-o", "json").stdout)
    assert again["deduplicated"] is True
    assert again["modelVersion"]["name"] == v["name"]

    cli("register", "detector", str(weights), "--metrics", '{"map50": 0.7}')
    promoted = json.loads(cli("promote", "detector", "1", "production", "--reason", "first", "-o", "json").stdout)
    assert promoted["modelVersion"]["stage"] == "STAGE_PRODUCTION"
    promoted = json.loads(cli("promote", "detector", "2", "production", "--reason", "better", "-o", "json").stdout)
    assert promoted["archivedVersion"]["name"] == "models/detector/versions/1"

    listed = json.loads(cli("list", "detector", "-o", "json").stdout)
    assert [m["version"] for m in listed["modelVersions"]] == ["2", "1"]
    staged = json.loads(cli("list", "detector", "--stage", "archived", "-o", "json").stdout)
    assert [m["version"] for m in staged["modelVersions"]] == ["1"]

    got = json.loads(cli("get", "detector", "production", "-o", "json").stdout)
    assert got["version"] == "2"

    history = json.loads(cli("history", "detector", "-o", "json").stdout)["transitions"]
    assert [(t["modelVersion"], t["toStage"], t["reason"]) for t in history] == [
        ("models/detector/versions/2", "STAGE_PRODUCTION", "better"),
        ("models/detector/versions/1", "STAGE_ARCHIVED", "better"),
        ("models/detector/versions/1", "STAGE_PRODUCTION", "first"),
    ]

    compared = json.loads(cli("compare", "detector", "-o", "json").stdout)
    assert compared["metricKeys"] == ["map50", "recall"]
    assert compared["productionVersion"] == "2"

    table = cli("compare", "detector").stdout
    assert "MAP50" in table and "-0.09" in table

    dest = tmp_path / "out"
    dl = json.loads(cli("download", "detector", "--dest", str(dest), "-o", "json").stdout)
    assert dl["verified"] is True
    assert Path(dl["path"]).name == "detector_v2_yolov8n.onnx"
    assert Path(dl["path"]).read_bytes() == weights.read_bytes()

    models = json.loads(cli("models", "list", "-o", "json").stdout)["models"]
    assert [m["name"] for m in models] == ["models/detector"]


def test_cli_errors_print_the_message_and_exit_non_zero(cli, tmp_path):
    proc = cli("get", "nothing", "1", check=False)
    assert proc.returncode == 1
    assert "models/nothing" in proc.stderr and "NOT_FOUND" in proc.stderr
    assert "Traceback" not in proc.stderr

    (tmp_path / "w.bin").write_bytes(b"x")
    proc = cli("register", "m", str(tmp_path / "w.bin"), "--metrics", "{not json", check=False)
    assert proc.returncode == 2
    assert "--metrics is not valid JSON" in proc.stderr

    cli("register", "m", str(tmp_path / "w.bin"))
    proc = cli("promote", "m", "1", "gold", check=False)
    assert proc.returncode == 1 and "unknown stage" in proc.stderr
    proc = cli("models", "create", "m", check=False)
    assert proc.returncode == 1 and "ALREADY_EXISTS" in proc.stderr
    proc = cli("register", "m", str(tmp_path / "missing.bin"), check=False)
    assert proc.returncode == 2 and "does not exist" in proc.stderr


def test_cli_reports_an_unreachable_registry_clearly(tmp_path):
    from conftest import free_port, run_cli

    proc = run_cli("models", "list", address=f"127.0.0.1:{free_port()}", check=False)
    assert proc.returncode == 1
    assert "UNAVAILABLE" in proc.stderr
    assert "MODELREG_ADDRESS" in proc.stderr


@pytest.mark.slow
def test_modelreg_server_process_serves_the_cli(spawn_registry, tmp_path):
    from conftest import run_cli

    proc, address = spawn_registry()
    run_cli("models", "create", "proc-model", address=address)
    out = json.loads(run_cli("models", "list", "-o", "json", address=address).stdout)
    assert out["models"][0]["name"] == "models/proc-model"
    proc.terminate()
    assert proc.wait(15) == 0
