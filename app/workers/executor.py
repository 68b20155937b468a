"""The operation executor: claims operations with leases and runs their handlers in threads.

One claimer thread stores the outcomes of finished operations and fills the free slots, both
in one transaction (one commit, one fsync on PostgreSQL, for what ended and what starts next);
one heartbeat thread keeps every held lease alive (and learns of cancel requests). Enqueues in
other processes wake the claimer through the wake-up bus.

A handler's slot is free as soon as its outcome is handed to the claimer; the operation stays
leased (and heartbeated) until the outcome is committed, so a crash in between only means the
operation runs again, which idempotent handlers make harmless.

The slots bound how many handlers run at once (so how many engine calls). While handlers here
are short (a few milliseconds), the claimer also claims ahead of the free slots: the claimed
operations wait leased in the handler pool's queue and start as slots free, so a round's commit
carries many operations, not at most one per slot. A claim is not a start: an operation's
`started_at` is stored (with the next round, or its outcome) only once a handler starts it, so
after a crash one that was only held ahead is claimed back as not `resumed`; on a clean stop it
is handed back. Long handlers get no claims ahead: another worker may be idle.
"""

from __future__ import annotations

import logging
import math
import os
import random
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime
from functools import partial
from queue import Empty, SimpleQueue
from typing import Any, NamedTuple

from sqlalchemy.engine import Connection

from app.core.context import AppContext
from app.core.db import new_id, utcnow
from app.core.logging import host_id_var, operation_id_var
from app.engine.errors import EngineError
from app.operations import queue
from app.operations.context import (
    Cancelled,
    Deferred,
    Interrupted,
    LeaseLost,
    OperationContext,
    PermanentError,
    TransientError,
)
from app.operations.models import CANCELLED, FAILED, SUCCEEDED
from app.operations.registry import get_handler
from app.operations.waiters import waiters
from app.workers import wakeups

log = logging.getLogger("berth.executor")

# How often running operations that no worker holds (deferred by another process, or whose
# worker died) are looked for, at most.
_RESUMABLE_SCAN_SECONDS = 1.0
# The claimer keeps its connection across transactions that follow each other closely (work,
# or the idle poll), sparing the pool's pre-ping round trip in each; one unused for longer (a
# slow poll) goes back to the pool, and the next checkout pings it anew. A connection that broke
# anyway fails one round, which is retried on a new one.
_CONNECTION_IDLE_SECONDS = 5.0
# Handlers that typically end within this get operations claimed ahead of the free slots, this
# many per slot: a round of 4 slots then commits up to 36 operations' outcomes and claims.
_SHORT_HANDLER_SECONDS = 0.01
_AHEAD_PER_SLOT = 8
# Once every slot's handler has run this long, the operations claimed ahead go back to the
# queue rather than wait for them: another worker may be idle.
_HAND_BACK_AFTER_SECONDS = 1.0


class _Start(NamedTuple):
    context: OperationContext
    at: datetime
    began: float  # time.monotonic()


def backoff_seconds(attempt: int, *, base: float, cap: float) -> float:
    """Exponential backoff with jitter: about base * 2^(attempt-1), never above cap."""
    delay = min(cap, base * 2.0 ** max(0, attempt - 1))
    return delay * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not security


