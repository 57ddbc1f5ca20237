"""Topic operations behind the management API, and a person's choices.
Services take the session first and never commit."""

from __future__ import annotations

import uuid

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core.errors import Conflict, NotFound
from core.ids import uuid7
from db import queries
from db.tables import topics
from topics import repository as repo
from topics.schemas import ProfileTopicOut, TopicCreate, TopicOut, TopicPage, TopicUpdate


async def list_topics(
    session: AsyncSession, workspace_id: uuid.UUID, cursor: str | None, limit: int
) -> TopicPage:
    """Newest first."""
    data, next_cursor = await queries.newest_page(
        session,
        topics,
        repo.TOPIC_COLUMNS,
        workspace_id,
        cursor,
        limit,
        lambda r: TopicOut.model_validate(dict(r)),
    )
    return TopicPage(data=data, next_cursor=next_cursor)


async def create_topic(session: AsyncSession, workspace_id: uuid.UUID, body: TopicCreate) -> TopicOut:
    """Store a topic; 409 when the key is taken."""
    if await repo.key_taken(session, workspace_id, body.key):
        raise Conflict(f"a topic with key {body.key!r} exists")
    try:
        row = await queries.insert_row(
            session,
            topics,
            repo.TOPIC_COLUMNS,
            {"id": uuid7(), "workspace_id": workspace_id, **body.model_dump()},
        )
    except IntegrityError:
        raise Conflict(f"a topic with key {body.key!r} exists") from None
    return TopicOut.model_validate(dict(row))


async def get_topic(session: AsyncSession, workspace_id: uuid.UUID, key: str) -> TopicOut:
    """One topic."""
    row = await repo.topic_by_key(session, workspace_id, key)
    if row is None:
        raise NotFound(f"no topic {key!r} in this workspace")
    return TopicOut.model_validate(dict(row))


async def update_topic(
    session: AsyncSession, workspace_id: uuid.UUID, key: str, body: TopicUpdate
) -> TopicOut:
    """Change name or description."""
    values = body.model_dump(exclude_unset=True)
    row = (
        await repo.update_topic(session, workspace_id, key, values)
        if values
        else await repo.topic_by_key(session, workspace_id, key)
    )
    if row is None:
        raise NotFound(f"no topic {key!r} in this workspace")
    return TopicOut.model_validate(dict(row))


async def delete_topic(session: AsyncSession, workspace_id: uuid.UUID, key: str) -> None:
    """Delete a topic that nothing sends under any more (409 naming the
    campaigns not yet ended and the flows not archived that use it).
    People's opt-outs of its key are kept, so a send still tagged with it
    (or a topic made again with the key) honours them."""
    if not await repo.key_taken(session, workspace_id, key):
        raise NotFound(f"no topic {key!r} in this workspace")
    users = await repo.topic_users(session, workspace_id, key)
    if users:
        named = ", ".join(f"{kind} {name!r}" for kind, name in users)
        raise Conflict(
            f"topic {key!r} is still used by {named}: move them to another topic "
            "(or end the campaigns, archive the flows) first"
        )
    await repo.delete_topic(session, workspace_id, key)


async def profile_optouts(session: AsyncSession, workspace_id: uuid.UUID, profile_id: uuid.UUID) -> list[str]:
    """The keys of the topics a person left."""
    return await repo.opted_out(session, workspace_id, profile_id)


async def set_profile_topic(
    session: AsyncSession, workspace_id: uuid.UUID, profile_id: uuid.UUID, key: str, subscribed: bool
) -> ProfileTopicOut:
    """Subscribe a person to a topic again or opt them out (404 for an
    unknown profile or topic); a change is written as a `Topic …` event."""
    if not await repo.lock_profile(session, workspace_id, profile_id):
        raise NotFound(f"no profile {profile_id} in this workspace")
    if not await repo.key_taken(session, workspace_id, key):
        raise NotFound(f"no topic {key!r} in this workspace")
    changed = await repo.set_choice(session, workspace_id, profile_id, key, subscribed, {"method": "api"})
    return ProfileTopicOut(profile_id=profile_id, topic=key, subscribed=subscribed, changed=changed)
