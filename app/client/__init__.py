"""A typed Python client for Berth's HTTP API: `Berth` (blocking) and `AsyncBerth` (asyncio).

It needs only httpx and pydantic (never the server's own modules), so an integration can
vendor or install it alone. See docs/client.md.
"""

from app.client.aio import AsyncBerth
from app.client.archive import pack_directory
from app.client.config import config_path, load_login, remove_login, save_login
from app.client.errors import (
    BadRequest,
    BerthError,
    ConfigurationError,
    Conflict,
    ConnectionFailed,
    Forbidden,
    Gone,
    Invalid,
    NotFound,
    OperationFailed,
    OperationTimeout,
    PayloadTooLarge,
    PreconditionFailed,
    RateLimited,
    ServerError,
    Unauthorized,
    Unavailable,
)
from app.client.sync import Berth
from app.client.wire import Retry

__all__ = [
    "AsyncBerth",
    "BadRequest",
    "Berth",
    "BerthError",
    "ConfigurationError",
    "Conflict",
    "ConnectionFailed",
    "Forbidden",
    "Gone",
    "Invalid",
    "NotFound",
    "OperationFailed",
    "OperationTimeout",
    "PayloadTooLarge",
    "PreconditionFailed",
    "RateLimited",
    "Retry",
    "ServerError",
    "Unauthorized",
    "Unavailable",
    "config_path",
    "load_login",
    "pack_directory",
    "remove_login",
    "save_login",
]
