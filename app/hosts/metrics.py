"""The hosts' figures for /metrics: hosts by status."""

from __future__ import annotations

from prometheus_client.core import GaugeMetricFamily
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.hosts.models import Host


def figures(session: Session) -> list[GaugeMetricFamily]:
    hosts = GaugeMetricFamily("berth_hosts", "Hosts by status", labels=["status"])
    for status, count in session.execute(select(Host.status, func.count()).group_by(Host.status)):
        hosts.add_metric([status], count)
    return [hosts]
