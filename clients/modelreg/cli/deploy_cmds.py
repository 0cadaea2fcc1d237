"""Deployment commands: canary, rollback, deployment [history|policy]."""

from __future__ import annotations

from modelreg.cli import UsageError, connect
from modelreg.cli import output as out
from modelreg.deployments import describe
from modelreg.v1 import resources_pb2 as res

ACTION_NAMES = {
    0: "",
    1: "promote",
    2: "set canary",
    3: "promote canary",
    4: "abort canary",
    5: "auto abort",
    6: "auto promote",
    7: "rollback",
}


def register(sub, common) -> None:
    p = sub.add_parser(
        "canary",
        parents=[common],
        help="start or change a canary, or promote or abort it",
        description="modelreg canary NAME VERSION --weight W | modelreg canary NAME --promote "
        "| modelreg canary NAME --abort",
    )
    p.add_argument("name")
    p.add_argument("version", nargs="?", type=int, help="the canary version (with --weight)")
    p.add_argument("--weight", type=int, help="percentage of requests routed to the canary, 0-100")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--promote", action="store_true", help="make the canary the production version")
    group.add_argument("--abort", action="store_true", help="stop the canary")
    p.add_argument("--reason", default="")
    p.add_argument("--etag", default="", help="fail with ABORTED if the deployment changed since this revision")
    p.set_defaults(func=canary)

    p = sub.add_parser("rollback", parents=[common], help="put the previous (or a named) version back in production")
    p.add_argument("name")
    p.add_argument(
        "--to", type=int, default=0, metavar="VERSION", help="the version to restore (default: previous production)"
    )
    p.add_argument("--reason", default="")
    p.add_argument("--etag", default="")
    p.set_defaults(func=rollback)

    p = sub.add_parser(
        "deployment",
        parents=[common],
        help="show a model's deployment, its history, or set its canary policy",
        description=(
            "modelreg deployment NAME | modelreg deployment history NAME | "
            "modelreg deployment policy NAME [--max-error-rate F] [--max-latency-ratio F] "
            "[--min-requests N] [--auto-promote-after N]"
        ),
    )
    p.add_argument("words", nargs="+", metavar="[history|policy] NAME")
    p.add_argument(
        "--max-error-rate", type=float, default=0.0, help="policy: abort above this error fraction (0.05 = 5%%)"
    )
    p.add_argument(
        "--max-latency-ratio", type=float, default=0.0, help="policy: abort above this multiple of stable's p95"
    )
    p.add_argument("--min-requests", type=int, default=100, help="policy: requests before judging (default 100)")
    p.add_argument("--auto-promote-after", type=int, default=0, help="policy: promote after this many good requests")
    p.set_defaults(func=deployment)


def _print_deployment(d: res.Deployment) -> None:
    stable, canary = describe(d)
    pol = d.policy
    policy = "none"
    if pol.max_error_rate or pol.max_latency_ratio or pol.auto_promote_after:
        parts = []
        if pol.max_error_rate:
            parts.append(f"max error rate {pol.max_error_rate:.1%}")
        if pol.max_latency_ratio:
            parts.append(f"max p95 {pol.max_latency_ratio:g}x stable")
        parts.append(f"after {pol.min_requests} requests")
        if pol.auto_promote_after:
            parts.append(f"auto-promote after {pol.auto_promote_after}")
        policy = ", ".join(parts)
    out.kv(
        [
            ("deployment", d.name),
            ("stable", stable),
            ("canary", canary),
            ("etag", d.etag),
            ("policy", policy),
            ("updated", f"{out.when(d.update_time)} by {d.updated_by}" if d.updated_by else ""),
        ]
    )


def _show_change(args, resp, verb: str) -> int:
    if args.output == "json":
        out.print_json(resp)
    else:
        print(verb)
        _print_deployment(resp.deployment)
    return 0


