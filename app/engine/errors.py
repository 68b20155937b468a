"""What can go wrong talking to an engine, sorted by whether trying again can help, and how the
clients' library errors (docker SDK and requests for the blocking client, httpx for the live
one) become these."""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterator

import httpx
import requests
from docker import errors as docker_errors


class EngineError(Exception):
    """Base of errors from a Docker engine."""

    transient = False


class EngineUnavailable(EngineError):
    """The engine did not answer (refused, timed out, 5xx): worth retrying later."""

    transient = True


class StreamSilent(EngineUnavailable):
    """An event stream sent nothing for its `silence_seconds`: nothing happened, or the
    connection is half-open. Re-opened with `since` = when it was last heard, the engine replays
    what a half-open connection missed."""


class EngineRejected(EngineError):
    """The engine answered no (bad request, conflict): retrying the same call will not help."""


class ObjectNotFound(EngineRejected):
    """The container, image or other object does not exist on the engine."""


def for_status(status: int, message: str) -> EngineError:
    """The error for an engine's HTTP error answer."""
    if status == 404:
        return ObjectNotFound(message)
    # 501 is an answer, not an outage: e.g. logs of a container whose logging driver keeps none.
    if status >= 500 and status != 501:
        return EngineUnavailable(message)
    return EngineRejected(message)


# TLS alerts an engine run with --tlsverify sends a client without an acceptable certificate.
_CLIENT_CERT_ALERTS = ("CERTIFICATE_REQUIRED", "BAD_CERTIFICATE", "UNKNOWN_CA")


def tls_failure(exc: BaseException) -> str | None:
    """The TLS reason buried in a requests/urllib3/httpx transport error, said plainly, or None.
    The libraries wrap the ssl error in two or three layers whose text hides it."""
    pending: list[BaseException] = [exc]
    seen: set[int] = set()
    while pending:
        error = pending.pop()
        if id(error) in seen:
            continue
        seen.add(id(error))
        if isinstance(error, ssl.SSLCertVerificationError):
            return f"TLS: the engine's certificate failed verification ({error.verify_message})"
        if isinstance(error, ssl.SSLError):
            reason = str(error.reason or error)
            if any(alert in reason for alert in _CLIENT_CERT_ALERTS):
                return f"TLS: the engine requires a client certificate it trusts ({reason})"
            return f"TLS handshake failed ({reason})"
        linked = (error.__cause__, error.__context__, getattr(error, "reason", None), *error.args)
        pending.extend(e for e in linked if isinstance(e, BaseException))
    return None


@contextlib.contextmanager
def translate_errors(what: str) -> Iterator[None]:
    """Turn library and transport errors into EngineError with a plain message."""
    try:
        yield
    except docker_errors.NotFound as exc:
        raise ObjectNotFound(f"{what}: {exc.explanation or exc}") from exc
    except docker_errors.APIError as exc:
        raise for_status(exc.status_code or 0, f"{what}: {exc.explanation or exc}") from exc
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
        detail = tls_failure(exc) or type(exc).__name__
        raise EngineUnavailable(f"{what}: engine unreachable ({detail})") from exc
    except httpx.TransportError as exc:
        detail = tls_failure(exc) or str(exc) or type(exc).__name__
        raise EngineUnavailable(f"{what}: engine unreachable ({detail})") from exc
    except (docker_errors.DockerException, OSError) as exc:  # ssl.SSLError is an OSError
        raise EngineUnavailable(f"{what}: {tls_failure(exc) or exc}") from exc
