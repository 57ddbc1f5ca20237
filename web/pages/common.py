"""What several pages share: the range picker and chart building."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import Query

from analytics.schemas import Series
from web.charts import Line

RANGES = {"24h": (1, "hour"), "7d": (7, "hour"), "30d": (30, "day"), "90d": (90, "day")}
RangeQ = Annotated[Literal["24h", "7d", "30d", "90d"], Query(description="Time range shown.")]


def range_bounds(name: str) -> tuple[datetime, datetime, str]:
    """(start, end, interval) of a named range ending now."""
    days, interval = RANGES[name]
    end = datetime.now(UTC)
    return end - timedelta(days=days), end, interval


def lines(series: list[Series]) -> tuple[list, list[Line], list[int]]:
    """(buckets, lines, totals) for `charts.line_chart` from analytics series."""
    if not series:
        return [], [], []
    buckets = [p.at for p in series[0].points]
    return buckets, [Line(s.label, [p.count for p in s.points]) for s in series], [s.total for s in series]
