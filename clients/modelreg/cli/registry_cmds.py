"""Registry commands: models, register, list, get, promote, history, compare, download."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from modelreg import signatures
from modelreg.aliases import split_alias
from modelreg.bundles import extract_bundle
from modelreg.cli import UsageError, connect
from modelreg.cli import output as out
from modelreg.cli.gate_cmds import print_request
from modelreg.client import Client
from modelreg.v1 import registry_service_pb2 as rs
from modelreg.v1 import resources_pb2 as res


def _client(args) -> Client:
    return connect(args)


def _json_arg(value: str | None, flag: str) -> dict | None:
    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as e:
        raise UsageError(
            f"{flag} is not valid JSON ({e.msg} at position {e.pos}); example: {flag} '{{\"epochs\": 100}}'"
        ) from None
    if not isinstance(parsed, dict):
        raise UsageError(f"{flag} must be a JSON object, like {flag} '{{\"lr\": 0.01}}'")
    return parsed


def _tags(values: list[str] | None) -> dict[str, str]:
    tags = {}
    for item in values or []:
        if "=" not in item:
            raise UsageError(f"--tag {item!r} must look like KEY=VALUE")
        k, v = item.split("=", 1)
        tags[k] = v
    return tags


def _progress_bar(label: str):
    """A tqdm progress callback on a terminal; None otherwise."""
    if not sys.stderr.isatty():
        return None, lambda: None
    from tqdm import tqdm

    bar = tqdm(total=0, unit="B", unit_scale=True, unit_divisor=1024, desc=label, file=sys.stderr, leave=False)

    def update(done: int, total: int) -> None:
        if total and bar.total != total:
            bar.total = total
        bar.update(done - bar.n)

    return update, bar.close


def register(sub, common) -> None:
    # models ...
    models = sub.add_parser("models", parents=[common], help="create, list, show, update and delete models")
    msub = models.add_subparsers(dest="models_command", metavar="SUBCOMMAND")
    msub.required = True
    p = msub.add_parser("create", parents=[common], help="create a model")
    p.add_argument("name")
    p.add_argument("--description", default="")
    p.add_argument("--model-type", default="", help="architecture, e.g. yolov8n")
    p.add_argument("--default-config", help="JSON object merged under every version's config")
    p.add_argument("--project", default="", help="the project that owns it (default: default)")
    p.add_argument("--tag", action="append", metavar="K=V")
    p.set_defaults(func=models_create)
    p = msub.add_parser("list", parents=[common], help="list models")
    p.add_argument("--project", default="")
    p.set_defaults(func=models_list)
    p = msub.add_parser("get", parents=[common], help="show a model")
    p.add_argument("name")
    p.set_defaults(func=models_get)
    p = msub.add_parser("update", parents=[common], help="change a model's description, tags, type or default config")
    p.add_argument("name")
    p.add_argument("--description")
    p.add_argument("--model-type")
    p.add_argument("--default-config")
    p.add_argument("--tag", action="append", metavar="K=V")
    p.set_defaults(func=models_update)
    p = msub.add_parser("delete", parents=[common], help="delete a model and its versions")
    p.add_argument("name")
    p.set_defaults(func=models_delete)

    p = sub.add_parser(
        "register", parents=[common], help="register a new version with its artifact (file or directory)"
    )
    p.add_argument("name", help="model name (created if missing)")
    p.add_argument("path", help="artifact file, or a directory to pack into a bundle")
    p.add_argument("--project", default="", help="the project of a model this creates (default: default)")
    p.add_argument("--format", help="onnx, ultralytics_pt, bundle or other (default: from the file name)")
    p.add_argument("--model-type", default="")
    p.add_argument("--metrics", help="JSON object of numbers, e.g. '{\"map50\": 0.71}'")
    p.add_argument("--config", help="JSON object merged over the model's default config")
    p.add_argument("--dataset-id", default="")
    p.add_argument("--dataset-hash", default="")
    p.add_argument("--parent-version", type=int, default=0)
    p.add_argument("--run-id", default="")
    p.add_argument("--code-revision", default="")
    p.add_argument("--description", default="")
    p.add_argument("--tag", action="append", metavar="K=V")
    p.add_argument(
        "--request-id", default="", help="idempotency key: a retry with the same id returns the same version"
    )
    p.set_defaults(func=register_version)

    p = sub.add_parser("list", parents=[common], help="list a model's versions, newest first")
    p.add_argument("name")
    p.add_argument("--stage", help="only versions in this stage")
    p.set_defaults(func=list_versions)

    p = sub.add_parser("get", parents=[common], help="show a version (by number, stage or alias)")
    p.add_argument("name", help="model name, or MODEL@ALIAS")
    p.add_argument("version", nargs="?", help="a number, production, staging, latest or an alias (default: latest)")
    p.set_defaults(func=get_version)

    p = sub.add_parser(
        "promote",
        parents=[common],
        help="move a version to another stage",
        description="modelreg promote NAME VERSION STAGE | modelreg promote NAME@ALIAS STAGE",
    )
    p.add_argument("name", help="model name, or MODEL@ALIAS")
    p.add_argument("version", help="a number, stage or alias (left out after MODEL@ALIAS)")
    p.add_argument("stage", nargs="?", help="staging, production or archived")
    p.add_argument("--reason", default="")
    p.set_defaults(func=promote)

    p = sub.add_parser("history", parents=[common], help="a model's stage transitions, newest first")
    p.add_argument("name")
    p.set_defaults(func=history)

    p = sub.add_parser("compare", parents=[common], help="compare versions' metrics against production")
    p.add_argument("name")
    p.add_argument("versions", nargs="*", type=int, help="version numbers (default: every version)")
    p.set_defaults(func=compare)

    p = sub.add_parser("download", parents=[common], help="download a version's artifact (verified)")
    p.add_argument("name", help="model name, or MODEL@ALIAS")
    p.add_argument("version", nargs="?", help="number, stage or alias (default: production)")
    p.add_argument("--dest", default=".", help="directory to write into (default: .)")
    p.add_argument("--extract", action="store_true", help="unpack a directory bundle into DEST")
    p.set_defaults(func=download)


# ---------------------------------------------------------------------- models


def _model_row(m: res.Model) -> list:
    return [
        m.name.removeprefix("models/"),
        m.model_type,
        m.latest_version or "",
        m.production_version or "",
        out.when(m.update_time),
        m.description,
    ]


MODEL_HEADERS = ["name", "type", "latest", "production", "updated", "description"]


def models_create(args) -> int:
    with _client(args) as c:
        m = c.create_model(
            args.name,
            description=args.description,
            model_type=args.model_type,
            default_config=_json_arg(args.default_config, "--default-config"),
            tags=_tags(args.tag),
            project=args.project,
        )
    if args.output == "json":
        out.print_json(m)
    else:
        print(f"created {m.name}")
    return 0


def models_list(args) -> int:
    with _client(args) as c:
        models = list(c.list_models(project=args.project))
    if args.output == "json":
        out.print_json({"models": [out.to_dict(m) for m in models]})
    else:
        out.table(MODEL_HEADERS, [_model_row(m) for m in models])
    return 0


def models_get(args) -> int:
    with _client(args) as c:
        m = c.get_model(args.name)
    if args.output == "json":
        out.print_json(m)
    else:
        out.kv(
            [
                ("name", m.name),
                ("description", m.description),
                ("type", m.model_type),
                ("project", m.project),
                ("default config", json.dumps(out.to_dict(m).get("defaultConfig", {}))),
                ("tags", out.fmt_map(m.tags)),
                ("latest version", m.latest_version),
                ("production version", m.production_version or "-"),
                ("created", f"{out.when(m.create_time)} by {m.created_by}"),
                ("updated", out.when(m.update_time)),
            ]
        )
    return 0


def models_update(args) -> int:
    with _client(args) as c:
        m = c.update_model(
            args.name,
            description=args.description,
            model_type=args.model_type,
            default_config=_json_arg(args.default_config, "--default-config"),
            tags=_tags(args.tag) if args.tag else None,
        )
    if args.output == "json":
        out.print_json(m)
    else:
        print(f"updated {m.name}")
    return 0


def models_delete(args) -> int:
    with _client(args) as c:
        n = c.delete_model(args.name)
    if args.output == "json":
        out.print_json({"deletedVersions": str(n)})
    else:
        print(f"deleted models/{args.name} and {n} version(s)")
    return 0


# ---------------------------------------------------------------------- versions


def _version_row(v: res.ModelVersion) -> list:
    return [
        v.version,
        out.STAGE_NAMES[v.stage],
        out.FORMAT_NAMES[v.format],
        out.human_size(v.artifact.size_bytes),
        v.artifact.sha256[:12],
        out.fmt_map(v.metrics),
        out.when(v.create_time),
        v.created_by,
    ]


VERSION_HEADERS = ["version", "stage", "format", "size", "sha256", "metrics", "created", "by"]


def register_version(args) -> int:
    path = Path(args.path)
    if not path.exists():
        raise UsageError(f"{path} does not exist; give an artifact file or a directory")
    update, close = _progress_bar(f"uploading {path.name}")
    try:
        with _client(args) as c:
            resp = c.register_full(
                args.name,
                path,
                format=args.format,
                model_type=args.model_type,
                metrics=_json_arg(args.metrics, "--metrics"),
                config=_json_arg(args.config, "--config"),
                dataset_id=args.dataset_id,
                dataset_hash=args.dataset_hash,
                parent_version=args.parent_version,
                run_id=args.run_id,
                code_revision=args.code_revision,
                description=args.description,
                tags=_tags(args.tag),
                request_id=args.request_id,
                project=args.project,
                progress=update,
            )
    finally:
        close()
    v = resp.model_version
    if args.output == "json":
        out.print_json(resp)
    else:
        note = " (already registered with this request id)" if resp.deduplicated else ""
        print(f"registered {v.name}{note}: {out.human_size(v.artifact.size_bytes)}, sha256 {v.artifact.sha256}")
        print(f"next: modelreg promote {args.name} {v.version} staging")
    return 0


def list_versions(args) -> int:
    with _client(args) as c:
        versions = list(c.list_versions(args.name, stage=args.stage))
    if args.output == "json":
        out.print_json({"modelVersions": [out.to_dict(v) for v in versions]})
    else:
        out.table(VERSION_HEADERS, [_version_row(v) for v in versions])
    return 0


def get_version(args) -> int:
    with _client(args) as c:
        v = c.get_version(args.name, args.version)
    if args.output == "json":
        out.print_json(v)
        return 0
    d = out.to_dict(v)
    lin = v.lineage
    out.kv(
        [
            ("name", v.name),
            ("stage", out.STAGE_NAMES[v.stage]),
            ("aliases", ", ".join(v.aliases)),
            ("format", out.FORMAT_NAMES[v.format]),
            ("model type", v.model_type),
            ("artifact", f"{v.artifact.download_filename} ({out.human_size(v.artifact.size_bytes)})"),
            ("sha256", v.artifact.sha256),
            ("metrics", out.fmt_map(v.metrics)),
            ("config", json.dumps(d.get("config", {}), sort_keys=True)),
            ("lineage", out.fmt_map({k: x for k, x in out.to_dict(lin).items()})),
            ("tags", out.fmt_map(v.tags)),
            ("description", v.description),
            ("created", f"{out.when(v.create_time)} by {v.created_by}"),
            ("updated", out.when(v.update_time)),
            *_signature_rows(v),
        ]
    )
    return 0


def _signature_rows(v: res.ModelVersion) -> list[tuple[str, str]]:
    """`signature` (where it came from), then one `input` / `output` row per tensor."""
    if not v.HasField("signature"):
        unknown = "unknown until an agent first loads it" if v.format == res.ARTIFACT_FORMAT_ULTRALYTICS_PT else "none"
        return [("signature", unknown)]
    return [("signature", signatures.SOURCE_NAMES.get(v.signature.source, ""))] + signatures.signature_lines(
        v.signature
    )


def promote(args) -> int:
    version, stage = args.version, args.stage
    if stage is None:
        if "@" not in args.name:
            raise UsageError("give the stage: modelreg promote NAME VERSION STAGE (or NAME@ALIAS STAGE)")
        version, stage = split_alias(args.name)[1], version
    with _client(args) as c:
        resp = c.promote(args.name, version, stage, reason=args.reason)
    if args.output == "json":
        out.print_json(resp)
    elif resp.HasField("promotion_request"):  # the gate needs approvals: nothing moved yet
        print_request(resp.promotion_request)
    else:
        v = resp.model_version
        print(f"{v.name} is now in {out.STAGE_NAMES[v.stage]}")
        if resp.HasField("archived_version"):
            print(f"{resp.archived_version.name} (previous production) is now archived")
    return 0


def history(args) -> int:
    with _client(args) as c:
        items = list(c.history(args.name))
    if args.output == "json":
        out.print_json({"transitions": [out.to_dict(t) for t in items]})
    else:
        out.table(
            ["time", "version", "from", "to", "actor", "reason"],
            [
                [
                    out.when(t.create_time),
                    t.model_version.rsplit("/", 1)[-1],
                    out.STAGE_NAMES[t.from_stage],
                    out.STAGE_NAMES[t.to_stage],
                    out.actor(t),
                    t.reason,
                ]
                for t in items
            ],
        )
    return 0


def compare(args) -> int:
    with _client(args) as c:
        resp: rs.CompareModelVersionsResponse = c.compare(args.name, args.versions)
    if args.output == "json":
        out.print_json(resp)
        return 0
    keys = list(resp.metric_keys)
    rows = []
    for v in resp.versions:
        cells = [v.version, out.STAGE_NAMES[v.stage]]
        for k in keys:
            if k in v.metrics:
                cell = out.number(v.metrics[k])
                if k in v.deltas and v.version != resp.production_version:
                    cell += f" ({v.deltas[k]:+.4g})"
                cells.append(cell)
            else:
                cells.append("-")
        cells += [out.human_size(v.size_bytes), out.when(v.create_time)]
        cells.append(_signature_cell(v, resp))
        rows.append(cells)
    out.table(["version", "stage", *keys, "size", "created", "signature"], rows)
    if resp.production_version:
        print(f"(deltas against production version {resp.production_version})")
    for v in resp.versions:
        if v.signature_differs:
            print(
                f"v{v.version}'s signature differs from production v{resp.production_version}'s (a breaking change "
                f"for the app): {'; '.join(v.signature_changes)}"
            )
    return 0


def _signature_cell(v: rs.VersionComparison, resp: rs.CompareModelVersionsResponse) -> str:
    """DIFFERS from production's, `same` as production's, `unknown`, or `-` (production itself,
    or nothing known to compare with)."""
    if not v.HasField("signature"):
        return "unknown"
    if v.signature_differs:
        return "DIFFERS"
    prod = next((p for p in resp.versions if p.version == resp.production_version), None)
    return "same" if prod is not None and prod.HasField("signature") and v.version != prod.version else "-"


def download(args) -> int:
    with _client(args) as c:
        # Resolve once: an alias (production) cannot move between the check and the bytes.
        default = "production" if args.version is None and "@" not in args.name else args.version
        v = c.get_version(args.name, default)
        if args.extract and v.format != res.ARTIFACT_FORMAT_BUNDLE:
            kind = out.FORMAT_NAMES.get(v.format) or "single-file"
            raise UsageError(
                f"{v.name} is a {kind} artifact ({v.artifact.download_filename}), not a directory bundle; "
                "--extract only unpacks versions registered from a directory: drop --extract"
            )
        update, close = _progress_bar("downloading")
        try:
            path = c.download(split_alias(args.name)[0], v.version, dest=args.dest, progress=update)
        finally:
            close()
    extracted = None
    if args.extract:
        extracted = extract_bundle(path, Path(args.dest))
        path.unlink()
    if args.output == "json":
        out.print_json(
            {
                "path": str(extracted or path),
                "modelVersion": v.name,
                "sha256": v.artifact.sha256,
                "sizeBytes": str(v.artifact.size_bytes),
                "verified": True,
            }
        )
    else:
        where = f"extracted into {extracted}" if extracted else str(path)
        print(f"{where} (sha256 verified)")
    return 0
