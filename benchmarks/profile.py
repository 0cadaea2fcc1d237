"""Where our server's time goes: `python -m benchmarks.profile WORKLOAD [--seconds S]`.

Starts the same environment as the benchmarks, puts one workload on our `modelreg server`
process and samples it with py-spy (installed into benchmarks/.venv-mlflow, never into our
venv), then prints the hottest functions by own time and by inclusive time, and writes the
collapsed stacks to $TMPDIR/modelreg-profile-WORKLOAD.txt (flamegraph.pl/speedscope input).

Workloads: get (GetModelVersion by number, 16 clients), production (resolve production,
16 clients), promote (1 client), register (16 clients, 1 KiB artifacts), download (a
256 MiB artifact, repeatedly), watch (1,000 WatchEvents streams on one model while it is
promoted every 100 ms), swap (a serving agent, not the server, under 8 Predict clients while
two versions are promoted in turn every 150 ms).
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import tempfile
import threading
from pathlib import Path

from benchmarks import fixtures
from benchmarks.env import MLFLOW_PY, BenchEnv, ensure_mlflow_venv, log

WORKLOADS = ("get", "production", "promote", "register", "download", "watch", "swap")


def py_spy() -> str:
    if os.environ.get("PY_SPY"):  # a py-spy you already have
        return os.environ["PY_SPY"]
    ensure_mlflow_venv()
    exe = MLFLOW_PY.parent / "py-spy"
    if not exe.exists():
        log("installing py-spy into benchmarks/.venv-mlflow")
        subprocess.run([str(MLFLOW_PY), "-m", "pip", "install", "-q", "py-spy"], check=True)
    return str(exe)


FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")


def _frame_key(frame: str) -> str:
    m = FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    path = m["file"]
    for marker in ("site-packages/", "/work/main/", "lib/python3.11/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{m['func']} ({path})"


def summarize(collapsed: str, top: int = 25) -> str:
    own: collections.Counter = collections.Counter()
    inclusive: collections.Counter = collections.Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = [_frame_key(f) for f in stack.split(";")]
        own[frames[-1]] += n
        for f in set(frames):
            inclusive[f] += n
    out = [f"{total} samples"]
    out.append("\nby own time:")
    out += [f"  {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    out.append("\nby inclusive time:")
    out += [f"  {100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(top)]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__)
    p.add_argument("workload", choices=WORKLOADS)
    p.add_argument("--seconds", type=float, default=10.0)
    args = p.parse_args(argv)
    spy = py_spy()
    env = BenchEnv(quick=False, with_peer=False)
    try:
        fixtures.ours_model(env, "bench-read", 20, production=10)
        fixtures.ours_model(env, "bench-promote", 2, production=1)
        if args.workload == "get":
            spec = {"op": "get", "names": [f"models/bench-read/versions/{i}" for i in range(1, 21)], "concurrency": 16}
        elif args.workload == "production":
            spec = {"op": "get", "names": ["models/bench-read/versions/production"], "concurrency": 16}
        elif args.workload == "promote":
            spec = {"op": "promote", "names": [f"models/bench-promote/versions/{v}" for v in (1, 2)], "concurrency": 1}
        elif args.workload == "register":
            spec = {"op": "register", "model": "bench-profile-register", "concurrency": 16, "warmup_calls": 0}
        else:
            from modelreg import Client

            path = env.tmp / "big.bin"
            block = os.urandom(1 << 20)
            with open(path, "wb") as f:
                for _ in range(256):
                    f.write(block)
            with Client(env.ours, actor="bench", timeout=None) as c:
                # random bytes, not ONNX (the registry refuses those as onnx)
                v = c.register("bench-profile-big", str(path), format="other")
            spec = {
                "op": "download",
                "name": f"models/bench-profile-big/versions/{v.version}",
                "concurrency": 1,
                "chunk_size": 1 << 20,
                "warmup_calls": 0,
            }
        if args.workload == "watch":
            return _profile_watch(env, spy, args.seconds)
        if args.workload == "swap":
            return _profile_swap(env, spy, args.seconds)
        spec = dict(spec, target=env.ours, duration=args.seconds + 2)
        out_file = Path(tempfile.gettempdir()) / f"modelreg-profile-{args.workload}.txt"
        holder: dict = {}
        t = threading.Thread(target=lambda: holder.update(r=env.load(spec)))
        t.start()
        log(f"py-spy record on our server (pid {env.ours_pid}) for {args.seconds:g}s under '{args.workload}'")
        subprocess.run(
            [
                spy,
                "record",
                "--pid",
                str(env.ours_pid),
                "--duration",
                str(int(args.seconds)),
                "--rate",
                "250",
                "--format",
                "raw",
                "--output",
                str(out_file),
                "--nonblocking",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        t.join()
        r = holder.get("r", {})
        print(f"workload {args.workload}: {r.get('throughput', 0):.0f} calls/s, p50 {r.get('p50_us', 0):.0f} µs")
        print(summarize(out_file.read_text()))
        print(f"\ncollapsed stacks: {out_file}")
    finally:
        env.close()
    return 0


def _profile_watch(env, spy: str, seconds: float) -> int:
    import json
    import time

    from benchmarks.env import PY, REPO
    from modelreg import Client

    fixtures.ours_model(env, "bench-events", 2, production=1)
    watchers = []
    for _ in range(2):
        spec = {"target": env.ours, "model": "bench-events", "watchers": 500}
        watchers.append(
            subprocess.Popen(
                [PY, "-m", "benchmarks.load_events", json.dumps(spec)],
                cwd=str(REPO),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
        )
    for w in watchers:
        assert w.stdout.readline().strip() == "ready"
    out_file = Path(tempfile.gettempdir()) / "modelreg-profile-watch.txt"
    spy_proc = subprocess.Popen(
        [
            spy,
            "record",
            "--pid",
            str(env.ours_pid),
            "--duration",
            str(int(seconds)),
            "--rate",
            "250",
            "--format",
            "raw",
            "--output",
            str(out_file),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    promotions = 0
    with Client(env.ours, actor="bench") as c:
        current = c.get_version("bench-events", "production").version
        stop = time.time() + seconds
        while time.time() < stop:
            current = 2 if current == 1 else 1
            c.promote("bench-events", current, "production", reason="profile")
            promotions += 1
            time.sleep(0.1)
    spy_proc.wait()
    for w in watchers:
        w.communicate("stop\n", timeout=120)
    print(f"workload watch: 1000 watchers, {promotions} promotions")
    print(summarize(out_file.read_text()))
    print(f"\ncollapsed stacks: {out_file}")
    return 0


def _profile_swap(env, spy: str, seconds: float) -> int:
    import time

    from benchmarks.bench_agent import Agents, onnx_model
    from modelreg import Client

    with Client(env.ours, actor="bench") as c:
        a = c.register("bench-swap", onnx_model(16, 101), format="onnx", filename="model.onnx").version
        b = c.register("bench-swap", onnx_model(16, 102), format="onnx", filename="model.onnx").version
        c.promote("bench-swap", a, "production", reason="profile")
    agents = Agents(env, ["bench-swap"])
    agents.add(1)
    load = {
        "op": "predict",
        "target": agents.addresses[0],
        "model": "bench-swap",
        "concurrency": 8,
        "duration": seconds + 3,
    }
    holder: dict = {}
    t = threading.Thread(target=lambda: holder.update(r=env.load(load)))
    t.start()
    time.sleep(1.5)
    out_file = Path(tempfile.gettempdir()) / "modelreg-profile-swap.txt"
    spy_proc = subprocess.Popen(
        [
            spy,
            "record",
            "--pid",
            str(agents.procs[0].pid),
            "--duration",
            str(int(seconds)),
            "--rate",
            "250",
            "--format",
            "raw",
            "--output",
            str(out_file),
            "--nonblocking",
            "--threads",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    swaps = 0
    with Client(env.ours, actor="bench") as c:
        stop = time.time() + seconds
        while time.time() < stop:
            c.promote("bench-swap", b if swaps % 2 == 0 else a, "production", reason="profile")
            swaps += 1
            time.sleep(0.15)
    spy_proc.wait()
    t.join()
    r = holder.get("r", {})
    print(
        f"workload swap: {swaps} promotions, {r.get('throughput', 0):.0f} req/s, p99 {r.get('p99_us', 0):.0f} µs, "
        f"{r.get('errors', 0)} failed"
    )
    print(summarize(out_file.read_text()))
    print(f"\ncollapsed stacks: {out_file}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
