"""Flow operations: definitions and versions, the lifecycle, enrollment
requests (handed to the flow runtime) and stats. Services take the session
first and never commit; the request owns the transaction.

Lifecycle: draft → active ⇄ paused; any of them → archived. A draft has
never been activated (nothing returns to draft), so its one version may be
rewritten in place; once activated, a new definition is a new immutable
version and `flows.version` points new enrollments at it.
"""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import quote

import orjson
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.service import RPCError

from core.errors import BadRequest, Conflict, NotFound, ServiceUnavailable, ValidationFailed
from core.ids import uuid7
from core.pagination import cut_page, decode_time_cursor, encode_time_cursor
from core.settings import Settings
from core.temporal import TemporalConnection
from db import queries
from db.tables import flows as flows_table
from definitions.flows import (
    MAX_NODES,
    BranchNode,
    FlowGraph,
    SegmentTrigger,
    SendEmailNode,
    validate_graph,
)
from definitions.segments import SegmentDefinition, dependencies
from flows import repository as repo
from flows import runtime
from flows.schemas import (
    EmailStats,
    EnrollmentDetail,
    EnrollmentOut,
    EnrollmentPage,
    EnrollmentStats,
    EnrollOut,
    EnrollRequest,
    FlowCreate,
    FlowOut,
    FlowPage,
    FlowStats,
    FlowSummary,
    FlowUpdate,
    FlowVersionOut,
    FlowVersionPage,
    NodeStats,
    ProfileEnrollment,
    SegmentEnrollOut,
    SegmentEnrollRequest,
    StepOut,
)
from topics import repository as topics_repo

# Which statuses each transition starts from.
_ACTIVATE_FROM = ("draft", "paused")
_PAUSE_FROM = ("active",)
_ARCHIVE_FROM = ("draft", "active", "paused")

# -- validation -----------------------------------------------------------------


def _error_loc(root: str, loc: tuple[Any, ...], data: dict[str, Any]) -> str:
    """A pydantic error location under `root`, with a node's list index
    replaced by its id (and the union tag dropped), so the 422 names the
    node the way the author wrote it: `body.definition.nodes.remind.template_id`."""
    parts = list(loc)
    if len(parts) >= 2 and parts[0] == "nodes" and isinstance(parts[1], int):
        nodes = data.get("nodes")
        raw = nodes[parts[1]] if isinstance(nodes, list) and parts[1] < len(nodes) else None
        if isinstance(raw, dict):
            if isinstance(raw.get("id"), str) and raw["id"]:
                parts[1] = raw["id"]
            if len(parts) >= 3 and parts[2] == raw.get("type"):
                del parts[2]
    elif len(parts) >= 2 and parts[0] == "trigger":
        raw = data.get("trigger")
        if isinstance(raw, dict) and parts[1] == raw.get("type"):
            del parts[1]
    return ".".join(str(p) for p in (root, *parts))


def parse_graph(data: dict[str, Any], root: str = "body.definition") -> FlowGraph:
    """Parse and structurally validate a graph; ValidationFailed lists every
    problem with its location under `root` (nodes named by id)."""
    trigger = data.get("trigger")
    if isinstance(trigger, list):
        raise ValidationFailed(
            [
                {
                    "loc": f"{root}.trigger",
                    "msg": f"a flow has exactly one trigger, not a list of {len(trigger)}",
                }
            ]
        )
    nodes = data.get("nodes")
    if isinstance(nodes, list) and len(nodes) > MAX_NODES:
        # Refused before parsing: a huge graph costs nothing to turn away.
        raise ValidationFailed(
            [{"loc": f"{root}.nodes", "msg": f"{len(nodes)} nodes; a flow has at most {MAX_NODES}"}]
        )
    try:
        graph = FlowGraph.model_validate(data)
    except ValidationError as exc:
        raise ValidationFailed(
            [
                {"loc": _error_loc(root, err["loc"], data), "msg": err["msg"]}
                for err in exc.errors(include_url=False, include_input=False)
            ]
        ) from None
    problems = [{"loc": f"{root}.{p.loc}", "msg": p.msg} for p in validate_graph(graph)]
    problems += _condition_problems(graph, root)
    if problems:
        raise ValidationFailed(problems)
    return graph


