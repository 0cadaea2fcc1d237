"""Identity and access commands: `auth whoami`, `auth can-i`, and the admin's `projects`,
`principals`, `tokens` and `roles`.

`-o json` prints the response message's proto JSON with every field, zeros included
(`"allowed": false`), and a list command prints the whole listing in the response's field
(`{"tokens": [...]}`), every page followed. A token's secret is printed by `tokens create`
and nowhere else; the human form puts it alone on stdout (the note about it on stderr), so
`TOKEN=$(modelreg tokens create ...)` captures only the secret.
"""

from __future__ import annotations

import re
import sys
import time
from datetime import timedelta

from modelreg.cli import UsageError, connect
from modelreg.cli import output as out
from modelreg.v1 import auth_service_pb2 as au

ROLES = ("viewer", "trainer", "agent", "releaser", "project-admin", "admin")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"(\d+)([smhd]?)")
#: google.protobuf.Duration's limit (10,000 years).
MAX_SECONDS = 315_576_000_000


def parse_duration(text: str) -> timedelta:
    """`30d`, `12h`, `90m`, `3600s` or `3600` (seconds) -> timedelta. Raises UsageError
    for anything else, zero included."""
    m = _DURATION.fullmatch(text.strip().lower())
    if not m:
        raise UsageError(
            f"--expires {text!r} is not a duration: use a number with d, h, m or s, like 30d, 12h, 90m or 3600s"
        )
    seconds = int(m[1]) * _UNITS[m[2]]
    if seconds <= 0:
        raise UsageError(f"--expires {text!r} must be more than zero; leave --expires out for no expiry")
    if seconds > MAX_SECONDS:
        raise UsageError(f"--expires {text!r} is longer than 10000 years; leave --expires out for no expiry")
    return timedelta(seconds=seconds)


def register(sub, common) -> None:
    a = sub.add_parser("auth", parents=[common], help="who am I, and may I")
    asub = a.add_subparsers(dest="auth_command", metavar="SUBCOMMAND")
    asub.required = True
    p = asub.add_parser("whoami", parents=[common], help="the calling principal, its roles and its token")
    p.set_defaults(func=whoami)
    p = asub.add_parser(
        "can-i",
        parents=[common],
        help="may I do VERB on RESOURCE? prints yes or no; exit 0 for yes, 1 for no",
        description="Ask the registry whether the caller may do VERB (read, download, watch, create, register, "
        "update, delete, promote, canary, rollback, set-policy, report, grant, or a permission such as "
        "versions.promote) on RESOURCE (models/NAME, projects/NAME, models, projects, principals, tokens). "
        "Prints yes or no and exits 0 for yes, 1 for no.",
    )
    p.add_argument("verb")
    p.add_argument("resource", help="e.g. models/detector, or models with --project")
    p.add_argument("--project", default="", help="the project of a collection such as models (default: default)")
    p.set_defaults(func=can_i)

    pr = sub.add_parser("projects", parents=[common], help="projects own models (admin)")
    psub = pr.add_subparsers(dest="projects_command", metavar="SUBCOMMAND")
    psub.required = True
    p = psub.add_parser("create", parents=[common], help="create a project")
    p.add_argument("name")
    p.add_argument("--description", default="")
    p.set_defaults(func=projects_create)
    p = psub.add_parser("list", parents=[common], help="list projects (an admin sees all, others their own)")
    p.set_defaults(func=projects_list)
    p = psub.add_parser("delete", parents=[common], help="delete a project that owns no models, and its bindings")
    p.add_argument("name")
    p.set_defaults(func=projects_delete)

    pr = sub.add_parser("principals", parents=[common], help="users and service accounts (admin)")
    psub = pr.add_subparsers(dest="principals_command", metavar="SUBCOMMAND")
    psub.required = True
    p = psub.add_parser("create", parents=[common], help="create a principal")
    p.add_argument("name")
    p.add_argument("--service-account", action="store_true", help="a machine (CI, a serving agent), not a person")
    p.set_defaults(func=principals_create)
    p = psub.add_parser("list", parents=[common], help="list principals")
    p.set_defaults(func=principals_list)

    tk = sub.add_parser("tokens", parents=[common], help="bearer tokens (admin)")
    tsub = tk.add_subparsers(dest="tokens_command", metavar="SUBCOMMAND")
    tsub.required = True
    p = tsub.add_parser(
        "create", parents=[common], help="create a token; its secret is printed once (-o json: field token)"
    )
    p.add_argument("name", help="the token's name, unique across the registry")
    p.add_argument("--principal", required=True, help="the principal it authenticates")
    p.add_argument("--expires", help="lifetime: 30d, 12h, 90m, 3600s (default: never expires)")
    p.set_defaults(func=tokens_create)
    p = tsub.add_parser("list", parents=[common], help="list tokens (never their secrets)")
    p.add_argument("--principal", default="", help="only this principal's tokens")
    p.set_defaults(func=tokens_list)
    p = tsub.add_parser("revoke", parents=[common], help="revoke a token: calls with it fail from now on")
    p.add_argument("name")
    p.set_defaults(func=tokens_revoke)

    rl = sub.add_parser("roles", parents=[common], help="role bindings: who may do what in which project")
    rsub = rl.add_subparsers(dest="roles_command", metavar="SUBCOMMAND")
    rsub.required = True
    for verb, func, what in (("grant", roles_grant, "bind"), ("revoke", roles_revoke, "unbind")):
        p = rsub.add_parser(verb, parents=[common], help=f"{what} a role: {', '.join(ROLES)}")
        p.add_argument("principal")
        p.add_argument("role", help=", ".join(ROLES))
        p.add_argument("--project", default="", help="the project (default: default; none for admin)")
        p.set_defaults(func=func)
    p = rsub.add_parser("list", parents=[common], help="list role bindings")
    p.add_argument("--project", default="", help="only bindings in this project")
    p.add_argument("--principal", default="", help="only this principal's bindings")
    p.set_defaults(func=roles_list)


