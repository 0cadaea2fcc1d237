"""The agent's on-disk cache: blobs keyed by sha256, bounded, LRU eviction of unreferenced blobs.

Layout under the cache directory:
    blobs/<sha256>.<ext>   verified artifacts (ext: onnx, pt, bin) — loaders need the suffix
    blobs/<sha256>.part    a download in progress (resumed after a cut)
    state.json             the last desired state and watch cursor (see `StateFile`)

A blob's mtime is its last use: `get` touches it. Eviction removes the least recently used
blobs that no loaded or desired version references until the cache fits `max_bytes`.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger("modelreg.agent.cache")

EXTENSIONS = ("onnx", "pt", "bin")


class BlobCache:
    def __init__(self, root: Path, max_bytes: int):
        self.root = root
        self.blobs = root / "blobs"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes

    def path_for(self, sha256: str, ext: str) -> Path:
        return self.blobs / f"{sha256}.{ext}"

    def part_for(self, sha256: str) -> Path:
        return self.blobs / f"{sha256}.part"

    def get(self, sha256: str) -> Path | None:
        """The cached blob for a digest (unverified: the caller verifies before loading)."""
        for ext in EXTENSIONS:
            p = self.path_for(sha256, ext)
            if p.exists():
                os.utime(p)
                return p
        return None

    def put(self, part: Path, sha256: str, ext: str) -> Path:
        target = self.path_for(sha256, ext)
        os.replace(part, target)
        return target

    def remove(self, sha256: str) -> None:
        for ext in (*EXTENSIONS, "part"):
            self.blobs.joinpath(f"{sha256}.{ext}").unlink(missing_ok=True)

    def size(self) -> int:
        return sum(p.stat().st_size for p in self.blobs.iterdir() if p.is_file())

    def evict(self, referenced: Iterable[str]) -> list[str]:
        """Removes unreferenced blobs, least recently used first, until the cache fits."""
        keep = set(referenced)
        files = [p for p in self.blobs.iterdir() if p.is_file()]
        total = sum(p.stat().st_size for p in files)
        removed = []
        for p in sorted(files, key=lambda p: p.stat().st_mtime):
            if total <= self.max_bytes:
                break
            digest = p.name.split(".", 1)[0]
            if digest in keep:
                continue
            total -= p.stat().st_size
            p.unlink(missing_ok=True)
            removed.append(digest)
            log.info("cache: evicted %s (least recently used, unreferenced)", digest[:12])
        return removed


class StateFile:
    """The last desired state the agent saw and its watch cursor, written atomically, so a
    restart with the registry down serves what it served before."""

    def __init__(self, path: Path):
        self.path = path

    def load(self) -> dict:
        try:
            return json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            log.warning("ignoring unreadable %s: %s", self.path, e)
            return {}

    def save(self, state: dict) -> None:
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".state-")
        with os.fdopen(fd, "w") as f:
            json.dump(state, f, indent=1, sort_keys=True)
        os.replace(tmp, self.path)
