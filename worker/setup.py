"""Temporal set-up: search attributes and the maintenance schedules.

`mp up` runs this against its dev server; `mp temporal setup` runs it
against an external cluster. Both are idempotent.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest, ListSearchAttributesRequest
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleState,
    ScheduleUpdate,
    ScheduleUpdateInput,
)

from core.settings import Settings
from definitions import search_attributes, workflow_ids
from definitions.analytics import RollupInput
from definitions.flow_runs import DateTriggersInput
from definitions.maintenance import EnsurePartitionsInput, OutboxSweepInput
from definitions.segment_runs import DueSegmentsInput

log = logging.getLogger(__name__)

EVENT_PARTITIONS_SCHEDULE = workflow_ids.EVENT_PARTITIONS_SCHEDULE
SEGMENT_REFRESH_SCHEDULE = workflow_ids.SEGMENT_REFRESH_DISPATCH_SCHEDULE
OUTBOX_SWEEP_SCHEDULE = workflow_ids.OUTBOX_SWEEP_SCHEDULE
FLOW_DATE_TRIGGERS_SCHEDULE = workflow_ids.FLOW_DATE_TRIGGERS_SCHEDULE
ANALYTICS_ROLLUP_SCHEDULE = workflow_ids.ANALYTICS_ROLLUP_SCHEDULE


def dev_server_search_attribute_args() -> list[str]:
    """`--search-attribute` flags for `temporal server start-dev`."""
    args: list[str] = []
    for name in search_attributes.NAMES:
        args += ["--search-attribute", f"{name}=Keyword"]
    return args


async def register_search_attributes(client: Client, namespace: str) -> list[str]:
    """Add the platform's Keyword search attributes that are missing;
    returns the names added."""
    existing = await client.operator_service.list_search_attributes(
        ListSearchAttributesRequest(namespace=namespace)
    )
    known = set(existing.custom_attributes) | set(existing.system_attributes)
    missing = [name for name in search_attributes.NAMES if name not in known]
    if missing:
        await client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=namespace,
                search_attributes={name: IndexedValueType.INDEXED_VALUE_TYPE_KEYWORD for name in missing},
            )
        )
    return missing


def _every(
    settings: Settings,
    every: timedelta,
    workflow: str,
    arg: object,
    workflow_id: str,
    timeout: timedelta,
    note: str,
) -> Schedule:
    """A schedule that starts `workflow` every `every` on the platform's
    task queue, skipping a tick while the previous run still runs."""
    return Schedule(
        action=ScheduleActionStartWorkflow(
            workflow, arg, id=workflow_id, task_queue=settings.temporal_task_queue, execution_timeout=timeout
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
        state=ScheduleState(note=note),
    )


def schedules(settings: Settings) -> dict[str, Schedule]:
    """Every schedule the platform runs, by id."""
    return {
        EVENT_PARTITIONS_SCHEDULE: _every(
            settings,
            timedelta(hours=12),
            "EventPartitionsWorkflow",
            EnsurePartitionsInput(months_ahead=settings.partitions_months_ahead),
            workflow_ids.event_partitions(),
            timedelta(seconds=settings.partitions_run_timeout_seconds),
            "Creates monthly events partitions ahead of time.",
        ),
        # Every minute; each workspace's own interval decides which segments
        # are due (DueSegmentsInput / segments.repository.due_segments).
        SEGMENT_REFRESH_SCHEDULE: _every(
            settings,
            timedelta(minutes=1),
            "SegmentRefreshDispatchWorkflow",
            DueSegmentsInput(limit=500),
            workflow_ids.segment_refresh_dispatch(),
            timedelta(seconds=settings.segment_dispatch_timeout_seconds),
            "Starts refreshes of segments whose workspace interval has passed.",
        ),
        OUTBOX_SWEEP_SCHEDULE: _every(
            settings,
            timedelta(minutes=1),
            "OutboxSweepWorkflow",
            OutboxSweepInput(),
            workflow_ids.outbox_sweep(),
            timedelta(minutes=10),
            "Re-dispatches outbox rows whose dispatcher died or that Temporal refused.",
        ),
        FLOW_DATE_TRIGGERS_SCHEDULE: _every(
            settings,
            timedelta(minutes=5),
            "FlowDateTriggersWorkflow",
            DateTriggersInput(),
            workflow_ids.flow_date_triggers(),
            timedelta(minutes=30),
            "Enrolls people whose date trait makes a date-triggered flow due.",
        ),
        ANALYTICS_ROLLUP_SCHEDULE: _every(
            settings,
            timedelta(seconds=settings.analytics_rollup_seconds),
            "AnalyticsRollupWorkflow",
            RollupInput(lag_seconds=settings.analytics_rollup_lag_seconds),
            workflow_ids.analytics_rollup(),
            timedelta(hours=3),
            "Adds newly arrived events and profiles to the hourly rollups the dashboard reads.",
        ),
    }


async def ensure_schedules(client: Client, settings: Settings) -> list[str]:
    """Create (or bring up to date) the platform's schedules; a new
    schedule also runs once right away. Returns the ids created."""
    created: list[str] = []
    for schedule_id, schedule in schedules(settings).items():
        try:
            await client.create_schedule(schedule_id, schedule, trigger_immediately=True)
            created.append(schedule_id)
        except ScheduleAlreadyRunningError:

            def _update(_: ScheduleUpdateInput, schedule: Schedule = schedule) -> ScheduleUpdate:
                return ScheduleUpdate(schedule=schedule)

            await client.get_schedule_handle(schedule_id).update(_update)
    return created


async def setup_temporal(client: Client, settings: Settings) -> tuple[list[str], list[str]]:
    """Search attributes, then schedules. Returns (attributes added, schedules created)."""
    added = await register_search_attributes(client, settings.temporal_namespace)
    created = await ensure_schedules(client, settings)
    return added, created
