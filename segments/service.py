"""Segment operations. Services take the session (or connection) first and
never commit; the request or the activity owns the transaction."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from typing import Any

from pydantic import TypeAdapter, ValidationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from core.errors import Conflict, NotFound, ValidationFailed
from core.ids import uuid7
from core.pagination import cut_page, decode_cursor, encode_cursor
from db import queries
from db.tables import segments
from definitions.segments import Condition, SegmentDefinition, dependencies
from segments import repository as repo
from segments.compiler import compile_members
from segments.facts import profile_matches
from segments.schemas import (
    MemberOut,
    MemberPage,
    ProfileSample,
    SegmentCreate,
    SegmentEstimate,
    SegmentOut,
    SegmentPage,
    SegmentUpdate,
)

_CONDITION = TypeAdapter(Condition)


def parse_definition(data: Any) -> Any:
    """A stored (or submitted) definition as condition models; checks the
    depth and size limits. ValidationFailed names the bad node's path."""
    try:
        root = data if not isinstance(data, dict) else _CONDITION.validate_python(data)
        return SegmentDefinition(root=root).root
    except ValidationError as exc:
        raise ValidationFailed(
            [
                {
                    "loc": ".".join(str(p) for p in ("body", "definition", *err["loc"]) if p != "root"),
                    "msg": err["msg"],
                }
                for err in exc.errors(include_url=False, include_input=False)
            ]
        ) from None


def _dump(root: Any) -> dict[str, Any]:
    return _CONDITION.dump_python(root, mode="json", by_alias=True, exclude_none=True)


async def _check_references(
    session: AsyncSession, workspace_id: uuid.UUID, segment_id: uuid.UUID, refs: frozenset[uuid.UUID]
) -> None:
    graph = await repo.segment_refs(session, workspace_id)
    missing = [str(r) for r in refs if r not in graph and r != segment_id]
    if missing:
        raise ValidationFailed(
            [{"loc": "body.definition", "msg": f"no segment {ref} in this workspace"} for ref in missing]
        )
    graph[segment_id] = list(refs)
    # A cycle through this segment: can we get back to it from its references?
    stack, seen = list(refs), set()
    while stack:
        current = stack.pop()
        if current == segment_id:
            raise ValidationFailed([{"loc": "body.definition", "msg": "segment references form a cycle"}])
        if current in seen:
            continue
        seen.add(current)
        stack.extend(graph.get(current, []))


def _dependency_columns(root: Any) -> dict[str, Any]:
    deps = dependencies(root)
    return {
        "definition": _dump(root),
        "event_names": sorted(deps.event_names),
        "trait_keys": sorted(deps.trait_keys),
        "segment_refs": sorted(deps.segment_ids),
    }


async def create_segment(session: AsyncSession, workspace_id: uuid.UUID, data: SegmentCreate) -> SegmentOut:
    """Validate and save; 409 on a duplicate name, 422 on a bad definition."""
    root = parse_definition(data.definition)
    segment_id = uuid7()
    await _check_references(session, workspace_id, segment_id, dependencies(root).segment_ids)
    if await queries.name_taken(session, segments, workspace_id, data.name):
        raise Conflict(f"a segment named {data.name!r} exists")
    try:
        row = await queries.insert_row(
            session,
            segments,
            repo.SEGMENT_COLUMNS,
            {
                "id": segment_id,
                "workspace_id": workspace_id,
                "name": data.name,
                "description": data.description,
                **_dependency_columns(root),
            },
        )
    except IntegrityError:
        raise Conflict(f"a segment named {data.name!r} exists") from None
    await repo.sync_listeners(session, workspace_id)
    return SegmentOut.model_validate(dict(row))


async def list_segments(
    session: AsyncSession, workspace_id: uuid.UUID, cursor: str | None, limit: int
) -> SegmentPage:
    """One page of segments, newest first."""
    page, next_cursor = await queries.newest_page(
        session,
        segments,
        repo.SEGMENT_COLUMNS,
        workspace_id,
        cursor,
        limit,
        lambda r: SegmentOut.model_validate(dict(r)),
    )
    return SegmentPage(data=page, next_cursor=next_cursor)


async def get_segment(session: AsyncSession, workspace_id: uuid.UUID, segment_id: uuid.UUID) -> SegmentOut:
    """One segment; 404 outside the workspace."""
    row = await repo.get_segment(session, workspace_id, segment_id)
    if row is None:
        raise NotFound(f"no segment {segment_id} in this workspace")
    return SegmentOut.model_validate(dict(row))


