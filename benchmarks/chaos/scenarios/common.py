"""What the scenarios share: sizes, a client, versions whose outputs say which they are."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from benchmarks.chaos.load import scale_model
from benchmarks.chaos.procs import Agent, ExternalPostgres, Registry, wait_until
from modelreg.v1 import agent_service_pb2 as ag


@dataclass(frozen=True)
class Size:
    """quick: the `make test` sizes (a few seconds each); full: `make chaos`. `database`, when
    given, makes a fresh database on a running Postgres and returns its URL: scenarios whose
    fault is not Postgres itself then skip starting one of their own (the tests' session
    Postgres; `make chaos` leaves it None, so each registry runs the embedded default)."""

    quick: bool
    database: Callable[[], str] | None = None

    def pick(self, quick, full):
        return quick if self.quick else full

    @property
    def label(self) -> str:
        return "quick" if self.quick else "full"


def registry(root: Path, size: Size, **kw) -> Registry:
    """A started registry on `size.database()`, else on its embedded Postgres."""
    return Registry(root, database_url=size.database() if size.database else None, **kw).start()


def shared_postgres(work: Path, size: Size) -> tuple[str, ExternalPostgres | None]:
    """A database URL several replicas can share, and the cluster to stop (None: not ours)."""
    if size.database:
        return size.database(), None
    pg = ExternalPostgres(work / "pg")
    pg.start()
    return pg.database("modelreg"), pg


def client(address: str, timeout: float = 30.0):
    from modelreg import Client

    return Client(address, actor="chaos", timeout=timeout)


def register_scaled(
    address: str, model: str, scale: float, pad_bytes: int = 0, request_id: str = ""
) -> tuple[str, str]:
    """Registers y = x * scale (padded to `pad_bytes`); returns (version name, sha256)."""
    data = scale_model(scale, pad_bytes, seed=int(scale * 1000))
    with client(address, timeout=600) as c:
        mv = c.register(model, data, format="onnx", request_id=request_id, filename="model.onnx")
    return mv.name, hashlib.sha256(data).hexdigest()


def promote(address: str, version_name: str) -> None:
    model, n = version_name.split("/")[1], int(version_name.rsplit("/", 1)[1])
    with client(address) as c:
        c.promote(model, n, "production", reason="chaos")


def states(agent: Agent, model: str) -> dict[int, tuple[int, str]]:
    """version -> (ServedVersionState, error) as the agent reports it."""
    st = agent.status()
    for m in st.models:
        if m.model.endswith(f"/{model}"):
            return {v.version: (v.state, v.error) for v in m.versions}
    return {}


def serves(agent: Agent, model: str, version: int) -> bool:
    """The agent serves exactly `version` of `model` (SERVING, nothing else SERVING)."""
    s = states(agent, model)
    serving = [v for v, (state, _) in s.items() if state == ag.SERVED_VERSION_STATE_SERVING]
    return serving == [version]


def wait_serves(agent: Agent, model: str, version: int, timeout: float) -> float:
    """Seconds until the agent serves `version`."""
    t0 = time.monotonic()
    wait_until(lambda: serves(agent, model, version), timeout, f"agent {agent.name} serving v{version}", 0.2)
    return time.monotonic() - t0


def big_file(path: Path, size: int, seed: int = 7) -> str:
    """Writes `size` seeded random bytes to `path` in 8 MiB pieces; returns their sha256."""
    import numpy as np

    rng = np.random.default_rng(seed)
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, 8 << 20)
            b = rng.bytes(n)
            h.update(b)
            f.write(b)
            left -= n
    return h.hexdigest()


def tmp_uploads(artifacts: Path) -> list[Path]:
    """The local blob store's unfinished uploads."""
    return sorted((artifacts / "tmp").glob("upload-*")) if (artifacts / "tmp").exists() else []
