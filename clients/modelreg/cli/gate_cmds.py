"""Governance commands: `gates set|get|clear|check`, `requests list`, `approve`, `reject`,
and how `promote` shows a promotion request.

Exit codes: 0 on success, 1 when `gates check` fails or the registry refuses, 2 for bad
usage. `-o json` prints the RPC's response message as proto JSON with every field (false
and zero included), so a script can read `evaluation.passed` without a default; list
commands print every page's items under the response's field (`requests`).
"""

from __future__ import annotations

from modelreg.cli import UsageError, connect
from modelreg.cli import output as out
from modelreg.gates import STATE_NAMES, describe_check
from modelreg.v1 import governance_pb2 as gv

METRIC_FLAGS = (("--min", "min"), ("--max", "max"), ("--max-drop", "max_drop"), ("--max-rise", "max_rise"))
METRIC_HELP = (
    "METRIC must be at least VALUE (repeatable; a missing metric fails)",
    "METRIC must be at most VALUE (repeatable)",
    "METRIC may fall at most DELTA below the version in the stage now (repeatable)",
    "METRIC may rise at most DELTA above the version in the stage now (repeatable)",
)


def register(sub, common) -> None:
    gates = sub.add_parser(
        "gates",
        parents=[common],
        help="quality gates: what a version must satisfy to enter a stage or a protected alias",
        description="modelreg gates set|get|clear|check ...",
    )
    gsub = gates.add_subparsers(dest="gates_command", metavar="SUBCOMMAND")
    gsub.required = True

    p = gsub.add_parser(
        "set",
        parents=[common],
        help="replace a stage's gate policy",
        description="Replaces the gate policy of a model's stage (production, staging) or protected alias. "
        "Checks: --min/--max METRIC=VALUE (absolute bounds), --max-drop/--max-rise METRIC=DELTA (change against "
        "the version in the stage now), --require-card (an approved model card), --approvals N (N approvals "
        "from principals other than the requester; needs auth on), --same-signature (the version's inputs must match "
        "the production version's; passes while no other version is in production).",
    )
    p.add_argument("name", help="model name")
    p.add_argument("--stage", required=True, help="production, staging or an alias name")
    for (flag, dest), says in zip(METRIC_FLAGS, METRIC_HELP, strict=True):
        what = "DELTA" if "-" in flag[2:] else "VALUE"
        p.add_argument(flag, dest=dest, action="append", default=[], metavar=f"METRIC={what}", help=says)
    p.add_argument("--require-card", action="store_true", help="the version's model card must be approved")
    p.add_argument("--approvals", type=int, default=0, metavar="N", help="approvals needed from other releasers")
    p.add_argument(
        "--same-signature",
        action="store_true",
        help="the version's inputs (names, element types, shapes) must match the production version's",
    )
    p.add_argument(
        "--rollback-skips-metrics",
        type=str.lower,
        choices=("true", "false"),
        default="true",
        help="a rollback to a version that held the stage before skips the metric checks (default: true)",
    )
    p.set_defaults(func=gates_set)

    p = gsub.add_parser("get", parents=[common], help="show a model's gate policies")
    p.add_argument("name")
    p.add_argument("--stage", default="", help="only this stage's or alias's policy")
    p.set_defaults(func=gates_get)

    p = gsub.add_parser("clear", parents=[common], help="remove a stage's gate policy")
    p.add_argument("name")
    p.add_argument("--stage", required=True)
    p.set_defaults(func=gates_clear)

    p = gsub.add_parser(
        "check",
        parents=[common],
        help="evaluate a version against a stage's gate without moving it (exit 1 when it fails: for CI)",
    )
    p.add_argument("name")
    p.add_argument("version", help="a number, latest, staging or an alias")
    p.add_argument("--stage", default="production", help="the stage or alias to check against (default: production)")
    p.set_defaults(func=gates_check)

    requests = sub.add_parser("requests", parents=[common], help="promotion requests waiting for approvals")
    rsub = requests.add_subparsers(dest="requests_command", metavar="SUBCOMMAND")
    rsub.required = True
    p = rsub.add_parser("list", parents=[common], help="list promotion requests, newest first")
    p.add_argument("name", nargs="?", default="", help="only this model's")
    p.add_argument("--state", choices=("pending", "approved", "rejected", "expired", "superseded"), default="")
    p.set_defaults(func=requests_list)

    p = sub.add_parser(
        "approve", parents=[common], help="approve a pending promotion request (the last approval promotes)"
    )
    p.add_argument("name")
    p.add_argument("version", type=int)
    p.add_argument("--stage", required=True, help="the request's stage: production or staging")
    p.add_argument("--reason", default="")
    p.set_defaults(func=approve)

    p = sub.add_parser("reject", parents=[common], help="reject a pending promotion request, closing it")
    p.add_argument("name")
    p.add_argument("version", type=int)
    p.add_argument("--stage", required=True, help="the request's stage: production or staging")
    p.add_argument("--reason", required=True, help="why (required): what the requester should change")
    p.set_defaults(func=reject)