def canary(args) -> int:
    modes = sum([args.promote, args.abort, args.version is not None])
    if modes != 1:
        raise UsageError("give either VERSION --weight W, or --promote, or --abort")
    with connect(args) as c:
        if args.promote:
            return _show_change(
                args, c.promote_canary(args.name, reason=args.reason, etag=args.etag), "canary promoted"
            )
        if args.abort:
            return _show_change(args, c.abort_canary(args.name, reason=args.reason, etag=args.etag), "canary aborted")
        if args.weight is None:
            raise UsageError("--weight W is required with VERSION (a percentage, 0-100)")
        resp = c.set_canary(args.name, args.version, args.weight, reason=args.reason, etag=args.etag)
        return _show_change(args, resp, f"canary v{args.version} at {args.weight}%")


def rollback(args) -> int:
    with connect(args) as c:
        resp = c.rollback(args.name, to_version=args.to, reason=args.reason, etag=args.etag)
    return _show_change(args, resp, f"rolled back to v{resp.deployment.stable.version_number}")


def deployment(args) -> int:
    words = args.words
    if len(words) == 2 and words[0] == "history":
        return _history(args, words[1])
    if len(words) == 2 and words[0] == "policy":
        return _policy(args, words[1])
    if len(words) != 1:
        raise UsageError("usage: modelreg deployment NAME | deployment history NAME | deployment policy NAME [flags]")
    with connect(args) as c:
        d = c.get_deployment(words[0])
        rollout = c.rollout_status(words[0])
    if args.output == "json":
        out.print_json({"deployment": out.to_dict(d), "rollout": out.to_dict(rollout)})
        return 0
    _print_deployment(d)
    _print_rollout(rollout)
    return 0


STATE_NAMES = {0: "?", 1: "loading", 2: "serving", 3: "failed", 4: "unloading"}


def _print_rollout(rollout) -> None:
    """Observed state per agent, from their reports: what each serves and the split of the
    requests it answered per version."""
    print()
    done = "complete" if rollout.complete else "in progress"
    print(f"observed ({rollout.converged_agents}/{rollout.live_agents} agents converged, rollout {done}):")
    rows = []
    for a in rollout.agents:
        total = sum(v.request_count for v in a.versions) or 1
        for v in a.versions:
            rows.append(
                [
                    a.agent.removeprefix("agents/"),
                    f"v{v.version}",
                    STATE_NAMES.get(v.state, "?") + (f" ({v.error})" if v.error else ""),
                    v.request_count,
                    f"{100 * v.request_count / total:.1f}%",
                    v.error_count,
                    f"{v.p95_latency_ms:.2f}",
                    "yes" if a.stale else "no",
                ]
            )
    if rows:
        out.table(["agent", "version", "state", "requests", "share", "errors", "p95 ms", "stale"], rows)
    else:
        print("  no agent follows this model yet")


def _history(args, model: str) -> int:
    with connect(args) as c:
        entries = list(c.deployment_history(model))
    if args.output == "json":
        out.print_json({"entries": [out.to_dict(e) for e in entries]})
        return 0

    def state(s: res.Deployment) -> str:
        text = f"v{s.stable.version_number}" if s.HasField("stable") else "-"
        if s.HasField("canary"):
            text += f" + canary v{s.canary.version_number}@{s.canary_weight}%"
        return text

    out.table(
        ["time", "action", "before", "after", "actor", "reason"],
        [
            [out.when(e.create_time), ACTION_NAMES[e.action], state(e.before), state(e.after), out.actor(e), e.reason]
            for e in entries
        ],
    )
    return 0


def _policy(args, model: str) -> int:
    with connect(args) as c:
        d = c.set_canary_policy(
            model,
            max_error_rate=args.max_error_rate,
            max_latency_ratio=args.max_latency_ratio,
            min_requests=args.min_requests,
            auto_promote_after=args.auto_promote_after,
        )
    if args.output == "json":
        out.print_json(d)
    else:
        _print_deployment(d)
    return 0
