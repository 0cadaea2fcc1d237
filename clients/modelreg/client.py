"""The Python SDK: typed methods over the gRPC stubs.

    from modelreg import Client
    reg = Client()                      # MODELREG_ADDRESS or 127.0.0.1:50051
    v = reg.register("detector", "best.pt", metrics={"map50": 0.71})
    reg.promote("detector", v.version, "production", reason="beats v3")
    path = reg.download("detector", "production", dest="weights/")

Credentials (a bearer token or token file, TLS, mTLS) come from the keyword arguments or
MODELREG_TOKEN, MODELREG_TOKEN_FILE, MODELREG_CA_CERT, MODELREG_CLIENT_CERT and
MODELREG_CLIENT_KEY (`modelreg.credentials`). Errors are `modelreg.errors.ModelregError`
subclasses carrying the server's message (`Unauthenticated`, `PermissionDenied`, ...).
"""

from __future__ import annotations

import getpass
import hashlib
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import field_mask_pb2, struct_pb2

from modelreg import errors, signatures, tracing
from modelreg.access import AccessMixin
from modelreg.aliases import AliasMixin, split_alias
from modelreg.cards import CardMixin
from modelreg.credentials import Credentials, sync_channel
from modelreg.deployments import DeploymentMixin
from modelreg.gates import GateMixin
from modelreg.v1 import agent_service_pb2 as ag
from modelreg.v1 import agent_service_pb2_grpc as ag_grpc
from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import registry_service_pb2_grpc as rs_grpc
from modelreg.v1 import resources_pb2 as res
from modelreg.webhooks import WebhookMixin

DEFAULT_ADDRESS = "127.0.0.1:50051"
CHUNK = 1024 * 1024
MAX_MESSAGE = 16 * 1024 * 1024

STAGES = {
    "none": res.STAGE_NONE,
    "staging": res.STAGE_STAGING,
    "production": res.STAGE_PRODUCTION,
    "archived": res.STAGE_ARCHIVED,
}
FORMATS = {
    "onnx": res.ARTIFACT_FORMAT_ONNX,
    "ultralytics_pt": res.ARTIFACT_FORMAT_ULTRALYTICS_PT,
    "pt": res.ARTIFACT_FORMAT_ULTRALYTICS_PT,
    "ultralytics": res.ARTIFACT_FORMAT_ULTRALYTICS_PT,
    "bundle": res.ARTIFACT_FORMAT_BUNDLE,
    "other": res.ARTIFACT_FORMAT_OTHER,
}

Progress = Callable[[int, int], None]  # (bytes done, total bytes or 0 when unknown)


def default_actor() -> str:
    explicit = os.environ.get("MODELREG_ACTOR")
    if explicit:
        return explicit
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some containers
        return "unknown"


def stage_enum(stage: str | int) -> res.Stage.ValueType:
    if isinstance(stage, int):
        return res.Stage.ValueType(stage)
    key = stage.strip().lower().removeprefix("stage_")
    if key not in STAGES:
        raise errors.InvalidArgument(
            grpc.StatusCode.INVALID_ARGUMENT, f"unknown stage {stage!r}: use none, staging, production or archived"
        )
    return STAGES[key]


def format_enum(fmt: str | int | None) -> res.ArtifactFormat.ValueType:
    if fmt is None or fmt == "":
        return res.ARTIFACT_FORMAT_UNSPECIFIED
    if isinstance(fmt, int):
        return res.ArtifactFormat.ValueType(fmt)
    key = fmt.strip().lower().lstrip(".")
    if key not in FORMATS:
        raise errors.InvalidArgument(
            grpc.StatusCode.INVALID_ARGUMENT, f"unknown format {fmt!r}: use onnx, ultralytics_pt, bundle or other"
        )
    return FORMATS[key]


def model_name(model: str) -> str:
    return model if model.startswith("models/") else f"models/{model}"


