"""`modelreg status NAME` (desired against observed: is the rollout complete?) and
`modelreg agents list`: read-only views of the serving agents through the registry.
`modelreg agent` (run one) is `serving_agent.cli`."""

from __future__ import annotations

from collections.abc import Iterable

from modelreg.cli import connect
from modelreg.cli import output as out
from modelreg.deployments import describe
from modelreg.v1 import agent_service_pb2 as ag

STATE_NAMES = {
    ag.SERVED_VERSION_STATE_LOADING: "loading",
    ag.SERVED_VERSION_STATE_SERVING: "serving",
    ag.SERVED_VERSION_STATE_FAILED: "failed",
    ag.SERVED_VERSION_STATE_UNLOADING: "unloading",
}


def register(sub, common) -> None:
    s = sub.add_parser(
        "status",
        parents=[common],
        help="desired against observed: which agents serve a model's production version",
        description="Show a model's desired (production) version and what every agent reports; "
        "exit 0 either way (see `complete`).",
    )
    s.add_argument("name", help="the model")
    s.set_defaults(func=run_status)

    a = sub.add_parser("agents", parents=[common], help="serving agents")
    asub = a.add_subparsers(dest="agents_command", metavar="SUBCOMMAND")
    asub.required = True
    ls = asub.add_parser("list", parents=[common], help="list agents and what they serve")
    ls.add_argument("--model", default="", help="only agents that follow this model")
    ls.add_argument("--all", action="store_true", help="include stale agents")
    ls.set_defaults(func=run_agents_list)


def _versions(vs: Iterable[ag.ServedVersion]) -> str:
    parts = []
    for v in vs:
        text = f"v{v.version}:{STATE_NAMES.get(v.state, '?')}"
        if v.error:
            text += f" ({v.error})"
        parts.append(text)
    return ", ".join(parts) or "-"


def run_status(args) -> int:
    with connect(args) as c:
        st = c.rollout_status(args.name)
    if args.output == "json":
        out.print_json(st)
        return 0
    desired, canary = describe(st.deployment)
    out.kv(
        [
            ("model", st.model),
            ("desired", desired),
            *([("canary", canary)] if st.deployment.HasField("canary") else []),
            ("agents", f"{st.converged_agents}/{st.live_agents} converged"),
            ("complete", "yes" if st.complete else "no"),
        ]
    )
    print()
    out.table(
        ["agent", "node", "versions", "converged", "stale", "reported"],
        [
            (
                a.agent.removeprefix("agents/"),
                a.node,
                _versions(a.versions),
                "yes" if a.converged else "no",
                "yes" if a.stale else "no",
                out.when(a.report_time),
            )
            for a in st.agents
        ],
    )
    return 0


def run_agents_list(args) -> int:
    with connect(args) as c:
        agents = list(c.list_agents(model=args.model, include_stale=args.all))
    if args.output == "json":
        out.print_json({"agents": [out.to_dict(a) for a in agents]})
        return 0
    out.table(
        ["agent", "node", "address", "healthy", "stale", "models"],
        [
            (
                a.agent_id,
                a.node,
                a.address,
                "yes" if a.healthy else "no",
                "yes" if a.stale else "no",
                "; ".join(f"{m.model.removeprefix('models/')} {_versions(m.versions)}" for m in a.models),
            )
            for a in agents
        ],
    )
    return 0
