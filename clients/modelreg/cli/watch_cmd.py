"""`modelreg watch` (follow the event stream) and `modelreg events` (list past events)."""

from __future__ import annotations

import sys

from modelreg import errors
from modelreg.cli import UsageError, connect
from modelreg.cli import output as out
from modelreg.deployments import describe
from modelreg.v1 import event_service_pb2 as es
from modelreg.watch import event_type_enum, event_type_name, list_events


def register(sub, common) -> None:
    p = sub.add_parser(
        "watch",
        parents=[common],
        help="print registry events as they happen (resumes and reconnects by itself)",
        description=(
            "Follow the registry's event stream: first the watched models' state (snapshot), then "
            "every change as it commits. Reconnects with backoff and resumes without losing or "
            "repeating events. With -o json prints one JSON object per line "
            '({"snapshot": ...}, {"event": ...} or {"bookmark": ...}).'
        ),
    )
    p.add_argument("models", nargs="*", metavar="NAME", help="models to watch (default: every model)")
    p.add_argument(
        "--type",
        dest="types",
        action="append",
        metavar="T",
        help="only this event type (repeatable): " + ", ".join(sorted(_type_choices())),
    )
    p.add_argument(
        "--after-sequence",
        type=int,
        metavar="N",
        help="replay every event after sequence N first (default: start now)",
    )
    p.add_argument("--no-snapshot", action="store_true", help="do not print the initial state")
    p.add_argument("--snapshot-only", action="store_true", help="print the current state and exit")
    p.add_argument("--count", type=int, default=0, metavar="N", help="exit after N events (default: run until Ctrl-C)")
    p.add_argument(
        "--bookmark-interval",
        type=int,
        default=0,
        metavar="SECONDS",
        help="seconds between bookmarks on an idle stream (default: the server's, 10)",
    )
    p.set_defaults(func=watch)

    p = sub.add_parser("events", parents=[common], help="list past events in sequence order")
    p.add_argument("models", nargs="*", metavar="NAME", help="models to include (default: every model)")
    p.add_argument("--type", dest="types", action="append", metavar="T", help="only this event type (repeatable)")
    p.add_argument("--after-sequence", type=int, default=0, metavar="N", help="only events after sequence N")
    p.add_argument("--limit", type=int, default=100, metavar="N", help="at most N events (default: 100; 0: all)")
    p.set_defaults(func=events)


def _type_choices() -> list[str]:
    return [n.removeprefix("EVENT_TYPE_").lower() for n in es.EventType.keys() if n != "EVENT_TYPE_UNSPECIFIED"]


def _types(values: list[str] | None) -> list[int]:
    try:
        return [event_type_enum(v) for v in values or []]
    except errors.InvalidArgument as e:
        raise UsageError(f"--type: {e.message}") from None


def _check_sequence(value: int | None) -> None:
    if value is not None and value < 0:
        raise UsageError(f"--after-sequence must be 0 or more, not {value}")


def _event_line(e: es.Event) -> str:
    when = out.when(e.create_time)
    what = f"{e.model} v{e.model_version.rsplit('/', 1)[-1]}" if e.model_version else e.model
    if e.type == es.EVENT_TYPE_STAGE_CHANGED:
        what += f" {out.STAGE_NAMES.get(e.from_stage, '?')} -> {out.STAGE_NAMES.get(e.to_stage, '?')}"
    if e.type == es.EVENT_TYPE_ACCESS_CHANGED:
        d = dict(e.details)
        kind = d.pop("kind", "changed")
        what = " ".join([str(kind), *(f"{k}={v}" for k, v in sorted(d.items()))])
    if e.HasField("deployment"):
        stable, canary = describe(e.deployment)
        what += f" stable={stable} canary={canary}"
    if e.type == es.EVENT_TYPE_ALIAS_CHANGED:  # models/det@champion v1 -> v2 ('-': created or deleted)
        info = out.to_dict(e.details)
        ends = [f"v{int(info[k])}" if info.get(k) else "-" for k in ("from_version", "to_version")]
        what = f"{e.model}@{info.get('alias', '?')} {ends[0]} -> {ends[1]}"
    line = f"#{e.sequence}  {when}  {event_type_name(e.type)}  {what}  by {e.actor}"
    if e.reason:
        line += f"  ({e.reason})"
    return line


def _snapshot_lines(s: es.Snapshot) -> list[str]:
    lines = [f"snapshot at sequence {s.sequence}: {len(s.deployments)} model(s)"]
    for d in s.deployments:
        line = f"  {d.name.removesuffix('/deployment')}  "
        if d.HasField("stable"):
            line += f"production=v{d.stable.version_number} sha256={d.stable.sha256[:12]}"
        else:
            line += "no production version"
        if d.HasField("canary"):
            line += f"  canary=v{d.canary.version_number} at {d.canary_weight}% sha256={d.canary.sha256[:12]}"
        lines.append(line)
    return lines


def watch(args) -> int:
    types = _types(args.types)
    _check_sequence(args.after_sequence)
    if args.count < 0:
        raise UsageError("--count must be 0 (run until Ctrl-C) or more")
    if args.snapshot_only and args.no_snapshot:
        raise UsageError("--snapshot-only and --no-snapshot contradict each other; pick one")
    client = connect(args, timeout=None)

    def on_retry(err, delay: float) -> None:
        why = f"{err.code().name}: {err.details()}" if err is not None else "the server ended the stream"
        if delay:
            print(f"watch interrupted ({why}); reconnecting in {delay:.1f}s", file=sys.stderr, flush=True)
        else:
            print(f"watch restarting from a fresh snapshot ({why})", file=sys.stderr, flush=True)

    watcher = client.watch(
        args.models,
        types=types,
        after_sequence=args.after_sequence,
        snapshot=not args.no_snapshot,
        bookmark_interval=args.bookmark_interval,
        on_retry=on_retry,
    )
    seen = 0
    try:
        for item in watcher:
            kind = item.WhichOneof("payload")
            if args.output == "json":
                out.print_json_line(item)
            elif kind == "snapshot":
                print("\n".join(_snapshot_lines(item.snapshot)), flush=True)
            elif kind == "event":
                print(_event_line(item.event), flush=True)
            if kind == "snapshot" and args.snapshot_only:
                break
            if kind == "event":
                seen += 1
                if args.count and seen >= args.count:
                    break
    finally:
        watcher.close()
        client.close()
    return 0


def events(args) -> int:
    types = _types(args.types)
    _check_sequence(args.after_sequence)
    if args.limit < 0:
        raise UsageError("--limit must be 0 (all) or more")
    client = connect(args)
    got: list[es.Event] = []
    try:
        for e in list_events(
            client._channel,
            models=args.models,
            types=types,
            after_sequence=args.after_sequence,
            page_size=min(args.limit, 1000) if args.limit else 1000,
            metadata=client._metadata,
        ):
            got.append(e)
            if args.limit and len(got) >= args.limit:
                break
    finally:
        client.close()
    if args.output == "json":
        out.print_json({"events": [out.to_dict(e) for e in got]})
        return 0
    for e in got:
        print(_event_line(e))
    return 0
