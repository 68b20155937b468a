"""Prometheus metrics: request counters and latencies in-process, queue and host figures from the
database at scrape time (so every process reports the same, fleet-wide truth)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session

from app.core.db import Database

# Reads one domain's figures in the scrape's session (hosts by status, operations by kind...).
DatabaseFigures = Callable[[Session], Sequence[Metric]]


class DatabaseCollector(Collector):
    def __init__(self, db: Database, figures: DatabaseFigures) -> None:
        self.db = db
        self.figures = figures

    def collect(self) -> Iterator[Metric]:
        with self.db.session(write=False) as session:
            families = self.figures(session)
        yield from families


class Metrics:
    """The process's registry. The domains own their database figures (they sit above core);
    the composition root adds each with `add_database_figures`."""

    def __init__(self) -> None:
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

    def add_database_figures(self, db: Database, figures: DatabaseFigures) -> None:
        self.registry.register(DatabaseCollector(db, figures))
