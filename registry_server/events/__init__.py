"""The event stream's server side: one hub per process (LISTEN + read-once + fan-out)
and the per-watcher stream logic (snapshot, replay, live, bookmarks, resync)."""

from registry_server.events.hub import EventHub
from registry_server.events.stream import Bookmark, EventStream, ShuttingDown, Snapshot

__all__ = ["Bookmark", "EventHub", "EventStream", "ShuttingDown", "Snapshot"]
