"""The image check's figures for /metrics: requests to each registry and how they ended."""

from __future__ import annotations

from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.images.models import RegistryCheckCount


def figures(session: Session) -> list[Metric]:
    families = {
        "checks": CounterMetricFamily(
            "berth_registry_checks", "Image checks asked of each registry", labels=["registry"]
        ),
        "not_modified": CounterMetricFamily(
            "berth_registry_checks_not_modified",
            "Image checks a registry answered 304 Not Modified (the tag names what it did)",
            labels=["registry"],
        ),
        "errors": CounterMetricFamily(
            "berth_registry_check_errors",
            "Image checks that got no digest (refused, unreachable, rate limited)",
            labels=["registry"],
        ),
        "rate_limited": CounterMetricFamily(
            "berth_registry_checks_rate_limited",
            "Image checks a registry answered 429, or the rate limit left for a later round",
            labels=["registry"],
        ),
    }
    for row in session.execute(select(RegistryCheckCount)).scalars():
        for name, family in families.items():
            family.add_metric([row.registry_host], getattr(row, name))
    return list(families.values())