async def update_segment(
    session: AsyncSession, workspace_id: uuid.UUID, segment_id: uuid.UUID, data: SegmentUpdate
) -> SegmentOut:
    """Rename, describe, or redefine (a new definition is refreshed at the next run)."""
    row = await repo.get_segment(session, workspace_id, segment_id, for_update=True)
    if row is None:
        raise NotFound(f"no segment {segment_id} in this workspace")
    values: dict[str, Any] = {}  # updated_at is set by queries.update_row
    if data.name is not None and data.name != row["name"]:
        if await queries.name_taken(session, segments, workspace_id, data.name, segment_id):
            raise Conflict(f"a segment named {data.name!r} exists")
        values["name"] = data.name
    if "description" in data.model_fields_set:
        values["description"] = data.description
    if data.definition is not None:
        root = parse_definition(data.definition)
        await _check_references(session, workspace_id, segment_id, dependencies(root).segment_ids)
        values.update(_dependency_columns(root), version=row["version"] + 1, computed_at=None)
    updated = await queries.update_row(
        session, segments, repo.SEGMENT_COLUMNS, workspace_id, segment_id, values
    )
    if data.definition is not None:
        await repo.sync_listeners(session, workspace_id)
    return SegmentOut.model_validate(dict(updated))


async def delete_segment(session: AsyncSession, workspace_id: uuid.UUID, segment_id: uuid.UUID) -> None:
    """Delete; 409 while another segment refers to it."""
    if await repo.get_segment(session, workspace_id, segment_id) is None:
        raise NotFound(f"no segment {segment_id} in this workspace")
    users = await repo.referencing_segments(session, workspace_id, segment_id)
    if users:
        raise Conflict(f"segments {', '.join(sorted(users))} refer to this one; change them first")
    await queries.delete_row(session, segments, workspace_id, segment_id)
    await repo.sync_listeners(session, workspace_id)


async def members(
    session: AsyncSession, workspace_id: uuid.UUID, segment_id: uuid.UUID, cursor: str | None, limit: int
) -> MemberPage:
    """Members as of the last refresh, by profile id."""
    await get_segment(session, workspace_id, segment_id)
    rows = await repo.members_page(
        session, workspace_id, segment_id, after=decode_cursor(cursor), limit=limit + 1
    )
    page, next_cursor = cut_page(
        rows,
        limit,
        lambda r: MemberOut.model_validate(dict(r)),
        cursor_after=lambda m: encode_cursor(m.profile_id),
    )
    return MemberPage(data=page, next_cursor=next_cursor)


async def estimate(
    session: AsyncSession, workspace_id: uuid.UUID, definition: Any, sample_size: int
) -> SegmentEstimate:
    """Count (and sample) the profiles an unsaved definition matches now."""
    root = parse_definition(definition)
    await _check_references(session, workspace_id, uuid.uuid4(), dependencies(root).segment_ids)
    now = datetime.now(UTC)
    started = time.perf_counter()
    compiled = compile_members(root, workspace_id, now)
    count = await repo.count_matching(session, compiled)
    sample = await repo.sample_matching(session, compiled, sample_size)
    return SegmentEstimate(
        count=count,
        sample=[ProfileSample.model_validate(dict(r)) for r in sample],
        evaluated_at=now,
        duration_ms=round((time.perf_counter() - started) * 1000, 2),
    )


async def check_profile(
    conn: AsyncConnection, workspace_id: uuid.UUID, segment_id: uuid.UUID, profile_id: uuid.UUID
) -> tuple[bool, datetime]:
    """Whether a profile matches a saved segment right now (the in-memory
    evaluator over that profile's facts)."""
    row = await repo.get_segment(conn, workspace_id, segment_id)
    if row is None:
        raise NotFound(f"no segment {segment_id} in this workspace")
    now = datetime.now(UTC)
    result = await profile_matches(conn, workspace_id, profile_id, parse_definition(row["definition"]), now)
    if result is None:
        raise NotFound(f"no profile {profile_id} in this workspace")
    return result, now


async def refresh(
    conn: AsyncConnection, workspace_id: uuid.UUID, segment_id: uuid.UUID
) -> tuple[int, int, int] | None:
    """Recompute a segment's members in the database, store the difference
    and write entered / exited events. None when the segment is gone."""
    await repo.lock_segment(conn, segment_id)
    row = await repo.get_segment(conn, workspace_id, segment_id)
    if row is None:
        return None
    now = datetime.now(UTC)
    compiled = compile_members(parse_definition(row["definition"]), workspace_id, now)
    counts = await repo.apply_refresh(conn, workspace_id, segment_id, row["name"], compiled, now)
    await repo.record_refresh(conn, segment_id, counts[0], now)
    return counts


async def names(
    session: AsyncSession, workspace_id: uuid.UUID, segment_ids: list[uuid.UUID]
) -> dict[uuid.UUID, str]:
    """Segment names by id (the workspace's only), for pages that list audiences."""
    return await repo.names(session, workspace_id, list(dict.fromkeys(segment_ids)))
