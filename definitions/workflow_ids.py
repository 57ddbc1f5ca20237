"""Every Temporal workflow and schedule id the platform uses, built in one
place (stdlib only, so workflows import it through the sandbox too).

An id is deterministic: the same thing always gets the same id, so a second
start joins the running workflow instead of starting a twin, and a
signal-with-start finds the workflow that is already there. No id string is
formatted anywhere else.
"""

from __future__ import annotations

import hashlib

# Schedules (worker/setup.py) and the ids of the runs they start.
EVENT_PARTITIONS_SCHEDULE = "maintenance-event-partitions"
SEGMENT_REFRESH_DISPATCH_SCHEDULE = "segments-refresh-dispatch"
OUTBOX_SWEEP_SCHEDULE = "maintenance-outbox-sweep"
FLOW_DATE_TRIGGERS_SCHEDULE = "flows-date-triggers"
ANALYTICS_ROLLUP_SCHEDULE = "analytics-rollup"


def event_partitions() -> str:
    """The scheduled `EventPartitionsWorkflow` (one at a time)."""
    return "maintenance:event-partitions"


def analytics_rollup() -> str:
    """The scheduled `AnalyticsRollupWorkflow` (one at a time)."""
    return "analytics:rollup"


def outbox_sweep() -> str:
    """The scheduled `OutboxSweepWorkflow` (one at a time)."""
    return "maintenance:outbox-sweep"


def flow_date_triggers() -> str:
    """The scheduled `FlowDateTriggersWorkflow` (one at a time)."""
    return "flows:date-triggers"


def segment_refresh_dispatch() -> str:
    """The scheduled `SegmentRefreshDispatchWorkflow` (one at a time)."""
    return "segments:refresh-dispatch"


def segment_refresh(segment_id: object) -> str:
    """`SegmentRefreshWorkflow` of one segment, so a running refresh is never started twice."""
    return f"segment-refresh:{segment_id}"


def segment_recheck(workspace_id: object) -> str:
    """`SegmentRecheckWorkflow` of one workspace (signalled with `wake`)."""
    return f"segment-recheck:{workspace_id}"


def message(message_id: object) -> str:
    """`SendMessageWorkflow` of one message row."""
    return f"message:{message_id}"


def flow_run(flow_id: object, profile_id: object, enrollment_key: str = "") -> str:
    """`FlowRunWorkflow` of one enrollment: one running enrollment per flow,
    person and enrollment key (any string, entering the id as a short hash)."""
    base = f"flow:{flow_id}:{profile_id}"
    if not enrollment_key:
        return base
    return f"{base}:{hashlib.sha256(enrollment_key.encode()).hexdigest()[:16]}"


def campaign(campaign_id: object) -> str:
    """`CampaignSendWorkflow` of one campaign: one send per campaign."""
    return f"campaign:{campaign_id}"
