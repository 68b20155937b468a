"""Check an audit export (`GET /audit/export`, JSON Lines) offline, without Berth's database.

    python -m app.audit.verify_export EXPORT.jsonl --public-key KEY [--audit-key-file FILE]

With the public key (`GET /audit/public-key`, base64, or a file holding it) it checks every
entry's hash, the links between entries, and that a signed checkpoint vouches for the last
one, so an edited, removed, added or reordered line fails. With the audit key file
(`BERTH_AUDIT_KEY_FILE`) it checks every entry's MAC too. Prints a JSON verdict; exits 0 when
the export verifies, 1 when it does not, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from app.audit import chain


@dataclass(frozen=True)
class ExportVerification:
    ok: bool
    entries: int
    first_bad: int | None
    detail: str | None
    macs_checked: bool


def _records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if line.strip():
                yield number, json.loads(line)


def verify_file(
    path: Path, *, public_key: Ed25519PublicKey, keys: chain.AuditKeys | None = None
) -> ExportVerification:
    """Two passes over the file (memory stays bounded): the checkpoints first, whose signed
    `keyed_from` says which entries have keyed hashes, then the entries."""
    signed: dict[int, str] = {}
    keyed_from: int | None = None
    for number, item in _records(path):
        if item.get("type") == "error":
            return ExportVerification(False, 0, item.get("seq"), item.get("detail"), False)
        if item.get("type") != "checkpoint":
            continue
        if not chain.signature_matches(item, public_key):
            detail = f"line {number}: the checkpoint's signature does not verify"
            return ExportVerification(False, 0, item.get("seq"), detail, False)
        if keyed_from is not None and item["keyed_from"] != keyed_from:
            return ExportVerification(False, 0, item["seq"], "checkpoints disagree", False)
        keyed_from = item["keyed_from"]
        signed[item["seq"]] = item["hash"]
    macs = keys is not None
    count, seq, prev_hash = 0, None, None

    def bad(at: int | None, detail: str) -> ExportVerification:
        return ExportVerification(False, count, at, detail, macs)

    for _number, item in _records(path):
        # A redacted line (an entry of a project the exporter may not read) keeps its place in
        # the chain: its links, MAC and checkpoint are checked, its content is not there to be.
        if item.get("type") not in ("entry", "redacted"):
            continue
        if keyed_from is None:
            return bad(item.get("seq"), "no signed checkpoint vouches for this export")
        if seq is not None and item["seq"] != seq + 1:
            return bad(seq + 1, f"entry {seq + 1} is missing")
        seq = item["seq"]
        if prev_hash is not None and item["prev_hash"] != prev_hash:
            return bad(seq, "chain broken before this entry")
        keyed = seq >= keyed_from
        if item["type"] == "entry" and chain.entry_hash(item, keyed=keyed) != item["hash"]:
            return bad(seq, "entry content does not match its hash")
        if (
            keys is not None
            and keyed
            and not chain.mac_matches(keys.mac_key, item["hash"], item["mac"])
        ):
            return bad(seq, "entry hash does not match its MAC: rewritten without the audit key")
        if seq in signed and signed[seq] != item["hash"]:
            return bad(seq, "entry does not match the signed checkpoint")
        prev_hash = item["hash"]
        count += 1
    if seq is not None and seq not in signed:
        # Lines after the last checkpoint could have been added or edited by anyone.
        return bad(seq, "no signed checkpoint covers the last entry")
    return ExportVerification(True, count, None, None, macs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m app.audit.verify_export", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("export", type=Path, help="the JSON Lines file GET /audit/export gave")
    parser.add_argument(
        "--public-key",
        required=True,
        help="the checkpoint key (GET /audit/public-key): base64, or a file holding it",
    )
    parser.add_argument(
        "--audit-key-file", type=Path, help="BERTH_AUDIT_KEY_FILE, to check every MAC too"
    )
    args = parser.parse_args(argv)
    text = args.public_key
    candidate = Path(text)
    if candidate.is_file():
        text = candidate.read_text()
    try:
        public_key = chain.load_public_key(text)
    except ValueError as exc:
        parser.error(f"--public-key: {exc}")
    keys = chain.AuditKeys.parse(args.audit_key_file.read_bytes()) if args.audit_key_file else None
    result = verify_file(args.export, public_key=public_key, keys=keys)
    print(json.dumps(asdict(result)))
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