def _condition_problems(graph: FlowGraph, root: str) -> list[dict[str, str]]:
    """Branch conditions and the exit condition keep the segment language's
    depth and size limits (the graph model takes any condition tree)."""
    checks: list[tuple[str, Any]] = [
        (f"nodes.{node.id}", branch.condition)
        for node in graph.nodes
        if isinstance(node, BranchNode)
        for branch in node.branches
    ]
    if graph.settings.exit_condition is not None:
        checks.append(("settings.exit_condition", graph.settings.exit_condition))
    problems = []
    for loc, condition in checks:
        try:
            SegmentDefinition(root=condition)
        except ValidationError as exc:
            problems += [{"loc": f"{root}.{loc}", "msg": e["msg"]} for e in exc.errors(include_url=False)]
    return problems


def _references(graph: FlowGraph) -> list[tuple[str, str, uuid.UUID]]:
    """(location, kind, id) of every template and segment the graph names."""
    refs: list[tuple[str, str, uuid.UUID]] = []
    if isinstance(graph.trigger, SegmentTrigger):
        refs.append(("trigger", "segment", graph.trigger.segment_id))
    for node in graph.nodes:
        if isinstance(node, SendEmailNode):
            refs.append((f"nodes.{node.id}", "template", node.template_id))
        elif isinstance(node, BranchNode):
            for branch in node.branches:
                refs += [
                    (f"nodes.{node.id}", "segment", s) for s in dependencies(branch.condition).segment_ids
                ]
    if graph.settings.exit_condition is not None:
        refs += [
            ("settings.exit_condition", "segment", s)
            for s in dependencies(graph.settings.exit_condition).segment_ids
        ]
    return refs


async def check_references(
    session: AsyncSession, workspace_id: uuid.UUID, graph: FlowGraph, root: str = "body.definition"
) -> None:
    """Every template, segment and topic the graph names exists in the
    workspace; ValidationFailed names the node of each that does not."""
    refs = _references(graph)
    found = {
        "template": await repo.existing_templates(
            session, workspace_id, {i for _, k, i in refs if k == "template"}
        ),
        "segment": await repo.existing_segments(
            session, workspace_id, {i for _, k, i in refs if k == "segment"}
        ),
    }
    problems = [
        {"loc": f"{root}.{loc}", "msg": f"no {kind} {ref} in this workspace"}
        for loc, kind, ref in refs
        if ref not in found[kind]
    ]
    tagged = [(n.id, n.topic) for n in graph.nodes if isinstance(n, SendEmailNode) and n.topic]
    known = await topics_repo.existing_keys(session, workspace_id, {t for _, t in tagged})
    problems += [
        {"loc": f"{root}.nodes.{node_id}", "msg": f"no topic {topic!r} in this workspace"}
        for node_id, topic in tagged
        if topic not in known
    ]
    if problems:
        raise ValidationFailed(problems)


def _dump(graph: FlowGraph, root: str) -> dict[str, Any]:
    # Defaults are stored explicitly: a version is immutable, so its meaning
    # must not change when a default in definitions/flows.py does.
    dumped = graph.model_dump(mode="json", by_alias=True, exclude_none=True)
    try:
        data = orjson.dumps(dumped)
    except orjson.JSONEncodeError as exc:  # integers past 64 bits, lone surrogates
        raise ValidationFailed([{"loc": root, "msg": f"cannot be stored: {exc}"}]) from None
    if b"\\u0000" in data:  # jsonb cannot hold U+0000
        raise ValidationFailed([{"loc": root, "msg": "strings must not contain NUL characters"}])
    return dumped


