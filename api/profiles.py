"""`/api/v1/profiles`: list, create, read, merge traits, erase."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response

from api.deps import SessionDep, WorkspaceDep
from api.params import Cursor, Limit
from core.pagination import DEFAULT_LIMIT
from definitions.topics import TOPIC_KEY_PATTERN
from profiles import service
from profiles.schemas import ProfileCreate, ProfileDetail, ProfileOut, ProfilePage, ProfileUpdate
from topics import service as topics_service
from topics.schemas import ProfileTopicOut, TopicChoice

router = APIRouter(prefix="/api/v1/profiles", tags=["profiles"])


@router.get("", response_model=ProfilePage, summary="List profiles")
async def list_profiles(
    request: Request,
    session: SessionDep,
    workspace_id: WorkspaceDep,
    cursor: Cursor = None,
    limit: Limit = DEFAULT_LIMIT,
    email: Annotated[str | None, Query(description="Exact email (case-insensitive)")] = None,
    external_id: Annotated[str | None, Query(description="Exact external id (userId)")] = None,
) -> ProfilePage:
    """Newest first. Filter by traits with `trait.<key>=<value>` (dot paths
    reach nested traits; values compare as text), e.g. `?trait.plan=pro`."""
    filters = service.parse_trait_filters(dict(request.query_params))
    return await service.list_profiles(
        session,
        workspace_id,
        cursor=cursor,
        limit=limit,
        email=email,
        external_id=external_id,
        trait_filters=filters,
    )


@router.post("", response_model=ProfileOut, status_code=201, summary="Create a profile")
async def create_profile(body: ProfileCreate, session: SessionDep, workspace_id: WorkspaceDep) -> ProfileOut:
    """Needs `email` or `external_id`; 409 when another profile holds either."""
    return await service.create_profile(session, workspace_id, body)


@router.get("/{profile_id}", response_model=ProfileDetail, summary="Get a profile")
async def get_profile(
    profile_id: uuid.UUID, session: SessionDep, workspace_id: WorkspaceDep
) -> ProfileDetail:
    """Traits, identities (email, external id, anonymous ids), the topics
    the person left (`topic_optouts`) and the latest events."""
    return await service.get_profile(session, workspace_id, profile_id)


@router.patch("/{profile_id}", response_model=ProfileOut, summary="Update a profile")
async def update_profile(
    profile_id: uuid.UUID, body: ProfileUpdate, session: SessionDep, workspace_id: WorkspaceDep
) -> ProfileOut:
    """`traits` is merged (JSON merge patch: `null` removes a key)."""
    return await service.update_profile(session, workspace_id, profile_id, body)


@router.delete("/{profile_id}", status_code=204, summary="Erase a profile")
async def delete_profile(profile_id: uuid.UUID, session: SessionDep, workspace_id: WorkspaceDep) -> Response:
    """Deletes the profile, its events and its aliases."""
    await service.delete_profile(session, workspace_id, profile_id)
    return Response(status_code=204)


@router.put("/{profile_id}/topics/{key}", response_model=ProfileTopicOut, summary="Set a topic choice")
async def set_topic(
    profile_id: uuid.UUID,
    key: Annotated[str, Path(pattern=TOPIC_KEY_PATTERN, max_length=64)],
    body: TopicChoice,
    session: SessionDep,
    workspace_id: WorkspaceDep,
) -> ProfileTopicOut:
    """`{"subscribed": false}` opts the person out of the topic, `true`
    subscribes them again; a change is recorded as a `Topic Unsubscribed` /
    `Topic Resubscribed` event (segments re-check, flows can trigger on it)."""
    return await topics_service.set_profile_topic(session, workspace_id, profile_id, key, body.subscribed)
