"""Printing: tables for people, `-o json` (the proto's JSON names) for programs."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message

STAGE_NAMES = {0: "", 1: "none", 2: "staging", 3: "production", 4: "archived"}
FORMAT_NAMES = {0: "", 1: "onnx", 2: "ultralytics_pt", 3: "bundle", 4: "other"}


def to_dict(msg: Message, defaults: bool = False) -> dict[str, Any]:
    """The proto JSON of a message; `defaults` also prints fields at their zero value
    (`"allowed": false`), for programs that index fields."""
    return json_format.MessageToDict(msg, always_print_fields_with_no_presence=defaults)


def print_json(value: Message | dict | list, defaults: bool = False) -> None:
    if isinstance(value, Message):
        value = to_dict(value, defaults)
    json.dump(value, sys.stdout, indent=2, sort_keys=False)
    sys.stdout.write("\n")
    sys.stdout.flush()


def print_json_line(value: Message | dict) -> None:
    if isinstance(value, Message):
        value = to_dict(value)
    sys.stdout.write(json.dumps(value, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def when(ts) -> str:
    if ts is None or (ts.seconds == 0 and ts.nanos == 0):
        return ""
    return datetime.fromtimestamp(ts.seconds, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def number(x: float) -> str:
    return f"{x:.6g}"


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    rows = [[("" if c is None else str(c)) for c in r] for r in rows]
    widths = [len(h) for h in headers]
    for r in rows:
        for i, c in enumerate(r):
            widths[i] = max(widths[i], len(c))
    line = "  ".join(h.upper().ljust(widths[i]) for i, h in enumerate(headers)).rstrip()
    print(line)
    for r in rows:
        print("  ".join(c.ljust(widths[i]) for i, c in enumerate(r)).rstrip())


def kv(pairs: Sequence[tuple[str, Any]]) -> None:
    width = max((len(k) for k, _ in pairs), default=0)
    for k, v in pairs:
        print(f"{k.ljust(width)}  {v}")


def fmt_map(m) -> str:
    return ", ".join(f"{k}={number(v) if isinstance(v, float) else v}" for k, v in sorted(dict(m).items()))


def actor(row) -> str:
    """A history row's who: `ana`, `ana (token ci-1)`, `ana (token ci-1, for bob)`. The
    principal is the authenticated one; `on_behalf_of` is only the caller's own text."""
    extra = [f"token {row.token_name.removeprefix('tokens/')}"] if row.token_name else []
    if row.on_behalf_of and row.on_behalf_of != row.actor:
        extra.append(f"for {row.on_behalf_of}")
    return f"{row.actor} ({', '.join(extra)})" if extra else row.actor
