"""Partition maintenance: the workflow keeps monthly partitions ahead and
drains early rows from the default partition; a schedule runs it."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, date, datetime

from sqlalchemy import text
from temporalio.client import WorkflowExecutionStatus

from activities.partitions import add_months
from core.settings import Settings
from db import partitions
from definitions.maintenance import EnsurePartitionsInput, EnsurePartitionsResult
from tests.support.db import count
from worker import setup


async def _partitions(engine) -> list[str]:
    async with engine.connect() as conn:
        return await partitions.list_month_partitions(conn)


async def test_workflow_creates_partitions_ahead(temporal_client, worker, settings, engine):
    this_month = datetime.now(UTC).date().replace(day=1)
    result = await temporal_client.execute_workflow(
        "EventPartitionsWorkflow",
        EnsurePartitionsInput(months_ahead=6),
        id=f"test-partitions-{uuid.uuid4()}",
        task_queue=settings.temporal_task_queue,
        result_type=EnsurePartitionsResult,
    )
    names = await _partitions(engine)
    for n in range(-1, 7):
        assert f"events_{add_months(this_month, n):%Y_%m}" in names
    assert result.existing == len(names)
    # Running it again changes nothing.
    again = await temporal_client.execute_workflow(
        "EventPartitionsWorkflow",
        EnsurePartitionsInput(months_ahead=6),
        id=f"test-partitions-{uuid.uuid4()}",
        task_queue=settings.temporal_task_queue,
        result_type=EnsurePartitionsResult,
    )
    assert again.created == []


async def test_rows_in_the_default_partition_move_to_their_month(
    temporal_client, worker, settings, engine, tracking, workspace
):
    # Two years ago has no partition: the event lands in the default one.
    old = date(datetime.now(UTC).year - 2, 6, 15)
    r = await tracking.post(
        "/track", json={"userId": "u", "event": "Backfilled", "timestamp": f"{old}T12:00:00Z"}
    )
    assert r.status_code == 200
    ws = workspace.workspace_id
    in_default = "SELECT count(*) FROM events_default WHERE workspace_id = :ws"
    assert await count(engine, in_default, ws=ws) == 1

    result = await temporal_client.execute_workflow(
        "EventPartitionsWorkflow",
        EnsurePartitionsInput(months_ahead=3),
        id=f"test-partitions-{uuid.uuid4()}",
        task_queue=settings.temporal_task_queue,
        result_type=EnsurePartitionsResult,
    )
    name = f"events_{old:%Y_%m}"
    assert name in result.created and name in result.moved_from_default
    assert await count(engine, in_default, ws=ws) == 0
    assert await count(engine, f"SELECT count(*) FROM {name} WHERE workspace_id = :ws", ws=ws) == 1
    # The event is still found (and still deduplicated) through the parent table.
    assert await count(engine, "SELECT count(*) FROM events WHERE workspace_id = :ws", ws=ws) == 1


async def test_schedule_runs_the_workflow(temporal_client, worker, settings: Settings, engine):
    created = await setup.ensure_schedules(temporal_client, settings)
    assert set(created) == {
        setup.EVENT_PARTITIONS_SCHEDULE,
        setup.SEGMENT_REFRESH_SCHEDULE,
        setup.OUTBOX_SWEEP_SCHEDULE,
        setup.FLOW_DATE_TRIGGERS_SCHEDULE,
        setup.ANALYTICS_ROLLUP_SCHEDULE,
    }
    # A second call updates in place.
    assert await setup.ensure_schedules(temporal_client, settings) == []
    description = await temporal_client.get_schedule_handle(setup.EVENT_PARTITIONS_SCHEDULE).describe()
    assert description.schedule.action.workflow == "EventPartitionsWorkflow"

    # Created with trigger_immediately: a run appears and completes.
    query = (
        'WorkflowType = "EventPartitionsWorkflow" '
        f'AND TemporalScheduledById = "{setup.EVENT_PARTITIONS_SCHEDULE}"'
    )
    for _ in range(100):
        runs = [w async for w in temporal_client.list_workflows(query)]
        if runs and runs[0].status == WorkflowExecutionStatus.COMPLETED:
            break
        await asyncio.sleep(0.2)
    else:
        raise AssertionError(f"scheduled run did not complete: {runs}")
    for schedule_id in created:
        await temporal_client.get_schedule_handle(schedule_id).delete()


async def test_migration_created_current_partitions(engine):
    this_month = datetime.now(UTC).date().replace(day=1)
    names = await _partitions(engine)
    assert f"events_{this_month:%Y_%m}" in names
    async with engine.connect() as conn:
        kind = (
            await conn.execute(text("SELECT relkind::text FROM pg_class WHERE relname = 'events'"))
        ).scalar()
    assert kind == "p"  # partitioned table
