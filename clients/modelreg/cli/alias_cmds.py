"""Alias commands: `modelreg alias set NAME ALIAS VERSION [--reason R] [--protected|--unprotected]
| delete NAME ALIAS [--reason R] | list NAME | history NAME [ALIAS]`."""

from __future__ import annotations

from modelreg.cli import UsageError
from modelreg.cli import output as out
from modelreg.cli.registry_cmds import _client

DESCRIPTION = (
    "Named aliases (MLflow's @champion): a pointer at one version, moved by one call with a reason, "
    "usable wherever a version goes (modelreg get NAME@ALIAS, models/NAME/versions/ALIAS, "
    "modelreg agent --model NAME@ALIAS). A protected alias needs the releaser role to move."
)


def register(sub, common) -> None:
    p = sub.add_parser(
        "alias", parents=[common], help="set, move, delete and list named aliases", description=DESCRIPTION
    )
    asub = p.add_subparsers(dest="alias_command", metavar="SUBCOMMAND")
    asub.required = True

    s = asub.add_parser("set", parents=[common], help="point an alias at a version (create or move it)")
    s.add_argument("name", help="model name")
    s.add_argument("alias", help="alias name, e.g. champion")
    s.add_argument("version", help="version number")
    s.add_argument("--reason", default="", help="why, kept in the alias's history")
    protect = s.add_mutually_exclusive_group()
    protect.add_argument(
        "--protected",
        dest="protected",
        action="store_const",
        const=True,
        default=None,
        help="protect it: only a releaser may then move, delete or unprotect it (default: keep as is)",
    )
    protect.add_argument(
        "--unprotected", dest="protected", action="store_const", const=False, help="remove the protection"
    )
    s.set_defaults(func=alias_set)

    d = asub.add_parser("delete", parents=[common], help="delete an alias")
    d.add_argument("name")
    d.add_argument("alias")
    d.add_argument("--reason", default="")
    d.set_defaults(func=alias_delete)

    ls = asub.add_parser("list", parents=[common], help="a model's aliases")
    ls.add_argument("name")
    ls.set_defaults(func=alias_list)

    h = asub.add_parser("history", parents=[common], help="an alias's moves (or every alias's), newest first")
    h.add_argument("name")
    h.add_argument("alias", nargs="?", default="")
    h.set_defaults(func=alias_history)


def _version(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise UsageError(f"VERSION must be a version number (1, 2, ...), got {value!r}")
    return int(value)


def _at(version: int) -> str:
    return f"v{version}" if version else "-"


def alias_set(args) -> int:
    version = _version(args.version)
    with _client(args) as c:
        resp = c.set_alias(args.name, args.alias, version, reason=args.reason, protected=args.protected)
    if args.output == "json":
        out.print_json(resp)
        return 0
    if resp.HasField("promotion_request"):  # the protected alias's gate needs approvals: nothing moved
        from modelreg.cli.gate_cmds import print_request

        print_request(resp.promotion_request)
        return 0
    a = resp.alias
    flag = " (protected)" if a.protected else ""
    if resp.sequence:
        print(f"{args.name}@{a.alias} -> v{a.version}{flag} (event {resp.sequence})")
    else:
        print(f"{args.name}@{a.alias} already points at v{a.version}{flag}; nothing changed")
    return 0


def alias_delete(args) -> int:
    with _client(args) as c:
        version = c.delete_alias(args.name, args.alias, reason=args.reason)
    if args.output == "json":
        out.print_json({"alias": args.alias, "version": str(version)})
    else:
        print(f"deleted {args.name}@{args.alias} (it pointed at v{version})")
    return 0


def alias_list(args) -> int:
    with _client(args) as c:
        aliases = c.list_aliases(args.name)
    if args.output == "json":
        out.print_json({"aliases": [out.to_dict(a) for a in aliases]})
    else:
        out.table(
            ["alias", "version", "protected", "updated", "by"],
            [
                [a.alias, a.version, "yes" if a.protected else "", out.when(a.update_time), a.updated_by]
                for a in aliases
            ],
        )
    return 0


def alias_history(args) -> int:
    with _client(args) as c:
        changes = list(c.alias_history(args.name, args.alias))
    if args.output == "json":
        out.print_json({"changes": [out.to_dict(ch) for ch in changes]})
    else:
        out.table(
            ["time", "alias", "from", "to", "by", "reason"],
            [
                [out.when(ch.create_time), ch.alias, _at(ch.from_version), _at(ch.to_version), ch.actor, ch.reason]
                for ch in changes
            ],
        )
    return 0
