"""TLS client material for an engine, and the private files the TLS libraries read it from."""

from __future__ import annotations

import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from app.engine.errors import EngineRejected


@dataclass(frozen=True)
class TlsMaterial:
    """The engine's certificate is checked against `ca_cert`, or the system's trust store
    without one. The client certificate and key come together or not at all (an engine run
    with --tlsverify refuses a client without one)."""

    ca_cert: str | None
    client_cert: str | None
    client_key: str | None


def system_trust_store() -> str | None:
    """Where OpenSSL finds the system's CA certificates (SSL_CERT_FILE/SSL_CERT_DIR honoured).
    The docker SDK's requests would otherwise verify against certifi's bundle instead."""
    paths = ssl.get_default_verify_paths()
    return paths.cafile or paths.capath


def refuse_plain_tcp(url: str, *, insecure: bool) -> None:
    """Plain tcp:// carries every call, registry passwords included, unencrypted to an engine
    whose identity nobody checked: only for a host registered as `insecure`."""
    if url.startswith("tcp://") and not insecure:
        raise EngineRejected(
            f"connect to {url}: plain tcp:// without TLS is refused; "
            "give TLS material, or register the host with insecure: true"
        )


class TlsFiles:
    """The material written to a private directory (0700, key 0600): the docker SDK and the ssl
    module only take certificates and keys as file names. `cleanup()` (or leaving the `with`
    block) removes them; a client that reads them lazily keeps them until it is closed."""

    def __init__(self, tls: TlsMaterial) -> None:
        self._folder = tempfile.TemporaryDirectory(prefix="berth-tls-")
        folder = Path(self._folder.name)
        folder.chmod(0o700)
        self.client: tuple[str, str] | None = None
        if tls.client_cert and tls.client_key:
            cert, key = folder / "cert.pem", folder / "key.pem"
            cert.write_text(tls.client_cert)
            key.touch(mode=0o600)
            key.write_text(tls.client_key)
            self.client = (str(cert), str(key))
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
