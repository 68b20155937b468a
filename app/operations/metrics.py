"""The queue's figures for /metrics: operations by kind and status, and the queue's depth."""

from __future__ import annotations

from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.operations.models import QUEUED, Operation


def figures(session: Session) -> list[GaugeMetricFamily]:
    operations = GaugeMetricFamily(
        "berth_operations", "Operations by kind and status", labels=["kind", "status"]
    )
    depth = GaugeMetricFamily("berth_queue_depth", "Queued operations, due or waiting to retry")
    by_kind = session.execute(
        select(Operation.kind, Operation.status, func.count()).group_by(
            Operation.kind, Operation.status
        )
    ).all()
    queued = 0
    for kind, status, count in by_kind:
        operations.add_metric([kind, status], count)
        if status == QUEUED:
            queued += count
    depth.add_metric([], queued)
    return [operations, depth]
