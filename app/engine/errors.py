"""What can go wrong talking to an engine, sorted by whether trying again can help, and how the
clients' library errors (docker SDK and requests for the blocking client, httpx for the live
one) become these."""

from __future__ import annotations

import contextlib
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


class EngineRejected(EngineError):
    """The engine answered no (bad request, conflict): retrying the same call will not help."""


class ObjectNotFound(EngineRejected):
    """The container, image or other object does not exist on the engine."""


def for_status(status: int, message: str) -> EngineError:
    """The error for an engine's HTTP error answer."""
    if status == 404:
        return ObjectNotFound(message)
    if status >= 500:
        return EngineUnavailable(message)
    return EngineRejected(message)


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
        raise EngineUnavailable(f"{what}: engine unreachable ({type(exc).__name__})") from exc
    except httpx.TransportError as exc:
        detail = str(exc) or type(exc).__name__
        raise EngineUnavailable(f"{what}: engine unreachable ({detail})") from exc
    except (docker_errors.DockerException, OSError) as exc:
        raise EngineUnavailable(f"{what}: {exc}") from exc
