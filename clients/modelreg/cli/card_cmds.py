"""Model card commands: `card set` (flags or a YAML/JSON file) and `card get` (Markdown, or
the proto JSON with `-o json`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

from modelreg.cards import STATUSES, card_fields, card_markdown, status_name
from modelreg.cli import UsageError, connect
from modelreg.cli import output as out

# (flag, field, help)
TEXT_FLAGS = (
    ("--summary", "summary", "what the model does, in a paragraph"),
    ("--intended-use", "intended_use", "what it is meant for"),
    ("--out-of-scope-use", "out_of_scope_use", "what it must not be used for"),
    ("--limitations", "limitations", "known limitations and failure modes"),
    ("--training-data", "training_data", "the training data (default shown: the version's lineage)"),
    ("--evaluation", "evaluation", "how it was evaluated (default shown: the version's metrics)"),
    ("--ethical-considerations", "ethical_considerations", "ethical considerations"),
)


def register(sub, common) -> None:
    card = sub.add_parser(
        "card",
        parents=[common],
        help="write or show a version's model card",
        description="modelreg card set NAME VERSION [--file card.yaml] [--summary ...] [--status S] | "
        "modelreg card get NAME VERSION",
    )
    csub = card.add_subparsers(dest="card_command", metavar="SUBCOMMAND")
    csub.required = True
    p = csub.add_parser(
        "set",
        parents=[common],
        help="write fields of a version's card (creating it)",
        description="Writes the fields given (flags override the file's; an empty value clears a field). "
        "Editing an approved card's content sets it back to draft unless --status is given; "
        "--status approved needs a releaser.",
    )
    p.add_argument("name")
    p.add_argument("version", help="a version number, production, staging or latest")
    p.add_argument("--file", "-f", metavar="PATH", help="a YAML or JSON mapping of card fields ('-' reads stdin)")
    for flag, field, text in TEXT_FLAGS:
        p.add_argument(flag, dest=field, default=None, help=text)
    p.add_argument("--extra", default=None, metavar="JSON", help="free-form fields as a JSON object")
    p.add_argument("--status", choices=tuple(STATUSES), default=None, help="the review status")
    p.set_defaults(func=card_set)
    p = csub.add_parser("get", parents=[common], help="print a version's card as Markdown (-o json: the card)")
    p.add_argument("name")
    p.add_argument("version", help="a version number, production, staging or latest")
    p.set_defaults(func=card_get)


def _read_file(path: str) -> dict[str, Any]:
    try:
        text = sys.stdin.read() if path == "-" else Path(path).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read card file {path}: {e}") from None
    try:
        if path.endswith(".json"):
            data = json.loads(text)
        else:
            data = yaml.safe_load(text)  # YAML reads JSON too
    except json.JSONDecodeError as e:
        raise UsageError(f"card file {path} is not valid JSON ({e.msg} at line {e.lineno})") from None
    except yaml.YAMLError as e:
        where = getattr(e, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        problem = getattr(e, "problem", None) or type(e).__name__
        raise UsageError(
            f"card file {path} is neither YAML nor JSON ({problem}{at}); write a mapping like 'summary: ...'"
        ) from None
    if data is None:
        raise UsageError(f"card file {path} is empty; write a mapping like 'summary: ...'")
    try:
        return card_fields(data)
    except ValueError as e:
        raise UsageError(f"card file {path}: {e}") from None


def card_set(args) -> int:
    fields: dict[str, Any] = _read_file(args.file) if args.file else {}
    for _, field, _ in TEXT_FLAGS:
        value = getattr(args, field)
        if value is not None:
            fields[field] = value
    if args.extra is not None:
        try:
            extra = json.loads(args.extra)
        except json.JSONDecodeError as e:
            raise UsageError(
                f'--extra is not valid JSON ({e.msg}); example: --extra \'{{"license": "mit"}}\''
            ) from None
        if not isinstance(extra, dict):
            raise UsageError('--extra must be a JSON object, like --extra \'{"license": "mit"}\'')
        fields["extra"] = extra
    if args.status is not None:
        fields["status"] = args.status
    if not fields:
        raise UsageError("nothing to write: give --file or at least one of --summary, --intended-use, ... --status")
    with connect(args) as c:
        card = c.set_card(args.name, args.version, **fields)
    if args.output == "json":
        out.print_json(card)
        return 0
    updated = f"{out.when(card.update_time)} by {card.updated_by}" if card.updated_by else ""
    out.kv([("card", card.name), ("status", status_name(card.status)), ("updated", updated)])
    return 0


def card_get(args) -> int:
    with connect(args) as c:
        card = c.get_card(args.name, args.version)
    if args.output == "json":
        out.print_json(card)
    else:
        sys.stdout.write(card_markdown(card))
    return 0
