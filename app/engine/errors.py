"""What can go wrong talking to an engine, sorted by whether trying again can help."""

from __future__ import annotations


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
