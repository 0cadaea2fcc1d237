"""Webhook commands: `modelreg webhooks create NAME --url URL --events TYPE[,TYPE...]
[--model M ...] [--project P] [--secret-file F] [--after-sequence N] | list [--project P] |
get NAME | delete NAME | deliveries NAME [--failed] | redeliver NAME DELIVERY_ID`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modelreg import errors
from modelreg.cli import UsageError
from modelreg.cli import output as out
from modelreg.cli.registry_cmds import _client
from modelreg.v1 import webhook_pb2 as wh
from modelreg.watch import EVENT_TYPES, event_type_enum, event_type_name

DESCRIPTION = (
    "Webhooks: the registry POSTs each matching event, signed (X-Modelreg-Signature: v1=HMAC-SHA256), to a URL, "
    "at least once and in sequence order, retrying for up to 24 hours. Event types use the spelling of "
    "'modelreg watch --type': " + ", ".join(sorted(EVENT_TYPES)) + "."
)
STATES = {
    wh.DELIVERY_STATE_PENDING: "pending",
    wh.DELIVERY_STATE_DELIVERED: "delivered",
    wh.DELIVERY_STATE_FAILED: "failed",
}


def register(sub, common) -> None:
    p = sub.add_parser(
        "webhooks", parents=[common], help="signed HTTP notifications of registry events", description=DESCRIPTION
    )
    wsub = p.add_subparsers(dest="webhooks_command", metavar="SUBCOMMAND")
    wsub.required = True

    c = wsub.add_parser("create", parents=[common], help="create a webhook (its secret is shown once)")
    c.add_argument("name", help="webhook name, e.g. ci-notify")
    c.add_argument("--url", required=True, help="http(s) URL the events are POSTed to")
    c.add_argument(
        "--events",
        required=True,
        action="append",
        metavar="TYPE[,TYPE...]",
        help="event types, comma-separated, as 'modelreg watch --type' spells them (e.g. stage_changed)",
    )
    c.add_argument(
        "--model",
        dest="models",
        action="extend",
        nargs="+",
        default=[],
        metavar="M",
        help="only these models' events (--model a b, --model a --model b or --model a,b; default: every model "
        "of the project)",
    )
    c.add_argument("--project", default="", help="the project (default: the first --model's, else 'default')")
    c.add_argument(
        "--secret-file",
        metavar="F",
        help="read the signing secret from F (then it is never shown); default: generate one and show it once",
    )
    c.add_argument("--after-sequence", type=int, metavar="N", help="first deliver the matching events after N")
    c.set_defaults(func=webhook_create)

    ls = wsub.add_parser("list", parents=[common], help="list webhooks")
    ls.add_argument("--project", default="", help="only this project's")
    ls.set_defaults(func=webhook_list)

    g = wsub.add_parser("get", parents=[common], help="show a webhook")
    g.add_argument("name")
    g.set_defaults(func=webhook_get)

    d = wsub.add_parser("delete", parents=[common], help="delete a webhook and its deliveries")
    d.add_argument("name")
    d.set_defaults(func=webhook_delete)

    dl = wsub.add_parser("deliveries", parents=[common], help="a webhook's deliveries, newest first")
    dl.add_argument("name")
    dl.add_argument("--failed", action="store_true", help="only deliveries that failed for good")
    dl.add_argument("--limit", type=int, default=100, metavar="N", help="at most N (default: 100; 0: all)")
    dl.set_defaults(func=webhook_deliveries)

    r = wsub.add_parser("redeliver", parents=[common], help="send a delivery again (same delivery id)")
    r.add_argument("name")
    r.add_argument("delivery_id", metavar="DELIVERY_ID")
    r.set_defaults(func=webhook_redeliver)


def _split(values: list[str]) -> list[str]:
    return [v.strip() for value in values for v in value.split(",") if v.strip()]


def _types(values: list[str]) -> list[int]:
    names = _split(values)
    if not names:
        raise UsageError("--events needs at least one event type, e.g. --events stage_changed,deployment_changed")
    try:
        return [event_type_enum(n) for n in names]
    except errors.InvalidArgument as e:
        raise UsageError(f"--events: {e.message}") from None


def _read_secret(path: str | None) -> str:
    if path is None:
        return ""
    try:
        secret = Path(path).read_text().strip()
    except OSError as e:
        raise UsageError(f"--secret-file: cannot read {path}: {e.strerror or e}") from None
    if not secret:
        raise UsageError(f"--secret-file: {path} is empty; put the signing secret in it")
    return secret


def _type_names(types) -> str:
    return ",".join(event_type_name(t).lower() for t in types)


def _short(name: str) -> str:
    return name.removeprefix("webhooks/")


def webhook_create(args) -> int:
    types = _types(args.events)
    secret = _read_secret(args.secret_file)
    with _client(args) as c:
        hook, generated = c.create_webhook(
            args.name,
            args.url,
            types,
            models=_split(args.models),
            project=args.project,
            secret=secret,
            after_sequence=args.after_sequence,
        )
    if args.output == "json":
        doc: dict[str, Any] = {"webhook": out.to_dict(hook, defaults=True)}
        if generated:
            doc["secret"] = generated
        out.print_json(doc)
        return 0
    print(f"created {hook.name} in project {hook.project}: {_type_names(hook.event_types)} -> {hook.url}")
    if generated:
        print(f"secret: {generated}")
        print("(shown only now: store it where the receiver verifies X-Modelreg-Signature)")
    return 0


def webhook_list(args) -> int:
    with _client(args) as c:
        hooks = list(c.list_webhooks(args.project))
    if args.output == "json":
        out.print_json({"webhooks": [out.to_dict(h, defaults=True) for h in hooks]})
        return 0
    out.table(
        ["name", "project", "events", "models", "url", "pending", "failed"],
        [
            [
                _short(h.name),
                h.project,
                _type_names(h.event_types),
                ",".join(m.removeprefix("models/") for m in h.models) or "(all)",
                h.url,
                h.pending_deliveries,
                h.failed_deliveries,
            ]
            for h in hooks
        ],
    )
    return 0


def webhook_get(args) -> int:
    with _client(args) as c:
        h = c.get_webhook(args.name)
    if args.output == "json":
        out.print_json({"webhook": out.to_dict(h, defaults=True)})
        return 0
    out.kv(
        [
            ("name", h.name),
            ("project", h.project),
            ("url", h.url),
            ("events", _type_names(h.event_types)),
            ("models", ", ".join(h.models) or "(every model of the project)"),
            ("created", f"{out.when(h.create_time)} by {h.created_by}"),
            ("cursor", f"sequence {h.cursor_sequence}"),
            ("pending", h.pending_deliveries),
            ("failed", h.failed_deliveries),
        ]
    )
    return 0


def webhook_delete(args) -> int:
    with _client(args) as c:
        c.delete_webhook(args.name)
    if args.output == "json":
        out.print_json({"deleted": f"webhooks/{_short(args.name)}"})
    else:
        print(f"deleted webhooks/{_short(args.name)}")
    return 0


def webhook_deliveries(args) -> int:
    if args.limit < 0:
        raise UsageError(f"--limit must be 0 or more, not {args.limit}")
    with _client(args) as c:
        rows = []
        for d in c.list_deliveries(args.name, failed_only=args.failed):
            rows.append(d)
            if args.limit and len(rows) >= args.limit:
                break
    if args.output == "json":
        out.print_json({"deliveries": [out.to_dict(d, defaults=True) for d in rows]})
        return 0
    out.table(
        ["delivery", "sequence", "event", "state", "attempts", "status", "last attempt", "error"],
        [
            [
                d.delivery_id,
                d.sequence,
                event_type_name(d.event_type).lower(),
                STATES.get(d.state, ""),
                d.attempts,
                d.last_status_code or "",
                out.when(d.last_attempt_time),
                d.last_error,
            ]
            for d in rows
        ],
    )
    return 0


def webhook_redeliver(args) -> int:
    with _client(args) as c:
        d = c.redeliver(args.name, args.delivery_id)
    if args.output == "json":
        out.print_json({"delivery": out.to_dict(d, defaults=True)})
    else:
        print(f"delivery {d.delivery_id} (event {d.sequence}) queued again for webhooks/{_short(args.name)}")
    return 0