# ---------------------------------------------------------------------- policies


def _bounds(specs: list[str], flag: str) -> dict[str, float]:
    """`["map50=0.6"]` to `{"map50": 0.6}`; a malformed one is a usage error."""
    bounds: dict[str, float] = {}
    for spec in specs:
        metric, sep, raw = spec.partition("=")
        metric = metric.strip()
        if not sep or not metric:
            raise UsageError(f"{flag} {spec!r} must look like METRIC=NUMBER, e.g. {flag} map50=0.6")
        try:
            bounds[metric] = float(raw)
        except ValueError:
            raise UsageError(f"{flag} {spec!r}: {raw!r} is not a number; e.g. {flag} {metric}=0.02") from None
    return bounds


def gates_set(args) -> int:
    bounds = {dest: _bounds(getattr(args, dest), flag) for flag, dest in METRIC_FLAGS}
    if args.approvals < 0:
        raise UsageError("--approvals N counts approvals: 0 (none) or more")
    if not any(bounds.values()) and not args.require_card and not args.approvals and not args.same_signature:
        raise UsageError(
            "give at least one check (--min, --max, --max-drop, --max-rise, --require-card, --approvals, "
            "--same-signature); "
            f"to remove the policy: modelreg gates clear {args.name} --stage {args.stage}"
        )
    with connect(args) as c:
        policy = c.set_gate_policy(
            args.name,
            args.stage,
            **bounds,
            require_card=args.require_card,
            approvals=args.approvals,
            rollback_skips_metrics=args.rollback_skips_metrics == "true",
            same_signature=args.same_signature,
        )
    if args.output == "json":
        out.print_json({"policy": out.to_dict(policy, defaults=True)})  # SetGatePolicyResponse
    else:
        print(f"gate policy {policy.name} set:")
        _print_policy(policy)
    return 0


def _print_policy(p: gv.GatePolicy) -> None:
    out.kv(
        [
            ("stage", p.target),
            ("checks", ", ".join(describe_check(c) for c in p.checks) or "none"),
            ("rollback skips metrics", "true" if p.rollback_skips_metrics else "false"),
            ("updated", f"{out.when(p.update_time)} by {p.updated_by}" if p.updated_by else out.when(p.update_time)),
        ]
    )


def gates_get(args) -> int:
    with connect(args) as c:
        policies = c.get_gate_policies(args.name, args.stage)
    if args.output == "json":
        out.print_json({"policies": [out.to_dict(p, defaults=True) for p in policies]})
        return 0
    if not policies:
        where = f" for {args.stage}" if args.stage else ""
        print(f"models/{args.name.removeprefix('models/')} has no gate policy{where}")
        return 0
    out.table(
        ["stage", "checks", "rollback skips metrics", "updated", "by"],
        [
            [
                p.target,
                ", ".join(describe_check(c) for c in p.checks),
                "true" if p.rollback_skips_metrics else "false",
                out.when(p.update_time),
                p.updated_by,
            ]
            for p in policies
        ],
    )
    return 0


def gates_clear(args) -> int:
    with connect(args) as c:
        removed = c.clear_gate_policy(args.name, args.stage)
    if args.output == "json":
        out.print_json({"removed": removed})
    elif removed:
        print(f"removed the {args.stage} gate policy of models/{args.name.removeprefix('models/')}")
    else:
        print(f"models/{args.name.removeprefix('models/')} had no {args.stage} gate policy: nothing removed")
    return 0


