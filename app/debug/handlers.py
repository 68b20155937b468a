"""Operation kinds for tests and benchmarks, reachable only with BERTH_ENABLE_DEBUG_OPERATIONS."""

from __future__ import annotations

import os
import time
from typing import Any

from app.operations.context import OperationContext, PermanentError, TransientError
from app.operations.registry import handler


@handler("debug.noop")
def noop(ctx: OperationContext) -> dict[str, Any]:
    return {}


@handler("debug.sleep")
def sleep(ctx: OperationContext) -> dict[str, Any]:
    seconds = float(ctx.params.get("seconds", 1.0))
    # The pid lets tests count which worker process ran each attempt.
    ctx.log(f"sleeping {seconds:g}s in pid {os.getpid()}")
    ctx.sleep(seconds)
    return {"slept": seconds}


@handler("debug.fail")
def fail(ctx: OperationContext) -> dict[str, Any]:
    """Fails transiently for `transient_failures` attempts, then succeeds or fails for good."""
    if ctx.attempt <= int(ctx.params.get("transient_failures", 0)):
        raise TransientError(f"simulated transient failure on attempt {ctx.attempt}")
    if ctx.params.get("permanent"):
        raise PermanentError(str(ctx.params.get("message", "simulated permanent failure")))
    return {"attempts": ctx.attempt}


@handler("debug.container")
def run_container(ctx: OperationContext) -> dict[str, Any]:
    """Run a container to completion on the operation's host, exactly once across attempts.

    The container carries the operation's id as a label, so a retry after a crash finds the
    container an earlier attempt created and waits for it instead of starting another.
    """
    engine = ctx.engine()
    labels = {"berth.operation": ctx.id, "berth.kind": "debug.container"}
    found = engine.list_containers(labels=labels)
    if found:
        container_id = str(found[0]["Id"])
        ctx.log(f"found container {container_id[:12]} from an earlier attempt")
    else:
        body = {
            "Image": str(ctx.params.get("image", "berth-test/busybox:latest")),
            "Cmd": ["sleep", str(ctx.params.get("seconds", 1))],
            "Labels": labels,
        }
        container_id = engine.create_container_raw(None, body)
        ctx.log(f"created container {container_id[:12]}")
    state = engine.inspect_container(container_id)["State"]
    if state["Status"] == "created":
        engine.start_container(container_id)
        ctx.log("started container")
    while True:
        state = engine.inspect_container(container_id)["State"]
        if state["Status"] in ("exited", "dead"):
            break
        ctx.checkpoint()
        time.sleep(0.2)
    ctx.progress({"container_id": container_id}, force=True)
    return {"container_id": container_id, "exit_code": int(state.get("ExitCode", -1))}
