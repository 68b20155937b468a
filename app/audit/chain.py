"""The audit chain's cryptography, with no database: what the server writes and what an
examiner checks offline (`app.audit.verify_export`).

Each entry's `hash` is a SHA-256 over its fields and the previous entry's hash, so an edit, a
removal or a reordering breaks the links. Anyone with database access could recompute those
hashes after a rewrite, so each entry also carries `mac`, an HMAC-SHA256 of its hash with a key
kept outside the database. A checkpoint is the chain's head (seq, hash) at a time, signed with
an Ed25519 key kept beside it: with only the public key, an export's links, hashes and
checkpoints can be checked; with the HMAC key, every entry's MAC too.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

GENESIS = "0" * 64
# What an entry's hash covers, in order, then `prev_hash`. Entries written before the chain was
# keyed (seq below `keyed_from`) were hashed over the first list and keep those hashes.
PLAIN_FIELDS = (
    "seq",
    "id",
    "at",
    "actor",
    "action",
    "method",
    "path",
    "resource",
    "request_id",
    "source",
    "outcome",
)
KEYED_FIELDS = (
    *PLAIN_FIELDS,
    "token_id",
    "success",
    "resource_type",
    "resource_id",
    "version_before",
    "version_after",
)
# What only some entries carry: hashed (after the keyed fields) when one is set, so the hashes
# of every entry without them stay as they were. `author`: whom an approved change ran as (the
# approver is `actor`); `break_glass`: the reason a global admin gave to bypass approvals.
OPTIONAL_FIELDS = ("author", "break_glass")
_KEYS_FORMAT = 1


def _canonical(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, sort_keys=True).encode()


def entry_hash(record: Mapping[str, Any], *, keyed: bool) -> str:
    """The hash of one entry given as its exported record (`at` as an ISO 8601 string)."""
    names = KEYED_FIELDS if keyed else PLAIN_FIELDS
    fields = [record[name] for name in names]
    optional = {name: record[name] for name in OPTIONAL_FIELDS if record.get(name) is not None}
    if optional:
        fields.append(optional)
    fields.append(record["prev_hash"])
    return hashlib.sha256(_canonical(fields)).hexdigest()


def mac(key: bytes, hash_: str) -> str:
    return hmac.new(key, hash_.encode(), hashlib.sha256).hexdigest()


def mac_matches(key: bytes, hash_: str, claimed: str | None) -> bool:
    return claimed is not None and hmac.compare_digest(mac(key, hash_), claimed)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def public_key_text(key: Ed25519PublicKey) -> str:
    return _b64(key.public_bytes(Encoding.Raw, PublicFormat.Raw))


def load_public_key(text: str) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(base64.b64decode(text.strip(), validate=True))


def _signed_part(checkpoint: Mapping[str, Any]) -> bytes:
    return _canonical({k: checkpoint[k] for k in ("seq", "hash", "at", "keyed_from")})


def signature_matches(checkpoint: Mapping[str, Any], public_key: Ed25519PublicKey) -> bool:
    try:
        public_key.verify(base64.b64decode(checkpoint["signature"]), _signed_part(checkpoint))
    except (InvalidSignature, ValueError, KeyError):
        return False
    return True


@dataclass(frozen=True)
class AuditKeys:
    """The audit key file: the chain's HMAC key, the checkpoint signing key, and the first
    seq written with them (earlier entries predate the key and have no MAC)."""

    mac_key: bytes
    signing_key: Ed25519PrivateKey
    keyed_from: int

    @property
    def public_key(self) -> str:
        return public_key_text(self.signing_key.public_key())

    def mac(self, hash_: str) -> str:
        return mac(self.mac_key, hash_)

    def checkpoint(self, *, seq: int, hash_: str, at: str) -> dict[str, Any]:
        """The head (seq, hash) signed; `keyed_from` is signed too, so that an export cannot
        pass keyed entries off as older plain-hash ones."""
        body: dict[str, Any] = {
            "seq": seq,
            "hash": hash_,
            "at": at,
            "keyed_from": self.keyed_from,
        }
        signature = self.signing_key.sign(_signed_part(body))
        return {**body, "public_key": self.public_key, "signature": _b64(signature)}

    @classmethod
    def generate(cls, *, keyed_from: int) -> AuditKeys:
        return cls(secrets.token_bytes(32), Ed25519PrivateKey.generate(), keyed_from)

    def dump(self) -> bytes:
        raw = self.signing_key.private_bytes_raw()
        document = {
            "format": _KEYS_FORMAT,
            "mac_key": _b64(self.mac_key),
            "signing_key": _b64(raw),
            "keyed_from": self.keyed_from,
        }
        return json.dumps(document, indent=2).encode() + b"\n"

    @classmethod
    def parse(cls, content: bytes) -> AuditKeys:
        document = json.loads(content)
        if document.get("format") != _KEYS_FORMAT:
            raise ValueError(f"unknown audit key file format {document.get('format')!r}")
        return cls(
            base64.b64decode(document["mac_key"]),
            Ed25519PrivateKey.from_private_bytes(base64.b64decode(document["signing_key"])),
            int(document["keyed_from"]),
        )
