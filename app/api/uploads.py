"""Uploads are checked (archives scanned, Compose files parsed) on threads of their own, at
most `upload_check_threads` at once: large or hostile uploads then wait for each other, while
the request threads stay free for every other request."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import anyio.to_thread
from fastapi import Request

from app.core.context import AppContext

T = TypeVar("T")


async def checked_apart(request: Request, check: Callable[[], T]) -> T:
    """`check()` on an upload-check thread; its result or its exception."""
    state = request.app.state
    limiter: anyio.CapacityLimiter | None = getattr(state, "upload_checks", None)
    if limiter is None:  # Made on first use, in the event loop: no other task races it.
        context: AppContext = state.context
        limiter = state.upload_checks = anyio.CapacityLimiter(context.settings.upload_check_threads)
    return await anyio.to_thread.run_sync(check, limiter=limiter)
