"""The hot read cache: reads are served from memory, and every write, on this replica or
another one on the same database, is visible to the next read."""

from __future__ import annotations

import time

from modelreg import Client


def test_reads_are_cached_and_own_writes_are_visible_at_once(registry, client):
    client.register("hot", b"v1")
    client.register("hot", b"v2")
    client.promote("hot", 1, "production")
    cache = registry.running.models.cache
    assert client.get_version("hot", "production").version == 1
    # The event hub echoes this replica's own promotion back a moment later; the cache
    # already dropped the model after the commit and keeps what it has read since.
    time.sleep(0.5)
    hits = cache.hits
    for _ in range(5):
        assert client.get_version("hot", "production").version == 1
    assert cache.hits == hits + 5
    client.promote("hot", 2, "production")
    assert client.get_version("hot", "production").version == 2
    client.update_version("hot", 2, description="new words")
    assert client.get_version("hot", 2).description == "new words"
    client.register("hot", b"v3")
    assert client.get_version("hot", "latest").version == 3


def test_a_write_through_another_replica_reaches_this_replicas_cache(make_registry):
    a, b = make_registry(), make_registry()
    ca, cb = Client(a.address), Client(b.address)
    ca.register("shared", b"one")
    ca.register("shared", b"two")
    ca.promote("shared", 1, "production")
    assert cb.get_version("shared", "production").version == 1
    assert cb.get_version("shared", "production").version == 1  # now cached on b
    ca.promote("shared", 2, "production")
    deadline = time.monotonic() + 10
    while cb.get_version("shared", "production").version != 2:
        assert time.monotonic() < deadline, "replica b kept serving the old production version"
        time.sleep(0.01)
    ca.close()
    cb.close()


def test_the_echo_of_an_own_commit_keeps_the_cache_and_anothers_event_drops_it():
    from types import SimpleNamespace

    from registry_server.read_cache import VersionCache

    cache = VersionCache()
    cache.enabled = True
    version = SimpleNamespace(version=1)
    cache.invalidate_models({"m"})  # what the repository does after its commit ...
    cache.committed_own(range(7, 9))  # ... with the sequences that commit made durable
    cache.put("m", "production", version, cache.generation("m"))
    cache.on_events([SimpleNamespace(sequence=7, model="m"), SimpleNamespace(sequence=8, model="m")])
    assert cache.get("m", "production") is version
    cache.on_events([SimpleNamespace(sequence=9, model="m")])  # another replica's write
    assert cache.get("m", "production") is None


def test_get_version_answers_memo_lets_go_of_versions_the_cache_dropped(registry, client):
    """Found by `make soak`: the GetModelVersion response memo held every version object it
    had answered for (up to 10,000) after the read cache had dropped them, so RSS grew for
    as long as registrations invalidated the cache. Entries now go with their version."""
    import gc

    from registry_server.services.registry import RegistryServicer

    client.register("memo", b"v1")
    for i in range(30):
        assert client.get_version("memo", 1).name == "models/memo/versions/1"
        client.get_version("memo", 1)
        client.register("memo", f"v{i + 2}".encode())  # its event drops the model's cached versions

    async def collect() -> None:
        gc.collect()

    registry.call(collect())
    assert client.get_version("memo", 1).name == "models/memo/versions/1"  # a live entry names ours

    # This registry's servicer: the one whose memo answered for `memo` (another test's
    # servicer still in memory would pass the size check without checking anything).
    def answered_memo(servicer: RegistryServicer) -> bool:
        return any(r.model_version.name.startswith("models/memo/") for _, r in servicer._responses._entries.values())

    ours = [o for o in gc.get_objects() if isinstance(o, RegistryServicer) and answered_memo(o)]
    assert len(ours) == 1, len(ours)
    assert len(ours[0]._responses) <= 2