async def _validated(
    session: AsyncSession, workspace_id: uuid.UUID, data: dict[str, Any], root: str
) -> dict[str, Any]:
    graph = parse_graph(data, root)
    await check_references(session, workspace_id, graph, root)
    return _dump(graph, root)


# -- flows ----------------------------------------------------------------------


async def _require_flow(
    session: AsyncSession, workspace_id: uuid.UUID, flow_id: uuid.UUID, *, for_update: bool = False
) -> Any:
    row = await repo.get_flow(session, workspace_id, flow_id, for_update=for_update)
    if row is None:
        raise NotFound(f"no flow {flow_id} in this workspace")
    return row


async def create_flow(session: AsyncSession, workspace_id: uuid.UUID, data: FlowCreate) -> FlowOut:
    """Validate and save as a draft at version 1; 422 naming the node, 409 on a taken name."""
    definition = await _validated(session, workspace_id, data.definition, "body.definition")
    if await queries.name_taken(session, flows_table, workspace_id, data.name):
        raise Conflict(f"a flow named {data.name!r} exists")
    flow_id = uuid7()
    try:
        row = await queries.insert_row(
            session,
            flows_table,
            repo.FLOW_COLUMNS,
            {
                "id": flow_id,
                "workspace_id": workspace_id,
                "name": data.name,
                "description": data.description,
                "status": "draft",
                "version": 1,
            },
        )
    except IntegrityError:  # a concurrent create took the name
        raise Conflict(f"a flow named {data.name!r} exists") from None
    await repo.insert_version(session, workspace_id, flow_id, 1, definition)
    return FlowOut.model_validate({**row, "definition": definition})


async def list_flows(
    session: AsyncSession, workspace_id: uuid.UUID, cursor: str | None, limit: int
) -> FlowPage:
    """One page of flows, newest first."""
    page, next_cursor = await queries.newest_page(
        session,
        flows_table,
        repo.FLOW_COLUMNS,
        workspace_id,
        cursor,
        limit,
        lambda r: FlowSummary.model_validate(dict(r)),
    )
    return FlowPage(data=page, next_cursor=next_cursor)


async def get_flow(session: AsyncSession, workspace_id: uuid.UUID, flow_id: uuid.UUID) -> FlowOut:
    """One flow with its current definition; 404 outside the workspace."""
    return FlowOut.model_validate(dict(await _require_flow(session, workspace_id, flow_id)))


async def update_flow(
    session: AsyncSession, workspace_id: uuid.UUID, flow_id: uuid.UUID, data: FlowUpdate
) -> FlowOut:
    """Rename, describe or redefine. An archived flow refuses (409); a new
    definition replaces a draft's version in place, and becomes version
    N+1 of a flow that has been activated (running enrollments keep theirs)."""
    row = await _require_flow(session, workspace_id, flow_id, for_update=True)
    if row["status"] == "archived":
        raise Conflict("flow is archived; archived flows cannot be edited")
    values: dict[str, Any] = {}
    if data.name is not None and data.name != row["name"]:
        if await queries.name_taken(session, flows_table, workspace_id, data.name, flow_id):
            raise Conflict(f"a flow named {data.name!r} exists")
        values["name"] = data.name
    if "description" in data.model_fields_set:
        values["description"] = data.description
    version_changed = False
    if data.definition is not None:
        definition = await _validated(session, workspace_id, data.definition, "body.definition")
        if definition != row["definition"]:
            if row["status"] == "draft":
                await repo.replace_version(session, workspace_id, flow_id, row["version"], definition)
            else:
                version = await repo.latest_version(session, workspace_id, flow_id) + 1
                await repo.insert_version(session, workspace_id, flow_id, version, definition)
                values["version"] = version
            version_changed = True
    if values or version_changed:
        try:
            await queries.update_row(session, flows_table, repo.FLOW_COLUMNS, workspace_id, flow_id, values)
        except IntegrityError:
            raise Conflict(f"a flow named {data.name!r} exists") from None
    if version_changed:
        await runtime.flow_changed(session, workspace_id, flow_id)
    return await get_flow(session, workspace_id, flow_id)


