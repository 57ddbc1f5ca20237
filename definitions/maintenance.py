"""Inputs and results of the maintenance workflows and activities."""

from __future__ import annotations

from pydantic import BaseModel, Field


class EnsurePartitionsInput(BaseModel):
    """Keep monthly `events` partitions from last month to `months_ahead`."""

    months_ahead: int = Field(3, ge=1, le=24)


class EnsurePartitionsResult(BaseModel):
    """Partitions created by this run (names), and those already there."""

    created: list[str]
    existing: int
    moved_from_default: list[str] = Field(
        default_factory=list,
        description="Months whose early-arriving rows were moved out of the default partition.",
    )


class OutboxSweepInput(BaseModel):
    """Re-dispatch outbox rows whose lease ran out, at most `max_batches` batches."""

    max_batches: int = Field(100, ge=1, le=10_000)


class OutboxSweepResult(BaseModel):
    """Rows the sweep took again."""

    redispatched: int