def version_name(model: str, version: int | str | None = None, default: str = "latest") -> str:
    """`models/{model}/versions/{version}`; `MODEL@ALIAS` names the version itself (then
    `version` is left out, or the same alias). `default` stands for a missing version."""
    name, alias = split_alias(model)
    if alias is not None:
        if version is not None and str(version) != alias:
            raise errors.InvalidArgument(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{model!r} already names version {alias!r}; leave out the version {version!r}, or the '@{alias}'",
            )
        version = alias
    return f"{model_name(name)}/versions/{default if version is None else version}"


def _struct(value: dict[str, Any] | None) -> struct_pb2.Struct | None:
    if value is None:
        return None
    s = struct_pb2.Struct()
    s.update(value)
    return s


class Client(DeploymentMixin, AccessMixin, GateMixin, CardMixin, AliasMixin, WebhookMixin):
    """A synchronous registry client. Thread-safe; reuse one per process.

    `credentials` wins over the individual `token`, `token_file`, `ca_cert`, `client_cert`
    and `client_key` arguments, which win over the environment; a given `channel` is used
    as it is (it carries its own credentials). `actor` is sent as `x-modelreg-actor`: the
    identity with auth off, "on behalf of" text with auth on."""

    def __init__(
        self,
        address: str | None = None,
        *,
        actor: str | None = None,
        channel: grpc.Channel | None = None,
        timeout: float | None = 60.0,
        token: str | None = None,
        token_file: str | os.PathLike | None = None,
        ca_cert: str | os.PathLike | None = None,
        client_cert: str | os.PathLike | None = None,
        client_key: str | os.PathLike | None = None,
        credentials: Credentials | None = None,
    ):
        self.address = address or os.environ.get("MODELREG_ADDRESS") or DEFAULT_ADDRESS
        self.actor = actor or default_actor()
        self.timeout = timeout
        self.credentials: Credentials | None = None
        if channel is None:
            self.credentials = credentials or Credentials.from_env(
                token=token, token_file=token_file, ca_cert=ca_cert, client_cert=client_cert, client_key=client_key
            )
            options = [("grpc.max_receive_message_length", MAX_MESSAGE), ("grpc.max_send_message_length", MAX_MESSAGE)]
            channel = sync_channel(self.address, self.credentials, options)
        # With opentelemetry installed, calls carry the app's trace context (modelreg.tracing).
        self._channel = tracing.traced(channel)
        self.stub = rs_grpc.RegistryServiceStub(self._channel)
        self.agents = ag_grpc.AgentServiceStub(self._channel)
        self._metadata = (("x-modelreg-actor", self.actor),)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method, request, timeout: float | None = -1.0):
        try:
            return method(request, metadata=self._metadata, timeout=self.timeout if timeout == -1.0 else timeout)
        except grpc.RpcError as e:
            raise errors.from_rpc_error(e, self.address) from None

    def _pages(self, method, request, field: str) -> Iterator[Any]:
        """Every item of a paged List call's `field`, following `next_page_token` to the end."""
        while True:
            resp = self._call(method, request)
            yield from getattr(resp, field)
            if not resp.next_page_token:
                return
            request.page_token = resp.next_page_token

    # ------------------------------------------------------------------ models

    def create_model(
        self,
        name: str,
        *,
        description: str = "",
        model_type: str = "",
        default_config: dict[str, Any] | None = None,
        tags: dict[str, str] | None = None,
        project: str = "",
    ) -> res.Model:
        model = res.Model(
            name=model_name(name),
            description=description,
            model_type=model_type,
            default_config=_struct(default_config),
            tags=tags or {},
            project=project,
        )
        return self._call(self.stub.CreateModel, rs.CreateModelRequest(model=model)).model

    def get_model(self, name: str) -> res.Model:
        return self._call(self.stub.GetModel, rs.GetModelRequest(name=model_name(name))).model

    def list_models(self, *, project: str = "", page_size: int = 0) -> Iterator[res.Model]:
        return self._pages(self.stub.ListModels, rs.ListModelsRequest(page_size=page_size, project=project), "models")

    def update_model(
        self,
        name: str,
        *,
        description: str | None = None,
        tags: dict[str, str] | None = None,
        default_config: dict[str, Any] | None = None,
        model_type: str | None = None,
    ) -> res.Model:
        model = res.Model(name=model_name(name))
        paths = []
        if description is not None:
            model.description = description
            paths.append("description")
        if tags is not None:
            model.tags.update(tags)
            paths.append("tags")
        if default_config is not None:
            model.default_config.update(default_config)
            paths.append("default_config")
        if model_type is not None:
            model.model_type = model_type
            paths.append("model_type")
        req = rs.UpdateModelRequest(model=model, update_mask=field_mask_pb2.FieldMask(paths=paths))
        return self._call(self.stub.UpdateModel, req).model

    def delete_model(self, name: str) -> int:
        return self._call(self.stub.DeleteModel, rs.DeleteModelRequest(name=model_name(name))).deleted_versions

    # ------------------------------------------------------------------ versions

    def register(
        self,
        model: str,
        artifact: str | os.PathLike | bytes,
        *,
        format: str | int | None = None,  # noqa: A002 - matches the CLI flag
        model_type: str = "",
        config: dict[str, Any] | None = None,
        metrics: dict[str, float] | None = None,
        metric_history: Mapping[str, Sequence[float] | Sequence[tuple[int, float]]] | None = None,
        dataset_id: str = "",
        dataset_hash: str = "",
        parent_version: int = 0,
        run_id: str = "",
        code_revision: str = "",
        tags: dict[str, str] | None = None,
        description: str = "",
        request_id: str = "",
        filename: str = "",
        sha256: str = "",
        create_model: bool = True,
        project: str = "",
        signature: res.Signature | None = None,
        progress: Progress | None = None,
        timeout: float | None = None,
    ) -> res.ModelVersion:
        """Registers a version with its artifact (a file path or bytes) in one stream.

        The sha256 is computed locally first and sent in the header, so the server rejects
        bytes damaged on the way. A directory is packed into a deterministic bundle first.
        `project` is the project of the model `create_model` creates (empty: `default`).
        An ONNX artifact's `signature` is read here, streaming past its weights
        (modelreg.onnx_graph; the registry reads and verifies it too); for other formats pass
        it to record one.
        """
        return self.register_full(**{k: v for k, v in locals().items() if k != "self"}).model_version

    def register_full(self, model: str, artifact, **kw) -> rs.RegisterModelVersionResponse:
        """Like `register`, returning the whole response (with `deduplicated`)."""
        from modelreg import bundles

        progress: Progress | None = kw.pop("progress", None)
        timeout = kw.pop("timeout", None)
        cleanup: Path | None = None
        if isinstance(artifact, (bytes, bytearray, memoryview)):
            data = bytes(artifact)
            size = len(data)
            digest = kw.get("sha256") or hashlib.sha256(data).hexdigest()
            filename = kw.get("filename") or "artifact.bin"

            def source() -> Iterator[bytes]:
                for i in range(0, size, CHUNK):
                    yield data[i : i + CHUNK]

        else:
            path = Path(artifact)
            if path.is_dir():
                path = cleanup = bundles.pack_directory(path)
                kw["format"] = kw.get("format") or "bundle"
                filename = kw.get("filename") or f"{Path(artifact).name}.tar"
            else:
                filename = kw.get("filename") or path.name
            if not path.exists():
                raise errors.InvalidArgument(grpc.StatusCode.INVALID_ARGUMENT, f"no such file: {path}")
            size = path.stat().st_size
            digest = kw.get("sha256") or file_sha256(path)

            def source() -> Iterator[bytes]:
                with open(path, "rb") as f:
                    while chunk := f.read(CHUNK):
                        yield chunk

        history = {}
        for key, points in (kw.get("metric_history") or {}).items():
            series = res.MetricSeries()
            for i, p in enumerate(points):
                step, value = p if isinstance(p, (tuple, list)) else (i, p)
                series.points.add(step=int(step), value=float(value))
            history[key] = series
        header = rs.RegisterModelVersionHeader(
            parent=model_name(model),
            create_model=kw.get("create_model", True),
            format=format_enum(kw.get("format")),
            model_type=kw.get("model_type", ""),
            config=_struct(kw.get("config")),
            metrics={k: float(v) for k, v in (kw.get("metrics") or {}).items()},
            metric_history=history,
            lineage=res.Lineage(
                dataset_id=kw.get("dataset_id", ""),
                dataset_hash=kw.get("dataset_hash", ""),
                parent_version=int(kw.get("parent_version") or 0),
                run_id=kw.get("run_id", ""),
                code_revision=kw.get("code_revision", ""),
            ),
            tags=kw.get("tags") or {},
            description=kw.get("description", ""),
            filename=filename,
            sha256=digest,
            size_bytes=size,
            request_id=kw.get("request_id", ""),
            project=kw.get("project", ""),
        )
        signature = kw.get("signature")
        onnx_file = header.format == res.ARTIFACT_FORMAT_ONNX or (
            header.format == res.ARTIFACT_FORMAT_UNSPECIFIED and filename.lower().endswith(".onnx")
        )
        if signature is None and onnx_file:
            signature = signatures.read_onnx(data if isinstance(artifact, (bytes, bytearray, memoryview)) else path)
        if signature is not None:
            header.signature.CopyFrom(signature)

        def requests() -> Iterator[rs.RegisterModelVersionRequest]:
            yield rs.RegisterModelVersionRequest(header=header)
            done = 0
            for chunk in source():
                done += len(chunk)
                yield rs.RegisterModelVersionRequest(chunk=chunk)
                if progress:
                    progress(done, size)

        try:
            return self._call(self.stub.RegisterModelVersion, requests(), timeout=timeout)
        finally:
            if cleanup is not None:
                cleanup.unlink(missing_ok=True)

    def get_version(self, model: str, version: int | str | None = None) -> res.ModelVersion:
        """By number, stage, `latest` (the default) or alias; `get_version("detector@champion")`."""
        return self._call(
            self.stub.GetModelVersion, rs.GetModelVersionRequest(name=version_name(model, version))
        ).model_version

    def list_versions(self, model: str, *, stage: str | None = None, page_size: int = 0) -> Iterator[res.ModelVersion]:
        req = rs.ListModelVersionsRequest(
            parent=model_name(model),
            page_size=page_size,
            stage=stage_enum(stage) if stage else res.STAGE_UNSPECIFIED,
        )
        return self._pages(self.stub.ListModelVersions, req, "model_versions")

    def update_version(
        self, model: str, version: int, *, description: str | None = None, tags: dict[str, str] | None = None
    ) -> res.ModelVersion:
        mv = res.ModelVersion(name=version_name(model, version))
        paths = []
        if description is not None:
            mv.description = description
            paths.append("description")
        if tags is not None:
            mv.tags.update(tags)
            paths.append("tags")
        req = rs.UpdateModelVersionRequest(model_version=mv, update_mask=field_mask_pb2.FieldMask(paths=paths))
        return self._call(self.stub.UpdateModelVersion, req).model_version

    def delete_version(self, model: str, version: int) -> bool:
        return self._call(
            self.stub.DeleteModelVersion, rs.DeleteModelVersionRequest(name=version_name(model, version))
        ).blob_deleted

    # ------------------------------------------------------------------ stages

    def promote(
        self, model: str, version: int | str, stage: str, *, reason: str = ""
    ) -> rs.PromoteModelVersionResponse:
        req = rs.PromoteModelVersionRequest(name=version_name(model, version), stage=stage_enum(stage), reason=reason)
        return self._call(self.stub.PromoteModelVersion, req)

    def history(self, model: str, *, page_size: int = 0) -> Iterator[res.StageTransition]:
        req = rs.ListStageTransitionsRequest(parent=model_name(model), page_size=page_size)
        return self._pages(self.stub.ListStageTransitions, req, "transitions")

    def watch(
        self,
        models: list[str] | tuple[str, ...] = (),
        *,
        types: Sequence[str | int] = (),
        after_sequence: int | None = None,
        **kw: Any,
    ):
        """A resuming `modelreg.watch.Watcher` over WatchEvents (snapshot, events, bookmarks)."""
        from modelreg.watch import Watcher

        return Watcher(
            self._channel, models=models, types=types, after_sequence=after_sequence, metadata=self._metadata, **kw
        )

    def compare(self, model: str, versions: list[int] | None = None) -> rs.CompareModelVersionsResponse:
        req = rs.CompareModelVersionsRequest(parent=model_name(model), versions=versions or [])
        return self._call(self.stub.CompareModelVersions, req)

    # ------------------------------------------------------------------ artifacts

    def download(
        self,
        model: str,
        version: int | str | None = None,
        *,
        dest: str | os.PathLike = ".",
        filename: str | None = None,
        progress: Progress | None = None,
        resume: bool = True,
        timeout: float | None = None,
    ) -> Path:
        """Downloads a version's artifact into `dest` under its self-describing name and
        verifies its sha256. A cut download leaves `<name>.part`; the next call resumes it
        from where it stopped. `version` defaults to production; `download("detector@champion")`
        fetches what the alias points at. Returns the file's path."""
        dest = Path(dest)
        dest.mkdir(parents=True, exist_ok=True)
        # Resolve first so an alias (production) cannot move between resumed attempts.
        mv = self.get_version(model, "production" if version is None and "@" not in model else version)
        target = dest / (filename or mv.artifact.download_filename)
        part = target.with_name(target.name + ".part")
        offset = part.stat().st_size if resume and part.exists() else 0
        if offset > mv.artifact.size_bytes:
            offset = 0
        digest = hashlib.sha256()
        if offset:
            with open(part, "rb") as f:
                while chunk := f.read(CHUNK):
                    digest.update(chunk)
        req = rs.DownloadArtifactRequest(name=mv.name, offset=offset)
        done = offset
        try:
            stream = self.stub.DownloadArtifact(req, metadata=self._metadata, timeout=timeout)
            with open(part, "ab" if offset else "wb") as f:
                header = None
                for msg in stream:
                    if msg.WhichOneof("payload") == "header":
                        header = msg.header
                        continue
                    f.write(msg.chunk)
                    digest.update(msg.chunk)
                    done += len(msg.chunk)
                    if progress:
                        progress(done, mv.artifact.size_bytes)
        except grpc.RpcError as e:
            err = errors.from_rpc_error(e, self.address)
            if isinstance(err, errors.DataLoss):
                part.unlink(missing_ok=True)
            raise err from None
        expected = header.sha256 if header else mv.artifact.sha256
        if digest.hexdigest() != expected or done != mv.artifact.size_bytes:
            part.unlink(missing_ok=True)
            raise errors.IntegrityError(
                f"downloaded bytes hash to {digest.hexdigest()} ({done} bytes) but the registry declared "
                f"{expected} ({mv.artifact.size_bytes} bytes); the partial file was removed, download again"
            )
        os.replace(part, target)
        return target

    def artifact_url(
        self, model: str, version: int | str | None = None, *, expires_in: int = 3600
    ) -> rs.GetArtifactUrlResponse:
        req = rs.GetArtifactUrlRequest(name=version_name(model, version, "production"), expires_in_seconds=expires_in)
        return self._call(self.stub.GetArtifactUrl, req)

    # ------------------------------------------------------------------ agents

    def rollout_status(self, model: str) -> ag.GetRolloutStatusResponse:
        """Desired (production) version against what every serving agent reports."""
        return self._call(self.agents.GetRolloutStatus, ag.GetRolloutStatusRequest(model=model_name(model)))

    def list_agents(self, *, model: str = "", include_stale: bool = False, page_size: int = 0) -> Iterator[ag.Agent]:
        req = ag.ListAgentsRequest(
            page_size=page_size, model=model_name(model) if model else "", include_stale=include_stale
        )
        return self._pages(self.agents.ListAgents, req, "agents")


def file_sha256(path: str | os.PathLike) -> str:
    """Lowercase hex sha256 of a file, read in chunks (bounded memory)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
