"""Politeness towards registries: a token bucket per registry host, and a 429's Retry-After.

Pure logic over an injected clock: nothing here talks to a registry or sleeps itself.
"""

from __future__ import annotations

import email.utils
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache

# A bucket holds this many seconds' worth of requests: a round may start with a short burst,
# then goes at the steady rate.
_BURST_SECONDS = 10.0


class TokenBucket:
    """`per_minute` requests a minute on average, at most `_BURST_SECONDS` worth at once."""

    def __init__(self, per_minute: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * _BURST_SECONDS)
        self._clock = clock
        self._tokens = self.capacity
        self._at = clock()
        self._paused_until = 0.0

    def take(self) -> float:
        """Spend a request if one is available now (0.0); else how many seconds until one is,
        spending nothing."""
        now = self._clock()
        if now < self._paused_until:
            return self._paused_until - now
        self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
        self._at = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate

    def pause(self, seconds: float) -> None:
        """The registry said 429, come back in `seconds`: nothing is sent to it before then."""
        self._paused_until = max(self._paused_until, self._clock() + seconds)


class RegistryLimiter:
    """One bucket per registry host, shared by the threads of a process."""

    def __init__(self, per_minute: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._buckets: dict[str, TokenBucket] = {}
        self._lock = threading.Lock()

    def _bucket(self, host: str) -> TokenBucket:
        bucket = self._buckets.get(host)
        if bucket is None:
            bucket = self._buckets[host] = TokenBucket(self.per_minute, clock=self._clock)
        return bucket

    def take(self, host: str) -> float:
        with self._lock:
            return self._bucket(host).take()

    def pause(self, host: str, seconds: float) -> None:
        with self._lock:
            self._bucket(host).pause(seconds)

    def acquire(self, host: str, *, max_wait: float, sleep: Callable[[float], bool]) -> bool:
        """Wait for a request to `host`: True once one is spent; False, spending nothing, if
        that would take longer than `max_wait` seconds in all or `sleep` (which returns True
        to stop waiting: the process is stopping) says so."""
        waited = 0.0
        while True:
            wait = self.take(host)
            if wait == 0.0:
                return True
            if waited + wait > max_wait or sleep(wait):
                return False
            waited += wait


@cache
def shared_limiter(per_minute: float) -> RegistryLimiter:
    """The process's limiter: the loop and a check asked for over the API share its buckets."""
    return RegistryLimiter(per_minute)


def retry_after_seconds(value: str | None, *, now: datetime) -> float | None:
    """A Retry-After header's delay: a number of seconds or an HTTP date; None if absent or
    unreadable."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # `-0000`: UTC, as RFC 9110 dates are
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())
