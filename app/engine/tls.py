"""TLS client material for an engine, and the private files the TLS libraries read it from."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType


@dataclass(frozen=True)
class TlsMaterial:
    ca_cert: str | None
    client_cert: str
    client_key: str


class TlsFiles:
    """The material written to a private directory (0700, key 0600): the docker SDK and the ssl
    module only take certificates and keys as file names. `cleanup()` (or leaving the `with`
    block) removes them; a client that reads them lazily keeps them until it is closed."""

    def __init__(self, tls: TlsMaterial) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix="berth-tls-")
        folder = Path(self._folder.name)
        folder.chmod(0o700)
        self.cert, self.key = folder / "cert.pem", folder / "key.pem"
        self.cert.write_text(tls.client_cert)
        self.key.touch(mode=0o600)
        self.key.write_text(tls.client_key)
        self.ca: Path | None = None
        if tls.ca_cert:
            self.ca = folder / "ca.pem"
            self.ca.write_text(tls.ca_cert)

    def cleanup(self) -> None:
        self._folder.cleanup()

    def __enter__(self) -> TlsFiles:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.cleanup()