async def delete_flow(session: AsyncSession, workspace_id: uuid.UUID, flow_id: uuid.UUID) -> None:
    """Delete a draft nobody was enrolled in; anything else is archived instead (409)."""
    row = await _require_flow(session, workspace_id, flow_id, for_update=True)
    if row["status"] != "draft":
        raise Conflict(f"flow is {row['status']}; only drafts can be deleted, archive it instead")
    if await repo.has_enrollments(session, workspace_id, flow_id):
        raise Conflict("flow has enrollments; archive it instead")
    await queries.delete_row(session, flows_table, workspace_id, flow_id)


async def list_versions(
    session: AsyncSession, workspace_id: uuid.UUID, flow_id: uuid.UUID, cursor: str | None, limit: int
) -> FlowVersionPage:
    """A flow's versions, newest first."""
    await _require_flow(session, workspace_id, flow_id)
    before = None
    if cursor:
        if not (cursor.isascii() and cursor.isdigit()) or len(cursor) > 9:
            raise BadRequest("invalid cursor: pass the next_cursor of a previous page")
        before = int(cursor)
    rows = await repo.list_versions(session, workspace_id, flow_id, before=before, limit=limit + 1)
    page, next_cursor = cut_page(
        rows, limit, lambda r: FlowVersionOut.model_validate(dict(r)), lambda v: str(v.version)
    )
    return FlowVersionPage(data=page, next_cursor=next_cursor)


async def _transition(
    session: AsyncSession, workspace_id: uuid.UUID, flow_id: uuid.UUID, allowed: tuple[str, ...], to: str
) -> FlowOut:
    row = await _require_flow(session, workspace_id, flow_id, for_update=True)
    if row["status"] not in allowed:
        raise Conflict(f"flow is {row['status']}; only {' or '.join(allowed)} flows can become {to}")
    await queries.update_row(session, flows_table, repo.FLOW_COLUMNS, workspace_id, flow_id, {"status": to})
    await runtime.flow_changed(session, workspace_id, flow_id)
    return await get_flow(session, workspace_id, flow_id)


async def activate(session: AsyncSession, workspace_id: uuid.UUID, flow_id: uuid.UUID) -> FlowOut:
    """draft | paused → active, after validating the current version again
    (a template or segment it names may have been deleted since)."""
    row = await _require_flow(session, workspace_id, flow_id, for_update=True)
    if row["status"] in _ACTIVATE_FROM:
        await _validated(session, workspace_id, row["definition"], "definition")
    return await _transition(session, workspace_id, flow_id, _ACTIVATE_FROM, "active")


async def pause(session: AsyncSession, workspace_id: uuid.UUID, flow_id: uuid.UUID) -> FlowOut:
    """active → paused: no new enrollments; running ones hold before their next send."""
    return await _transition(session, workspace_id, flow_id, _PAUSE_FROM, "paused")


async def archive(session: AsyncSession, workspace_id: uuid.UUID, flow_id: uuid.UUID) -> FlowOut:
    """Anything but archived → archived: running enrollments are asked to exit."""
    return await _transition(session, workspace_id, flow_id, _ARCHIVE_FROM, "archived")


# -- enrollments ----------------------------------------------------------------


def temporal_ui_link(settings: Settings, workflow_id: str) -> str:
    """The run's page in the Temporal web UI."""
    return f"{settings.temporal_ui_url}/namespaces/{settings.temporal_namespace}/workflows/{workflow_id}"


def temporal_ui_search(settings: Settings, **attributes: object) -> str:
    """The Temporal web UI's workflow list filtered by search attributes
    (`FlowId`, `ProfileId`, ...)."""
    query = " AND ".join(f'{name}="{value}"' for name, value in attributes.items())
    base = f"{settings.temporal_ui_url}/namespaces/{settings.temporal_namespace}/workflows"
    return f"{base}?query={quote(query)}"