def _id(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def _expiry(t: au.ApiToken) -> str:
    return out.when(t.expire_time) if t.HasField("expire_time") else "never"


# ---------------------------------------------------------------------- auth


def whoami(args) -> int:
    with connect(args) as c:
        me = c.whoami()
    if args.output == "json":
        out.print_json(me, defaults=True)
        return 0
    p = me.principal
    kind = "service account" if p.service_account else "user"
    pairs = [("principal", f"{p.principal_id or _id(p.name)} ({kind})")]
    if not me.auth_enabled:
        pairs.append(("auth", "off: the registry checks no credentials, every caller may do everything"))
    else:
        pairs.append(("authenticated by", me.authenticated_by))
    if me.HasField("token"):
        pairs.append(("token", f"{me.token.token_id or _id(me.token.name)}, expires {_expiry(me.token)}"))
    out.kv(pairs)
    if me.bindings:
        print()
        out.table(["role", "project"], [[b.role, b.project or "(global)"] for b in me.bindings])
    elif me.auth_enabled:
        print("no roles")
    return 0


def can_i(args) -> int:
    with connect(args) as c:
        resp = c.can_i(args.verb, args.resource, args.project)
    if args.output == "json":
        out.print_json(resp, defaults=True)
    else:
        print("yes" if resp.allowed else "no")
        if not resp.allowed and resp.reason:
            print(resp.reason, file=sys.stderr)
    return 0 if resp.allowed else 1


# ---------------------------------------------------------------------- projects


def projects_create(args) -> int:
    with connect(args) as c:
        p = c.create_project(args.name, args.description)
    if args.output == "json":
        out.print_json(au.CreateProjectResponse(project=p), defaults=True)
    else:
        print(f"created {p.name}")
    return 0


def projects_list(args) -> int:
    with connect(args) as c:
        projects = list(c.list_projects())
    if args.output == "json":
        out.print_json(au.ListProjectsResponse(projects=projects), defaults=True)
    else:
        out.table(
            ["name", "created", "by", "description"],
            [[p.project_id or _id(p.name), out.when(p.create_time), p.created_by, p.description] for p in projects],
        )
    return 0


def projects_delete(args) -> int:
    with connect(args) as c:
        n = c.delete_project(args.name)
    if args.output == "json":
        out.print_json(au.DeleteProjectResponse(deleted_bindings=n), defaults=True)
    else:
        print(f"deleted projects/{_id(args.name)} and {n} role binding(s)")
    return 0


# ---------------------------------------------------------------------- principals


def principals_create(args) -> int:
    with connect(args) as c:
        p = c.create_principal(args.name, service_account=args.service_account)
    if args.output == "json":
        out.print_json(au.CreatePrincipalResponse(principal=p), defaults=True)
    else:
        print(f"created {p.name}" + (" (service account)" if p.service_account else ""))
        print(f"next: modelreg tokens create {_id(p.name)}-token --principal {_id(p.name)}")
    return 0


def principals_list(args) -> int:
    with connect(args) as c:
        principals = list(c.list_principals())
    if args.output == "json":
        out.print_json(au.ListPrincipalsResponse(principals=principals), defaults=True)
    else:
        out.table(
            ["name", "kind", "created", "by"],
            [
                [
                    p.principal_id or _id(p.name),
                    "service account" if p.service_account else "user",
                    out.when(p.create_time),
                    p.created_by,
                ]
                for p in principals
            ],
        )
    return 0


# ---------------------------------------------------------------------- tokens


def tokens_create(args) -> int:
    expires = parse_duration(args.expires) if args.expires is not None else None
    with connect(args) as c:
        resp = c.create_token(args.name, args.principal, expires)
    if args.output == "json":
        out.print_json(resp, defaults=True)
        return 0
    t = resp.api_token
    print(resp.token, flush=True)
    print(
        f"token {t.token_id or _id(t.name)} for {_id(t.principal)}, expires {_expiry(t)}. "
        "This secret is shown only once: store it now (the registry keeps only its hash).",
        file=sys.stderr,
    )
    return 0


def _state(t: au.ApiToken) -> str:
    if t.HasField("revoke_time"):
        return "revoked"
    if t.HasField("expire_time") and t.expire_time.seconds <= time.time():
        return "expired"
    return "live"


def tokens_list(args) -> int:
    with connect(args) as c:
        tokens = list(c.list_tokens(args.principal))
    if args.output == "json":
        out.print_json(au.ListTokensResponse(tokens=tokens), defaults=True)
    else:
        out.table(
            ["name", "principal", "state", "expires", "last used", "created", "by"],
            [
                [
                    t.token_id or _id(t.name),
                    _id(t.principal),
                    _state(t),
                    _expiry(t),
                    out.when(t.last_use_time) if t.HasField("last_use_time") else "never",
                    out.when(t.create_time),
                    t.created_by,
                ]
                for t in tokens
            ],
        )
    return 0


def tokens_revoke(args) -> int:
    with connect(args) as c:
        t = c.revoke_token(args.name)
    if args.output == "json":
        out.print_json(au.RevokeTokenResponse(api_token=t), defaults=True)
    else:
        print(
            f"revoked token {t.token_id or _id(t.name)} of {_id(t.principal)}: calls with it now fail (UNAUTHENTICATED)"
        )
    return 0


# ---------------------------------------------------------------------- roles


def _where(project: str, role: str) -> str:
    if role == "admin" and not project:
        return "globally"
    return f"in project {_id(project) or 'default'}"


def roles_grant(args) -> int:
    with connect(args) as c:
        b = c.grant_role(args.principal, args.role, args.project)
    if args.output == "json":
        out.print_json(au.GrantRoleResponse(binding=b), defaults=True)
    else:
        print(f"granted {b.role} to {b.principal} {_where(b.project, b.role)}")
    return 0


def roles_revoke(args) -> int:
    with connect(args) as c:
        removed = c.revoke_role(args.principal, args.role, args.project)
    if args.output == "json":
        out.print_json(au.RevokeRoleResponse(removed=removed), defaults=True)
    elif removed:
        print(f"revoked {args.role} from {_id(args.principal)} {_where(args.project, args.role)}")
    else:
        print(f"{_id(args.principal)} had no {args.role} role {_where(args.project, args.role)}; nothing to revoke")
    return 0


def roles_list(args) -> int:
    with connect(args) as c:
        bindings = list(c.list_role_bindings(args.project, args.principal))
    if args.output == "json":
        out.print_json(au.ListRoleBindingsResponse(bindings=bindings), defaults=True)
    else:
        out.table(
            ["principal", "role", "project", "created", "by"],
            [[b.principal, b.role, b.project or "(global)", out.when(b.create_time), b.created_by] for b in bindings],
        )
    return 0
