"""How many failed authentications each client address may make: a brake on token guessing.

Counted per process, in fixed windows: N processes behind a balancer allow up to N times the
limit, which still turns a guessing rate of thousands a second into a few a second.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

# Addresses remembered at most: a flood from many addresses must not grow memory without bound.
_MAX_ADDRESSES = 100_000


class FailedAuthLimiter:
    def __init__(
        self, *, limit: int, window_seconds: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window = window_seconds
        self._clock = clock
        # address -> (start of its current window, failed authentications, wrong tokens)
        self._windows: dict[str, tuple[float, int, int]] = {}

    def _current(self, address: str, now: float) -> tuple[float, int, int] | None:
        window = self._windows.get(address)
        if window is not None and now - window[0] >= self.window:
            del self._windows[address]
            return None
        return window

    def retry_after(self, address: str) -> int | None:
        """Seconds until `address` may try to authenticate again; None when it may now."""
        now = self._clock()
        window = self._current(address, now)
        if window is None or window[2] < self.limit:
            return None
        return max(1, math.ceil(window[0] + self.window - now))

    def failed(self, address: str, *, guess: bool) -> bool:
        """Count one failed authentication; True when it is the first of its window (the one
        the audit trail records for the whole burst). Only a `guess` (a token that was sent
        but is wrong, revoked or expired) counts toward the limit: a request without any
        token guesses nothing."""
        now = self._clock()
        window = self._current(address, now)
        if window is not None:
            self._windows[address] = (window[0], window[1] + 1, window[2] + guess)
            return False
        if len(self._windows) >= _MAX_ADDRESSES:
            self._windows = {a: w for a, w in self._windows.items() if now - w[0] < self.window}
            if len(self._windows) >= _MAX_ADDRESSES:
                self._windows.clear()  # a flood from that many addresses: start counting anew
        self._windows[address] = (now, 1, int(guess))
        return True