async def profile_enrollments(
    session: AsyncSession, workspace_id: uuid.UUID, profile_id: uuid.UUID, settings: Settings, limit: int = 50
) -> list[ProfileEnrollment]:
    """A person's latest enrollments across flows, each with its run in the Temporal UI."""
    rows = await repo.profile_enrollments(session, workspace_id, profile_id, limit)
    return [ProfileEnrollment.model_validate(_enrollment(r, settings)) for r in rows]


async def _require_active(session: AsyncSession, workspace_id: uuid.UUID, flow_id: uuid.UUID) -> None:
    row = await _require_flow(session, workspace_id, flow_id)
    if row["status"] != "active":
        raise Conflict(f"flow is {row['status']}; only active flows take enrollments")


async def enroll(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    flow_id: uuid.UUID,
    data: EnrollRequest,
    temporal: TemporalConnection,
    settings: Settings,
) -> EnrollOut:
    """Enroll one person (404 if no such profile, 409 unless the flow is
    active) through the flow runtime."""
    await _require_flow(session, workspace_id, flow_id)
    profile_id = await repo.find_profile_id(
        session, workspace_id, profile_id=data.profile_id, email=data.email, external_id=data.external_id
    )
    if profile_id is None:
        named = data.profile_id or data.email or data.external_id
        raise NotFound(f"no profile {named} in this workspace")
    await _require_active(session, workspace_id, flow_id)
    client = await temporal.get()
    try:
        result = await runtime.enroll(
            client, settings, session, workspace_id, flow_id, profile_id, data.payload
        )
    except RPCError as exc:
        raise ServiceUnavailable(f"Temporal did not answer: {exc}") from None
    # A refused person has no run to link to.
    link = temporal_ui_link(settings, result.workflow_id) if result.status != "refused" else None
    return EnrollOut(
        enrollment_id=result.enrollment_id,
        workflow_id=result.workflow_id,
        status=result.status,
        temporal_ui=link,
    )


async def enroll_segment(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    flow_id: uuid.UUID,
    data: SegmentEnrollRequest,
    temporal: TemporalConnection,
    settings: Settings,
) -> SegmentEnrollOut:
    """Enroll a segment's current members once (422 if the segment is not
    the workspace's, 409 unless the flow is active)."""
    await _require_active(session, workspace_id, flow_id)
    if not await repo.existing_segments(session, workspace_id, {data.segment_id}):
        raise ValidationFailed(
            [{"loc": "body.segment_id", "msg": f"no segment {data.segment_id} in this workspace"}]
        )
    client = await temporal.get()
    try:
        result = await runtime.enroll_segment(
            client, settings, session, workspace_id, flow_id, data.segment_id
        )
    except RPCError as exc:
        raise ServiceUnavailable(f"Temporal did not answer: {exc}") from None
    return SegmentEnrollOut(
        enrolled=result.enrolled, already_enrolled=result.already_enrolled, refused=result.refused
    )


def _enrollment(row: Any, settings: Settings) -> dict[str, Any]:
    return {**row, "temporal_ui": temporal_ui_link(settings, row["workflow_id"])}


async def list_enrollments(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    flow_id: uuid.UUID,
    settings: Settings,
    *,
    status: str | None,
    profile_id: uuid.UUID | None,
    cursor: str | None,
    limit: int,
) -> EnrollmentPage:
    """One page of a flow's enrollments, newest first, optionally by status or person."""
    await _require_flow(session, workspace_id, flow_id)
    rows = await repo.list_enrollments(
        session,
        workspace_id,
        flow_id,
        status=status,
        profile_id=profile_id,
        after=decode_time_cursor(cursor),
        limit=limit + 1,
    )
    page, next_cursor = cut_page(
        rows,
        limit,
        lambda r: EnrollmentOut.model_validate(_enrollment(r, settings)),
        lambda e: encode_time_cursor(e.entered_at, e.id),
    )
    return EnrollmentPage(data=page, next_cursor=next_cursor)


