"""Content-addressed blob stores: a local directory and any S3 endpoint (MinIO in production)."""

from registry_server.blobstore.base import BlobStore, BlobUpload, HashingUpload
from registry_server.blobstore.local import LocalBlobStore

__all__ = ["BlobStore", "BlobUpload", "HashingUpload", "LocalBlobStore"]
