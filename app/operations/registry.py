"""Operation kinds: each domain registers its handlers here; the executor looks them up."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from app.operations.context import OperationContext

Handler = Callable[[OperationContext], dict[str, Any] | None]

_HANDLERS: dict[str, Handler] = {}


def handler(kind: str) -> Callable[[Handler], Handler]:
    def register(func: Handler) -> Handler:
        if kind in _HANDLERS:
            raise RuntimeError(f"operation kind {kind!r} registered twice")
        _HANDLERS[kind] = func
        return func

    return register


def get_handler(kind: str) -> Handler | None:
    return _HANDLERS.get(kind)


def kinds() -> list[str]:
    return sorted(_HANDLERS)