async def _require_enrollment(
    session: AsyncSession, workspace_id: uuid.UUID, flow_id: uuid.UUID, enrollment_id: uuid.UUID
) -> Any:
    await _require_flow(session, workspace_id, flow_id)
    row = await repo.get_enrollment(session, workspace_id, flow_id, enrollment_id)
    if row is None:
        raise NotFound(f"no enrollment {enrollment_id} in this flow")
    return row


async def get_enrollment(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    flow_id: uuid.UUID,
    enrollment_id: uuid.UUID,
    settings: Settings,
) -> EnrollmentDetail:
    """One enrollment with its payload and steps."""
    row = await _require_enrollment(session, workspace_id, flow_id, enrollment_id)
    steps = await repo.enrollment_steps(session, workspace_id, enrollment_id)
    return EnrollmentDetail.model_validate(
        {**_enrollment(row, settings), "steps": [StepOut.model_validate(dict(s)) for s in steps]}
    )


async def exit_enrollment(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    flow_id: uuid.UUID,
    enrollment_id: uuid.UUID,
    temporal: TemporalConnection,
    settings: Settings,
) -> EnrollmentDetail:
    """Ask a running enrollment to exit (409 once it has ended)."""
    row = await _require_enrollment(session, workspace_id, flow_id, enrollment_id)
    if row["status"] != "running":
        raise Conflict(f"enrollment is {row['status']}; only running enrollments can exit")
    try:
        client = await temporal.get()
    except ServiceUnavailable:
        # The runtime hands exits to the outbox in this transaction (the
        # dispatcher signals the run later), so an exit is accepted while
        # Temporal is down.
        client = None
    try:
        await runtime.exit_enrollment(client, session, workspace_id, row)
    except RPCError as exc:
        raise ServiceUnavailable(f"Temporal did not answer: {exc}") from None
    return await get_enrollment(session, workspace_id, flow_id, enrollment_id, settings)


# -- stats ----------------------------------------------------------------------


async def stats(session: AsyncSession, workspace_id: uuid.UUID, flow_id: uuid.UUID) -> FlowStats:
    """The funnel: per node and edge from the steps, outcomes from the
    enrollments, emails from the messages (one grouped statement each).
    Nodes of the current version come first, in graph order; nodes only
    older versions had follow."""
    row = await _require_flow(session, workspace_id, flow_id)
    nodes: dict[str, NodeStats] = {
        n["id"]: NodeStats(node_id=n["id"], type=n.get("type")) for n in row["definition"].get("nodes", [])
    }

    def node(node_id: str) -> NodeStats:
        return nodes.setdefault(node_id, NodeStats(node_id=node_id, type=None))

    for r in await repo.step_stats(session, workspace_id, flow_id):
        target = node(r["node_id"])
        if r["by_edge"]:
            if r["edge"] is not None:
                target.edges[r["edge"]] = r["entered"]
        else:
            target.entered, target.waiting = r["entered"], r["waiting"]
            target.completed, target.failed = r["completed"], r["failed"]

    emails = EmailStats()
    for r in await repo.message_stats(session, workspace_id, flow_id):
        emails.sent += r["sent"]
        emails.opened += r["opened"]
        emails.clicked += r["clicked"]
        if r["node_id"] is not None:
            target = node(r["node_id"])
            target.emails_sent, target.emails_opened, target.emails_clicked = (
                r["sent"],
                r["opened"],
                r["clicked"],
            )

    counts = dict(await repo.enrollment_stats(session, workspace_id, flow_id))
    rate = counts["converted"] / counts["enrolled"] if counts["enrolled"] else 0.0
    return FlowStats(
        flow_id=flow_id,
        enrollments=EnrollmentStats(**counts, conversion_rate=round(rate, 4)),
        emails=emails,
        nodes=list(nodes.values()),
    )
