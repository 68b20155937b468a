"""ASGI middleware, one module each: request context (ids, logs, metrics, audit), body limits
and idempotent replay.

Pure ASGI rather than BaseHTTPMiddleware so that streamed responses (logs, events) pass
through untouched.
"""
