"""`modelreg agent` (run a serving agent), `modelreg status NAME` (desired against observed,
rollout complete?) and `modelreg agents list`."""

from __future__ import annotations

import asyncio
import logging
import os
import re
from pathlib import Path

from modelreg.cli import UsageError
from modelreg.cli import output as out
from modelreg.client import Client
from modelreg.deployments import describe
from modelreg.v1 import agent_service_pb2 as ag

MODEL_ID = re.compile(r"^[a-z0-9](?:[a-z0-9._-]{0,61}[a-z0-9])?$")
STATE_NAMES = {
    ag.SERVED_VERSION_STATE_LOADING: "loading",
    ag.SERVED_VERSION_STATE_SERVING: "serving",
    ag.SERVED_VERSION_STATE_FAILED: "failed",
    ag.SERVED_VERSION_STATE_UNLOADING: "unloading",
}


def register(sub, common) -> None:
    p = sub.add_parser(
        "agent",
        parents=[common],
        help="run a serving agent that follows production and serves it",
        description=(
            "Run a serving agent beside an application: it follows each model's production version "
            "through WatchEvents, downloads, verifies, loads and warms it up, swaps it in with zero failed "
            "requests, and serves Predict/Detect on localhost or a Unix socket."
        ),
    )
    p.add_argument("--registry", help="registry address (default: --address, $MODELREG_ADDRESS or 127.0.0.1:50051)")
    p.add_argument("--model", action="append", required=True, metavar="NAME",
                   help="a model to serve (repeat for several)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--listen", default=None,
                       help="inference API address (default: $MODELREG_AGENT_LISTEN or 127.0.0.1:50052)")
    where.add_argument("--uds", metavar="PATH", help="serve the inference API on a Unix socket instead")
    p.add_argument("--cache-dir", default=None,
                   help="artifact cache and state (default: $MODELREG_AGENT_CACHE_DIR or ./.modelreg-agent)")
    p.add_argument("--cache-max-bytes", type=int, default=None,
                   help="cache bound; unreferenced blobs are evicted least recently used first (default: 10 GiB)")
    p.add_argument("--metrics-port", type=int, default=None,
                   help="serve Prometheus metrics on http://127.0.0.1:PORT/metrics (default: off; 0 picks a port)")
    p.add_argument("--metrics-host", default="127.0.0.1", help="metrics bind address (default: 127.0.0.1)")
    p.add_argument("--agent-id", default=None, help="the id reported to the registry (default: HOSTNAME-PID)")
    p.add_argument("--node", default=None, help="the node name reported to the registry (default: the host name)")
    p.add_argument("--providers", nargs="+", default=None, metavar="PROVIDER",
                   help="onnxruntime execution providers in order (default: CUDAExecutionProvider when present, "
                        "else CPUExecutionProvider)")
    p.add_argument("--intra-op-threads", type=int, default=0, help="onnxruntime intra-op threads (default: its own)")
    p.add_argument("--keep-warm", type=int, default=None, metavar="N",
                   help="previous versions per model kept loaded after a swap, so a rollback is instant "
                        "(default: $MODELREG_AGENT_KEEP_WARM or 1; 0 turns it off)")
    p.add_argument("--report-interval", type=float, default=2.0,
                   help="seconds between status reports to the registry (default: 2; also on every change)")
    p.add_argument("--retry-initial", type=float, default=1.0,
                   help="first retry delay after a failed load, doubling up to --retry-max (default: 1)")
    p.add_argument("--retry-max", type=float, default=30.0, help="longest retry delay in seconds (default: 30)")
    p.add_argument("--log-level", default="INFO", help="logging level (default: INFO)")
    p.set_defaults(func=run_agent)

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


def run_agent(args) -> int:
    from serving_agent.agent import AgentConfig, keep_warm_from_env
    from serving_agent.server import listen_address, serve

    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.intra_op_threads < 0:
        raise UsageError("--intra-op-threads must not be negative; 0 means onnxruntime's default")
    if args.report_interval <= 0:
        raise UsageError("--report-interval must be positive")
    models = tuple(dict.fromkeys(m.removeprefix("models/") for m in args.model))
    for m in models:
        if not MODEL_ID.match(m):
            raise UsageError(
                f"--model {m!r} is not a model id: use 1 to 63 lowercase letters, digits, '-', '_' and '.', "
                "starting and ending with a letter or digit (for example --model fraud-detector)"
            )
    listen = listen_address(args.listen or os.environ.get("MODELREG_AGENT_LISTEN") or "127.0.0.1:50052", args.uds)
    if args.uds:
        Path(args.uds).parent.mkdir(parents=True, exist_ok=True)
        Path(args.uds).unlink(missing_ok=True)
    if args.keep_warm is not None and args.keep_warm < 0:
        raise UsageError("--keep-warm must not be negative; 0 turns warm standby off")
    try:
        keep_warm = args.keep_warm if args.keep_warm is not None else keep_warm_from_env()
    except ValueError as e:
        raise UsageError(str(e)) from None
    config = AgentConfig(
        registry=args.registry or args.address,
        keep_warm=keep_warm,
        models=models,
        cache_dir=Path(args.cache_dir or os.environ.get("MODELREG_AGENT_CACHE_DIR") or ".modelreg-agent"),
        cache_max_bytes=args.cache_max_bytes or 10 * 1024**3,
        agent_id=args.agent_id or "",
        providers=tuple(args.providers or ()),
        intra_op_threads=args.intra_op_threads,
        report_interval=args.report_interval,
        retry_initial=args.retry_initial,
        retry_max=args.retry_max,
        **({"node": args.node} if args.node else {}),
    )
    try:
        asyncio.run(serve(config, listen, args.metrics_port, args.metrics_host))
    except KeyboardInterrupt:
        pass
    return 0


def _versions(vs) -> str:
    parts = []
    for v in vs:
        text = f"v{v.version}:{STATE_NAMES.get(v.state, '?')}"
        if v.error:
            text += f" ({v.error})"
        parts.append(text)
    return ", ".join(parts) or "-"


def run_status(args) -> int:
    with Client(args.address) as c:
        st = c.rollout_status(args.name)
    if args.output == "json":
        out.print_json(st)
        return 0
    out.kv([
        ("model", st.model),
        ("desired", describe(st.deployment)[0]),
        *([("canary", describe(st.deployment)[1])] if st.deployment.HasField("canary") else []),
        ("agents", f"{st.converged_agents}/{st.live_agents} converged"),
        ("complete", "yes" if st.complete else "no"),
    ])
    print()
    out.table(
        ["agent", "node", "versions", "converged", "stale", "reported"],
        [
            (a.agent.removeprefix("agents/"), a.node, _versions(a.versions), "yes" if a.converged else "no",
             "yes" if a.stale else "no", out.when(a.report_time))
            for a in st.agents
        ],
    )
    return 0


def run_agents_list(args) -> int:
    with Client(args.address) as c:
        agents = list(c.list_agents(model=args.model, include_stale=args.all))
    if args.output == "json":
        out.print_json({"agents": [out.to_dict(a) for a in agents]})
        return 0
    out.table(
        ["agent", "node", "address", "healthy", "stale", "models"],
        [
            (a.agent_id, a.node, a.address, "yes" if a.healthy else "no", "yes" if a.stale else "no",
             "; ".join(f"{m.model.removeprefix('models/')} {_versions(m.versions)}" for m in a.models))
            for a in agents
        ],
    )
    return 0
