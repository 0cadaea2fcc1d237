"""The S3 artifact store's settings: `MODELREG_ARTIFACTS=s3://bucket/prefix` and
`MODELREG_S3_*`, checked once, before the store is built.

Every bad value raises `ConfigError` naming the variable to fix. No message contains the
secret key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from minio.helpers import check_bucket_name

from registry_server.errors import ConfigError

if TYPE_CHECKING:
    from registry_server.config import Settings

#: The endpoint an empty MODELREG_S3_ENDPOINT means.
AWS_ENDPOINT = "s3.amazonaws.com"


def parse_location(location: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` -> ("bucket", "some/prefix"); the bucket name is checked
    with S3's (strict) naming rules."""
    parsed = urlparse(location)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ConfigError(
            f"MODELREG_ARTIFACTS={location!r} is not an S3 location; use s3://bucket or s3://bucket/prefix"
        )
    bucket = parsed.netloc
    try:
        check_bucket_name(bucket, strict=True)
    except ValueError as e:
        raise ConfigError(f"MODELREG_ARTIFACTS names an invalid bucket {bucket!r}: {e}") from None
    return bucket, parsed.path.strip("/")


def parse_endpoint(endpoint: str, secure: bool) -> tuple[str, bool]:
    """Accepts `host:port` or a URL (`http://host:port`, whose scheme decides TLS; otherwise
    `secure` does). An empty endpoint means AWS S3 over TLS."""
    endpoint = endpoint.strip()
    if not endpoint:
        return AWS_ENDPOINT, True
    if "://" in endpoint:
        parsed = urlparse(endpoint)
        if parsed.scheme not in ("http", "https") or not parsed.netloc or parsed.path.strip("/"):
            raise ConfigError(
                f"MODELREG_S3_ENDPOINT={endpoint!r} must be host:port or http(s)://host:port, without a path"
            )
        return parsed.netloc, parsed.scheme == "https"
    return endpoint.rstrip("/"), secure


@dataclass(frozen=True)
class S3Settings:
    """Where and as whom the S3 store connects. An empty access key means the AWS credential
    chain (environment, ~/.aws, instance role / IRSA web identity)."""

    endpoint: str  # host:port
    secure: bool
    bucket: str
    prefix: str
    access_key: str
    secret_key: str = field(repr=False)
    region: str

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Settings:
        """The S3 part of the server's settings; raises ConfigError for a bad value."""
        bucket, prefix = parse_location(settings.artifacts_location)
        endpoint, secure = parse_endpoint(settings.s3_endpoint, settings.s3_secure)
        return cls(
            endpoint=endpoint,
            secure=secure,
            bucket=bucket,
            prefix=prefix,
            access_key=settings.s3_access_key,
            secret_key=settings.s3_secret_key,
            region=settings.s3_region,
        )
