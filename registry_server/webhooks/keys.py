"""The key webhook secrets are stored under: Fernet (AES-128-CBC with HMAC-SHA256, from
`cryptography`), so a database dump alone does not reveal them.

The key comes from MODELREG_WEBHOOK_KEY (a Fernet key: 32 bytes, URL-safe base64, as
`Fernet.generate_key()` makes) or, when that is unset, from `<data dir>/webhook.key`,
created mode 0600 at the first start. REPLICAS ON SEVERAL MACHINES MUST SHARE ONE KEY
(set MODELREG_WEBHOOK_KEY on each): a replica with another key cannot sign for a webhook,
and its deliveries fail saying so.
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

from registry_server.errors import ConfigError

KEY_FILE = "webhook.key"


class SecretBox:
    def __init__(self, key: bytes):
        try:
            self._fernet = Fernet(key)
        except (ValueError, TypeError):
            raise ConfigError(
                "MODELREG_WEBHOOK_KEY is not a Fernet key; set it to 32 random bytes in URL-safe base64 "
                "(python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())')"
            ) from None

    @classmethod
    def load(cls, configured: str, data_dir: Path) -> SecretBox:
        """The configured key, else the data directory's key file (made when missing)."""
        if configured:
            return cls(configured.strip().encode())
        path = data_dir / KEY_FILE
        if not path.exists():
            data_dir.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                pass  # another process made it first
            else:
                with os.fdopen(fd, "wb") as f:
                    f.write(Fernet.generate_key())
        try:
            return cls(path.read_bytes().strip())
        except OSError as e:
            raise ConfigError(
                f"cannot read the webhook key {path}: {e.strerror or e}; fix its permissions or set "
                "MODELREG_WEBHOOK_KEY"
            ) from None

    def seal(self, secret: str) -> bytes:
        return self._fernet.encrypt(secret.encode())

    def open(self, sealed: bytes) -> str | None:
        """The secret, or None when it was sealed with another key."""
        try:
            return self._fernet.decrypt(bytes(sealed)).decode()
        except InvalidToken:
            return None
