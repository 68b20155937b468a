"""Prometheus metrics: request counters and latencies in-process, queue and host figures from the
database at scrape time (so every process reports the same, fleet-wide truth)."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from app.core.db import Database
from app.hosts.models import Host
from app.operations.models import QUEUED, Operation


class DatabaseCollector(Collector):
    def __init__(self, db: Database) -> None:
        self.db = db

    def collect(self) -> Iterator[GaugeMetricFamily]:
        operations = GaugeMetricFamily(
            "berth_operations", "Operations by kind and status", labels=["kind", "status"]
        )
        depth = GaugeMetricFamily("berth_queue_depth", "Queued operations, due or waiting to retry")
        hosts = GaugeMetricFamily("berth_hosts", "Hosts by status", labels=["status"])
        with self.db.session(write=False) as session:
            by_kind = session.execute(
                select(Operation.kind, Operation.status, func.count()).group_by(
                    Operation.kind, Operation.status
                )
            ).all()
            by_status = session.execute(
                select(Host.status, func.count()).group_by(Host.status)
            ).all()
        queued = 0
        for kind, status, count in by_kind:
            operations.add_metric([kind, status], count)
            if status == QUEUED:
                queued += count
        depth.add_metric([], queued)
        for status, count in by_status:
            hosts.add_metric([status], count)
        yield operations
        yield depth
        yield hosts


class Metrics:
    def __init__(self, db: Database) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "berth_http_requests",
            "HTTP requests by method, route and status",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "berth_http_request_duration_seconds",
            "HTTP request latency by method and route",
            ["method", "route"],
            buckets=(
                0.001,
                0.0025,
                0.005,
                0.01,
                0.025,
                0.05,
                0.1,
                0.25,
                0.5,
                1,
                2.5,
                5,
                10,
                30,
                60,
            ),
            registry=self.registry,
        )
        self.registry.register(DatabaseCollector(db))
