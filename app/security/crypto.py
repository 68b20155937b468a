"""Secrets at rest: Fernet (AES-128-CBC + HMAC-SHA256), the key in a file, not the database."""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken


class KeyUnavailable(RuntimeError):
    """The key file is missing while the database already holds encrypted values."""


class Cipher:
    def __init__(self, key: bytes) -> None:
        self._fernet = Fernet(key)
        # A separate key for fingerprints, derived from the secret one.
        self._mac_key = hashlib.sha256(b"berth fingerprint\0" + key).digest()

    def fingerprint(self, data: bytes) -> str:
        """A keyed digest (HMAC-SHA256): comparable, but no oracle for guessing what went in,
        e.g. a request body that carries a secret's value."""
        return hmac.new(self._mac_key, data, hashlib.sha256).hexdigest()

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, ciphertext: str) -> str:
        try:
            return self._fernet.decrypt(ciphertext.encode()).decode()
        except InvalidToken as exc:
            raise KeyUnavailable(
                "a stored secret does not decrypt with the configured key"
            ) from exc


def load_or_create_key(path: Path, *, may_create: bool) -> Cipher:
    """Read the key; create it (mode 0600) only when nothing encrypted exists yet."""
    if path.exists():
        return Cipher(path.read_bytes().strip())
    if not may_create:
        raise KeyUnavailable(
            f"key file {path} is missing but the database holds encrypted secrets; "
            "restore the key file or set BERTH_KEY_FILE to it"
        )
    return Cipher(publish_private_file(path, Fernet.generate_key() + b"\n").strip())


def publish_private_file(path: Path, content: bytes) -> bytes:
    """Create `path` (mode 0600) holding `content`, unless it exists; return what it holds.

    Written whole under a private name, then published with link(), which fails if the file
    exists: processes starting together agree on one key and never read a half-written one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    draft = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())
    try:
        os.link(draft, path)
    except FileExistsError:
        return path.read_bytes()
    finally:
        draft.unlink()
    return content
