"""`/api/v1/topics`: the workspace's subscription topics, addressed by key."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Response

from api.deps import SessionDep, WorkspaceDep
from api.params import Cursor, Limit
from core.pagination import DEFAULT_LIMIT
from definitions.topics import TOPIC_KEY_PATTERN
from topics import service
from topics.schemas import TopicCreate, TopicOut, TopicPage, TopicUpdate

router = APIRouter(prefix="/api/v1/topics", tags=["topics"])

KeyPath = Annotated[
    str, Path(pattern=TOPIC_KEY_PATTERN, max_length=64, description="The topic's key, e.g. `newsletter`")
]


@router.get("", response_model=TopicPage, summary="List topics")
async def list_topics(
    session: SessionDep, workspace_id: WorkspaceDep, cursor: Cursor = None, limit: Limit = DEFAULT_LIMIT
) -> TopicPage:
    """Newest first."""
    return await service.list_topics(session, workspace_id, cursor, limit)


@router.post("", response_model=TopicOut, status_code=201, summary="Create a topic")
async def create_topic(body: TopicCreate, session: SessionDep, workspace_id: WorkspaceDep) -> TopicOut:
    """`key` is a slug (`newsletter`, `product-updates`) that never changes; 409 when taken."""
    return await service.create_topic(session, workspace_id, body)


@router.get("/{key}", response_model=TopicOut, summary="Get a topic")
async def get_topic(key: KeyPath, session: SessionDep, workspace_id: WorkspaceDep) -> TopicOut:
    """One topic."""
    return await service.get_topic(session, workspace_id, key)


@router.patch("/{key}", response_model=TopicOut, summary="Update a topic")
async def update_topic(
    key: KeyPath, body: TopicUpdate, session: SessionDep, workspace_id: WorkspaceDep
) -> TopicOut:
    """Change the name or description (the key stays)."""
    return await service.update_topic(session, workspace_id, key, body)


@router.delete("/{key}", status_code=204, summary="Delete a topic")
async def delete_topic(key: KeyPath, session: SessionDep, workspace_id: WorkspaceDep) -> Response:
    """Leaves the preference page; people's opt-outs of the key are kept, so
    a send still tagged with it keeps honouring them. 409 (naming them)
    while a campaign not yet ended or a flow not archived sends under it."""
    await service.delete_topic(session, workspace_id, key)
    return Response(status_code=204)
