"""Uploads in progress, owned and leased: this server's lease, and the janitor's sweep.

`start()` registers this process as an upload owner and names it to the blob store, so every
temporary upload carries its owner's id. `heartbeat()` renews the lease. `sweep()` is one
janitor pass:
1. orphans: the uploads of owners `UploadLeases.judge` finds dead (a crashed server on this
   machine at once; elsewhere once its lease expired while the database was up for a whole
   lease) are removed from the store, then the owners are forgotten. A live owner's upload is
   never touched.
2. the TTL: any upload older than the upload TTL goes, whoever owns it (uploads named for no
   owner, and what a crash left between starting an S3 multipart upload and recording it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from registry_server.blobstore.base import BlobStore, Orphans
from registry_server.storage.uploads import UploadLeases

log = logging.getLogger("modelreg.uploads")


class Uploads:
    def __init__(self, leases: UploadLeases, blobs: BlobStore, ttl: timedelta, database_up_for: Callable[[], float]):
        self.leases = leases
        self.blobs = blobs
        self.ttl = ttl
        self.database_up_for = database_up_for  # seconds Postgres has answered without a break

    @property
    def heartbeat_interval(self) -> float:
        return self.leases.lease.total_seconds() / 3

    async def start(self) -> None:
        await self.leases.register()
        self.blobs.owner = self.leases

    async def heartbeat(self) -> None:
        await self.leases.heartbeat()

    async def sweep(self) -> tuple[int, int]:
        """One janitor pass: (orphaned uploads removed, uploads past the TTL removed)."""
        comparable = self.database_up_for() >= self.leases.lease.total_seconds()
        known, dead = await self.leases.judge(comparable)
        orphans = Orphans(dead, known, self.leases.lease, await self.leases.multipart_owners())
        orphaned = await self.blobs.remove_orphaned_uploads(orphans)
        await self.leases.forget(dead)
        if dead:
            log.info("%d server(s) that owned uploads are gone; removed %d of their uploads", len(dead), orphaned)
        return orphaned, await self.blobs.remove_stale_uploads(self.ttl)

    async def stop(self) -> None:
        """At a clean stop, after the last upload ended: gives up this server's lease."""
        await self.leases.release()