def gates_check(args) -> int:
    """Prints every check (required, actual, pass/FAIL) and the failures' descriptions;
    exit 1 when the version would not pass, so a CI step fails on a regression."""
    with connect(args) as c:
        ev = c.check_gates(args.name, args.version, args.stage)
    if args.output == "json":
        out.print_json({"evaluation": out.to_dict(ev, defaults=True)})
        return 0 if ev.passed else 1
    target = ev.target or args.stage
    if not ev.checks:
        print(f"{ev.model_version}: no gate policy for {target}, nothing to check: PASSED")
        return 0
    failing = [r for r in ev.checks if not r.passed]
    out.table(
        ["check", "subject", "required", "actual", "result"],
        [[r.type, r.subject, r.required, r.actual, "pass" if r.passed else "FAIL"] for r in ev.checks],
    )
    if failing:
        print()
        print(f"{ev.model_version} FAILED the {target} gate ({len(failing)} of {len(ev.checks)} checks):")
        for r in failing:
            print(f"  - {r.description}")
        return 1
    print()
    print(f"{ev.model_version} PASSED the {target} gate ({len(ev.checks)} checks)")
    return 0


# ---------------------------------------------------------------------- requests


def _split(version_name: str) -> tuple[str, str]:
    """`models/det/versions/3` -> ("det", "3")."""
    model, _, number = version_name.removeprefix("models/").partition("/versions/")
    return model, number


def _approvals(r: gv.PromotionRequest) -> str:
    given = sum(1 for a in r.approvals if a.approved)
    return f"{given}/{r.required_approvals}"


def requests_list(args) -> int:
    with connect(args) as c:
        found = list(c.list_promotion_requests(args.name, args.state))
    if args.output == "json":
        out.print_json({"requests": [out.to_dict(r, defaults=True) for r in found]})
        return 0
    rows = []
    for r in found:
        model, number = _split(r.model_version)
        rows.append(
            [
                r.name.rsplit("/", 1)[-1],
                model,
                number,
                r.target,
                STATE_NAMES.get(r.state, "?"),
                r.requester,
                _approvals(r),
                out.when(r.create_time),
                out.when(r.expire_time) if r.state == gv.PROMOTION_REQUEST_STATE_PENDING else out.when(r.close_time),
                r.reason,
            ]
        )
    out.table(
        ["id", "model", "version", "stage", "state", "requester", "approvals", "created", "expires/closed", "reason"],
        rows,
    )
    return 0


def waiting_for(r: gv.PromotionRequest) -> str:
    """`1 more approval from a releaser other than rita`."""
    left = max(r.required_approvals - sum(1 for a in r.approvals if a.approved), 0)
    noun = "approval" if left == 1 else "approvals"
    return f"{left} more {noun} from a releaser or project-admin other than {r.requester}"


def approve_command(r: gv.PromotionRequest) -> str:
    model, number = _split(r.model_version)
    return f"modelreg approve {model} {number} --stage {r.target}"


def print_request(r: gv.PromotionRequest) -> None:
    """What a new or still pending request waits for, and the exact commands that decide it."""
    model, number = _split(r.model_version)
    print(
        f"{r.model_version} is not in {r.target} yet: the {r.target} gate needs "
        f"{r.required_approvals} approval{'' if r.required_approvals == 1 else 's'}"
    )
    expires = out.when(r.expire_time)
    print(f"promotion request {r.name} is pending, waiting for {waiting_for(r)} (expires {expires} UTC)")
    print("approve it with:")
    print(f"  {approve_command(r)}")
    print("or reject it with:")
    print(f'  modelreg reject {model} {number} --stage {r.target} --reason "..."')


def approve(args) -> int:
    with connect(args) as c:
        resp = c.approve(args.name, args.version, args.stage, args.reason)
    if args.output == "json":
        out.print_json(resp, defaults=True)
        return 0
    r = resp.request
    if resp.HasField("model_version"):
        approvers = ", ".join(a.principal for a in r.approvals if a.approved)
        stage = out.STAGE_NAMES.get(resp.model_version.stage, r.target)
        print(f"approved: {resp.model_version.name} is now in {stage} (approved by {approvers})")
    else:
        print(f"approval recorded ({_approvals(r)}); {r.name} still waits for {waiting_for(r)}")
    return 0


def reject(args) -> int:
    if not args.reason.strip():
        raise UsageError("--reason must say why: what the requester should change")
    with connect(args) as c:
        resp = c.reject(args.name, args.version, args.stage, args.reason)
    if args.output == "json":
        out.print_json(resp, defaults=True)
    else:
        print(f"rejected: {resp.request.name} ({resp.request.model_version} to {resp.request.target}) is closed")
    return 0
