"""Hot read cache: versions and alias pointers kept in memory, invalidated by the registry's
own event stream.

Reads of `models/{m}/versions/{n|production|staging|latest|alias}` are the hot path of
every agent and CI job. A version's artifact, config, metrics and lineage never change once
it is READY, and everything that can change (stage, description, tags, which version a stage
or named alias points at, the named aliases a cached version lists) emits an event for its
model in the same transaction: ALIAS_CHANGED for a named alias, so that event drops the
model's entries, the `champion` pointer and every version that lists it alike. So a cached entry stays valid until an
event for its model arrives: this process's writes invalidate synchronously (read your
writes), other replicas' writes through the event hub within milliseconds.

Races: a read that started before an invalidation must not store its (now stale) result.
Each model has a generation number, bumped on invalidation; a result is stored only if the
generation it was read under is still current.

Echoes: this process's own committed events come back through the event hub a moment
later. Their models were already dropped after the commit, so dropping them again would
only throw away entries read since; the cache remembers its own sequences and skips them.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from registry_server.domain.models import ModelVersion

MAX_ENTRIES = 50_000
MAX_OWN_SEQUENCES = 10_000

T = TypeVar("T")
R = TypeVar("R")


class VersionCache:
    def __init__(self, max_entries: int = MAX_ENTRIES):
        self._models: dict[str, dict[int | str, ModelVersion]] = {}
        self._generation: dict[str, int] = {}
        self._size = 0
        self.max_entries = max_entries
        # Off until something feeds it invalidations (the event hub); a cache that nobody
        # invalidates would serve stale data across replicas.
        self.enabled = False
        self.hits = 0
        self.misses = 0
        self.invalidations = 0  # models dropped (by events, own writes or a resync)
        self._own: dict[int, None] = {}  # insertion-ordered, so the oldest go first

    def generation(self, model: str) -> int:
        return self._generation.get(model, 0)

    def get(self, model: str, ref: int | str) -> ModelVersion | None:
        if not self.enabled:
            return None
        entries = self._models.get(model)
        v = entries.get(ref) if entries else None
        if v is None:
            self.misses += 1
        else:
            self.hits += 1
        return v

    def put(self, model: str, ref: int | str, version: ModelVersion, generation: int) -> None:
        if not self.enabled or generation != self.generation(model):
            return
        if self._size >= self.max_entries:
            self._models.clear()  # crude but O(1) amortized; the hot set refills at once
            self._size = 0
        entries = self._models.setdefault(model, {})
        if ref not in entries:
            self._size += 1
        entries[ref] = version

    @property
    def size(self) -> int:
        return self._size

    def invalidate(self, model: str) -> None:
        self.invalidations += 1
        self._generation[model] = self.generation(model) + 1
        entries = self._models.pop(model, None)
        if entries:
            self._size -= len(entries)

    def invalidate_models(self, models: Iterable[str]) -> None:
        for m in set(models):
            self.invalidate(m)

    def committed_own(self, sequences: Iterable[int]) -> None:
        """Sequences this process committed and already invalidated for (see module doc)."""
        for seq in sequences:
            self._own[seq] = None
        while len(self._own) > MAX_OWN_SEQUENCES:
            del self._own[next(iter(self._own))]

    def on_events(self, rows) -> None:
        """The event hub's feed: drops every model an event names, except for the echoes of
        this process's own commits; `None` (events may have been missed) drops everything."""
        if rows is None:
            for model in list(self._generation) + list(self._models):
                self.invalidate(model)
            return
        theirs = set()
        for r in rows:
            if r.sequence in self._own:
                del self._own[r.sequence]
            else:
                theirs.add(r.model)
        self.invalidate_models(theirs)


class ObjectMemo(Generic[T, R]):
    """What was built from an object, once per object: the cache hands out the same
    immutable ModelVersion until an event replaces it, so a response built from it can be
    reused (GetModelVersion's message, the console's JSON). Keyed by identity and checked
    against the object itself; an entry holds its object weakly and goes when the object
    does (the cache dropped it). Holding it strongly kept up to `max_entries` dead versions
    and their responses alive, the soak's steady RSS growth under registrations and reads."""

    def __init__(self, max_entries: int):
        self.max_entries = max_entries
        self._entries: dict[int, tuple[weakref.ref[T], R]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, obj: T, build: Callable[[T], R]) -> R:
        key = id(obj)
        entry = self._entries.get(key)
        if entry is not None and entry[0]() is obj:
            return entry[1]
        value = build(obj)
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        entries = self._entries

        def forget(ref: weakref.ref[T]) -> None:
            current = entries.get(key)
            if current is not None and current[0] is ref:  # not a newer object at a reused id
                del entries[key]

        entries[key] = (weakref.ref(obj, forget), value)
        return value
