"""What the chaos suite checks after a fault: the registry against the clients' ledgers.

Invariants (each violation is a line of text in `Audit.violations`):
- nothing acknowledged is lost: every acknowledged registration exists, READY, with the
  sha256 of the bytes the client sent, and the sampled downloads hash to it;
- nothing is duplicated: one request id is one version, and versions are exactly 1..N;
- nothing is half-visible: every listed version is READY with an artifact;
- watchers get every event exactly once, in order: each watcher's sequences are strictly
  increasing and equal the registry's event log for the models after its start.
"""

from __future__ import annotations

import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.chaos.load import Registrations, Watchers


@dataclass
class Audit:
    lost: int = 0
    duplicated: int = 0
    violations: list[str] = field(default_factory=list)

    def add(self, text: str) -> None:
        if len(self.violations) < 20:
            self.violations.append(text)


def registrations(address: str, model: str, regs: Registrations, *, download_sample: int = 20) -> Audit:
    from modelreg import Client
    from modelreg.v1 import resources_pb2 as res

    out = Audit()
    with Client(address, actor="chaos-audit", timeout=60) as c:
        versions = list(c.list_versions(model))
        by_rid: dict[str, list] = defaultdict(list)
        for mv in versions:
            by_rid[mv.tags.get("rid", "")].append(mv)
            if mv.state != res.MODEL_VERSION_STATE_READY or not mv.artifact.sha256:
                out.add(f"half-visible: {mv.name} state={mv.state} sha256={mv.artifact.sha256!r}")
        numbers = sorted(int(mv.name.rsplit("/", 1)[1]) for mv in versions)
        if numbers != list(range(1, len(numbers) + 1)):
            out.add(f"versions are not exactly 1..{len(numbers)}: {numbers[:5]}...{numbers[-5:]}")
        for rid, mvs in by_rid.items():
            if len(mvs) > 1:
                out.duplicated += len(mvs) - 1
                out.add(f"duplicated: request {rid} is {[m.name for m in mvs]}")
        acked = regs.acked()
        for op in acked:
            mvs = by_rid.get(op.request_id, [])
            if not mvs:
                out.lost += 1
                out.add(f"lost: request {op.request_id} acknowledged as v{op.acked_version}, not in the registry")
            elif mvs[0].artifact.sha256 != op.sha256 or int(mvs[0].name.rsplit("/", 1)[1]) != op.acked_version:
                out.lost += 1
                out.add(f"wrong: request {op.request_id} acked v{op.acked_version}, registry {mvs[0].name}")
        with tempfile.TemporaryDirectory(prefix="chaos-audit-") as d:
            step = max(1, len(acked) // max(1, download_sample))
            for op in acked[::step]:
                try:
                    c.download(model, op.acked_version, dest=Path(d), filename=op.request_id)
                except Exception as e:  # noqa: BLE001 - a READY version must download
                    out.lost += 1
                    out.add(f"bad bytes: v{op.acked_version} does not download verified: {e}")
    return out


def watchers(address: str, models: list[str], watch: Watchers, after_sequence: int, out: Audit) -> None:
    """Each watcher saw exactly the log's events after `after_sequence`, once each, in order."""
    from modelreg import Client
    from modelreg.watch import list_events

    with Client(address, actor="chaos-audit") as c:
        log = [e.sequence for e in list_events(c._channel, models=models, after_sequence=after_sequence)]
    for i, seen in enumerate(watch.seen):
        if any(b <= a for a, b in zip(seen, seen[1:], strict=False)):
            out.add(f"watcher {i}: events out of order or repeated")
        seen_after = [s for s in seen if s > after_sequence]
        if seen_after != log:
            missing = sorted(set(log) - set(seen_after))
            extra = sorted(set(seen_after) - set(log))
            dup = len(seen_after) - len(set(seen_after))
            out.add(f"watcher {i}: {len(missing)} missed {missing[:5]}, {len(extra)} extra, {dup} repeated")
    for e in watch.errors:
        out.add(f"watcher failed: {e}")