class OperationExecutor:
    name = "executor"

    def __init__(self, app: AppContext, *, slots: int | None = None) -> None:
        self.app = app
        self.slots = slots or app.settings.workers
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{new_id()[-8:]}"
        self._pool = ThreadPoolExecutor(self.slots, thread_name_prefix="berth-op")
        self._running: dict[str, OperationContext] = {}
        # Finished by a handler, outcome not yet committed: still ours, still heartbeated.
        self._settling: dict[str, int] = {}
        # When each running handler started; and the starts not stored yet (the next round's).
        self._starts: dict[str, _Start] = {}
        self._unstored_starts: dict[str, tuple[queue.Claim, datetime]] = {}
        # Claimed ahead, waiting in the handler pool's queue for a slot.
        self._waiting: dict[str, Future[None]] = {}
        # How long handlers here take (a moving average): short ones are claimed ahead.
        self._handler_seconds = math.inf
        self._outcomes: SimpleQueue[queue.Outcome] = SimpleQueue()
        self._lock = threading.Lock()
        # Wakes the claimer: a slot is free (with an outcome to store, usually), work was
        # enqueued, a deferral fell due sooner than planned, or the executor stops.
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._unsubscribers: list[Callable[[], None]] = []
        # The claimer's own connection, kept across its transactions while they keep coming.
        self._connection: Connection | None = None
        self._connection_used_at = 0.0
        self._last_resumable_scan = 0.0
        # When an operation this process deferred is due again: looked for then, not only at
        # the next periodic scan, so a short wait (a deploy watching a health check) stays short.
        self._deferred_due = math.inf
        # When the idle claimer looks next, unless woken: a deferral due sooner wakes it.
        self._claimer_wakes_at = 0.0

    # Lifecycle

    def start(self) -> None:
        self._unsubscribers = [
            wakeups.subscribe(queue.WAKEUP_TOPIC, self._wake.set),
            queue.on_work_available(self._wake.set),
        ]
        targets: list[tuple[str, Any]] = [
            ("claimer", self._claim_loop),
            ("lease", self._lease_loop),
        ]
        for label, target in targets:
            thread = threading.Thread(target=target, name=f"berth-{label}", daemon=True)
            thread.start()
            self._threads.append(thread)
        log.info("executor started", extra={"owner": self.owner, "slots": self.slots})

    def stop(self, timeout: float) -> None:
        """Stop claiming; interrupt handlers at their next safe point; hand back the rest."""
        deadline = time.monotonic() + timeout
        for unsubscribe in self._unsubscribers:
            unsubscribe()
        self._stop.set()
        self._wake.set()
        claimer, *others = self._threads
        claimer.join(max(0.0, deadline - time.monotonic()))
        with self._lock:
            for context in self._running.values():
                context.shutting_down.set()
        # Operations claimed ahead and not started are dropped here (`_forget_if_cancelled`)
        # and handed back below with everything else this worker holds.
        self._pool.shutdown(wait=False, cancel_futures=True)
        while self._running and time.monotonic() < deadline:
            time.sleep(0.05)
        # The claimer has ended: what the handlers finished since is stored here.
        outcomes = self._take_outcomes()
        try:
            self._settled(outcomes, queue.finish_many(self.app.db, outcomes))
        except Exception:
            log.exception("storing outcomes failed", extra={"count": len(outcomes)})
        for thread in others:
            thread.join(max(0.0, deadline - time.monotonic()))
        # Whatever is still ours (interrupted, or claimed as we stopped) goes back to the queue.
        released = queue.release_owned(self.app.db, owner=self.owner)
        log.info("executor stopped", extra={"owner": self.owner, "released": released})

    @property
    def busy(self) -> int:
        return len(self._running)

    # Claiming

    def _claim_loop(self) -> None:
        poll = self.app.settings.effective_poll_seconds
        while not self._stop.is_set():
            self._wake.clear()
            self._hand_back_waiting()
            outcomes = self._take_outcomes()
            started = self._take_starts()
            free = self._capacity() - len(self._running)
            if free <= 0 and not outcomes and not started:
                self._wake.wait(poll)
                continue
            try:
                claims = self._settle_and_claim(outcomes, started, free)
            except Exception:
                log.exception("storing outcomes or claiming operations failed; retrying")
                self._close_connection()  # whatever broke, the retry starts on a new one
                self._stop.wait(1.0)
                continue
            if self._stop.is_set():
                break  # stop() hands these back with everything else this worker holds
            for claim in claims:
                context = OperationContext(self.app, claim)
                with self._lock:
                    self._running[claim.id] = context
                future = self._pool.submit(self._run, context)
                with self._lock:
                    if not future.running() and not future.done():
                        self._waiting[claim.id] = future
                future.add_done_callback(partial(self._forget_if_cancelled, context))
            if len(claims) < free:
                now = time.monotonic()
                self._claimer_wakes_at = min(now + poll, self._deferred_due)
                self._wake.wait(max(0.0, self._claimer_wakes_at - now))
        self._close_connection()

    def _capacity(self) -> int:
        """How many operations this worker holds at most: its slots, and while its handlers
        are short (typically, and none running long now), as many again per slot claimed
        ahead."""
        if self._handler_seconds >= _SHORT_HANDLER_SECONDS:
            return self.slots
        now = time.monotonic()
        with self._lock:
            if any(now - start.began >= _SHORT_HANDLER_SECONDS for start in self._starts.values()):
                return self.slots
        return self.slots * (1 + _AHEAD_PER_SLOT)

    def _hand_back_waiting(self) -> None:
        """While every slot runs a long handler, what was claimed ahead goes back to the queue
        (not counted as an attempt) for a worker with a free slot."""
        now = time.monotonic()
        with self._lock:
            if not self._waiting:
                return
            long_running = sum(
                now - start.began >= _HAND_BACK_AFTER_SECONDS for start in self._starts.values()
            )
            if long_running < self.slots:
                return
            waiting = [
                (self._running[op_id].claim, future)
                for op_id, future in self._waiting.items()
                if op_id in self._running
            ]
        # A run that starts meanwhile cannot be cancelled, and stays.
        claims = [claim for claim, future in waiting if future.cancel()]
        for claim in claims:
            queue.requeue(self.app.db, claim, delay_seconds=0, error=None, count_attempt=False)
        if claims:
            log.info("handed back operations claimed ahead", extra={"count": len(claims)})

    def _forget_if_cancelled(self, context: OperationContext, future: Future[None]) -> None:
        """A claimed-ahead operation whose run was cancelled (on stop, or handed back) never
        started."""
        if future.cancelled():
            with self._lock:
                self._waiting.pop(context.id, None)
                if self._running.get(context.id) is context:
                    del self._running[context.id]

    def _close_connection(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            try:
                connection.close()
            except Exception:
                log.warning("closing the claimer's connection failed", exc_info=True)

    def _settle_and_claim(
        self, outcomes: list[queue.Outcome], started: list[tuple[queue.Claim, datetime]], limit: int
    ) -> list[queue.Claim]:
        """Store `outcomes` and the handlers' `started` times, and claim up to `limit`
        operations, in one transaction."""
        now = time.monotonic()
        scan_resumable = limit > 0 and (
            now - self._last_resumable_scan >= _RESUMABLE_SCAN_SECONDS or now >= self._deferred_due
        )
        if scan_resumable:
            self._last_resumable_scan = now
            self._deferred_due = math.inf
        try:
            if now - self._connection_used_at > _CONNECTION_IDLE_SECONDS:
                self._close_connection()
            if self._connection is None:
                self._connection = self.app.db.engine.connect()
            self._connection_used_at = now
            stored, claims = queue.settle_and_claim(
                self.app.db,
                outcomes,
                connection=self._connection,
                owner=self.owner,
                limit=max(0, limit),
                lease_seconds=self.app.settings.lease_seconds,
                include_resumable=scan_resumable,
                starts=started,
            )
        except Exception:
            # Left leased: the leases lapse and the operations run again elsewhere. The starts
            # go with the next round.
            self._settled(outcomes, set())
            with self._lock:
                for claim, at in started:
                    self._unstored_starts.setdefault(claim.id, (claim, at))
            raise
        self._settled(outcomes, stored)
        if limit > 0 and sum(claim.resumed for claim in claims) >= limit:
            # A full batch of resumed operations: more may be due already. Look again as soon
            # as a slot is free, rather than let many waits fall behind their due times.
            self._deferred_due = now
        return claims

    # Leases

    def _lease_loop(self) -> None:
        interval = max(0.2, self.app.settings.lease_seconds / 3)
        while not self._stop.wait(interval):
            with self._lock:
                held = {op_id: ctx.claim.epoch for op_id, ctx in self._running.items()}
                held.update(self._settling)
            try:
                lost, cancel = queue.heartbeat(
                    self.app.db,
                    owner=self.owner,
                    held=held,
                    lease_seconds=self.app.settings.lease_seconds,
                )
            except Exception:
                log.exception("lease heartbeat failed")
                continue
            with self._lock:
                for op_id in lost:
                    if op_id in self._running:
                        self._running[op_id].lease_lost.set()
                for op_id in cancel:
                    if op_id in self._running:
                        self._running[op_id].cancel_requested.set()

    # Finishing

    def _settle(self, outcome: queue.Outcome) -> None:
        """Hand an outcome to the claimer (called from the handler's thread, whose end wakes
        the claimer)."""
        started_at = self._ended(outcome.claim)
        with self._lock:
            self._settling[outcome.claim.id] = outcome.claim.epoch
        self._outcomes.put(replace(outcome, started_at=started_at))

    def _started(self, context: OperationContext) -> float:
        """A handler starts `context`'s operation: its start is stored with the next round,
        which this wakes (until then, after a crash, it would look as if it never started).
        Returns the start's `time.monotonic()`."""
        start = _Start(context, utcnow(), time.monotonic())
        with self._lock:
            self._waiting.pop(context.id, None)
            self._starts[context.id] = start
            self._unstored_starts[context.id] = (context.claim, start.at)
        self._wake.set()
        return start.began

    def _ended(self, claim: queue.Claim) -> datetime | None:
        """The handler of `claim` has ended: when it started, for the write that ends it."""
        with self._lock:
            self._unstored_starts.pop(claim.id, None)
            entry = self._starts.pop(claim.id, None)
        return entry.at if entry is not None else None

    def _take_starts(self) -> list[tuple[queue.Claim, datetime]]:
        with self._lock:
            started, self._unstored_starts = self._unstored_starts, {}
        return list(started.values())

    def _take_outcomes(self) -> list[queue.Outcome]:
        """Every outcome handed over so far: at most one per slot, as each claim is."""
        outcomes = []
        while True:
            try:
                outcomes.append(self._outcomes.get_nowait())
            except Empty:
                return outcomes

    def _settled(self, outcomes: list[queue.Outcome], stored: set[str]) -> None:
        """After the attempt to store `outcomes`: they are no longer this worker's to keep."""
        if not outcomes:
            return
        with self._lock:
            for outcome in outcomes:
                self._settling.pop(outcome.claim.id, None)
        waiters.notify(stored)
        for outcome in outcomes:
            if outcome.claim.id not in stored:
                log.warning(
                    "lease lost before the outcome was stored",
                    extra={"operation_id": outcome.claim.id},
                )

    # Running

    def _run(self, context: OperationContext) -> None:
        claim = context.claim
        op_token = operation_id_var.set(claim.id)
        host_token = host_id_var.set(claim.host_id)
        began = self._started(context)
        try:
            self._execute(context)
        except Exception:
            log.exception("operation bookkeeping failed; its lease will expire and it will rerun")
        finally:
            operation_id_var.reset(op_token)
            host_id_var.reset(host_token)
            elapsed = time.monotonic() - began
            # A moving average over the last few handlers (a race between threads only
            # drops one sample).
            previous = self._handler_seconds
            self._handler_seconds = (
                elapsed if math.isinf(previous) else 0.8 * previous + 0.2 * elapsed
            )
            with self._lock:
                # The same operation may already run again here (a deferral that fell due and was
                # claimed anew): only this run's own entries are removed.
                if self._running.get(claim.id) is context:
                    del self._running[claim.id]
                start = self._starts.get(claim.id)
                if start is not None and start.context is context:
                    del self._starts[claim.id]
                    self._unstored_starts.pop(claim.id, None)
            self._wake.set()

    def _execute(self, context: OperationContext) -> None:
        claim = context.claim
        settings = self.app.settings
        handler = get_handler(claim.kind)
        if handler is None:
            self._settle(queue.Outcome(claim, FAILED, error=f"unknown kind {claim.kind!r}"))
            return
        if claim.attempts > claim.max_attempts:
            # Claimed again after its worker died on every attempt: stop the crash loop.
            error = f"gave up after {claim.max_attempts} attempts (worker lost each time)"
            self._settle(queue.Outcome(claim, FAILED, error=error))
            return
        try:
            context.checkpoint()
            result = handler(context)
        except Cancelled:
            context.log("cancelled at a safe point")
            self._settle(queue.Outcome(claim, CANCELLED, error="cancelled by request"))
        except LeaseLost:
            log.warning("lease lost; another worker owns the operation now")
        except Interrupted:
            queue.requeue(
                self.app.db,
                claim,
                delay_seconds=0,
                error=None,
                count_attempt=False,
                started_at=self._ended(claim),
            )
        except Deferred as deferred:
            queue.defer(self.app.db, claim, seconds=deferred.seconds, started_at=self._ended(claim))
            due = time.monotonic() + deferred.seconds
            with self._lock:
                self._deferred_due = min(self._deferred_due, due)
            if due < self._claimer_wakes_at:
                # The claimer sleeps past the due time (a long idle poll): let it plan again.
                self._wake.set()
        except (TransientError, EngineError) as exc:
            transient = isinstance(exc, TransientError) or exc.transient
            message = str(exc) or type(exc).__name__
            if transient and claim.attempts < claim.max_attempts:
                delay = backoff_seconds(
                    claim.attempts, base=settings.retry_base_seconds, cap=settings.retry_max_seconds
                )
                context.log(
                    f"attempt {claim.attempts} failed: {message}; retrying in {delay:.1f}s",
                    "warning",
                )
                queue.requeue(
                    self.app.db,
                    claim,
                    delay_seconds=delay,
                    error=message,
                    count_attempt=True,
                    started_at=self._ended(claim),
                )
            else:
                if transient:
                    message = f"{message} (gave up after {claim.attempts} attempts)"
                context.log(message, "error")
                self._settle(queue.Outcome(claim, FAILED, error=message))
        except PermanentError as exc:
            context.log(str(exc), "error")
            self._settle(queue.Outcome(claim, FAILED, error=str(exc)))
        except Exception as exc:
            log.exception("operation handler crashed")
            message = f"internal error in {claim.kind}: {type(exc).__name__}: {exc}"
            self._settle(queue.Outcome(claim, FAILED, error=message))
        else:
            self._settle(queue.Outcome(claim, SUCCEEDED, result=result or {}))
