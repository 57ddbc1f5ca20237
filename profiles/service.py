"""Profile operations behind the management API. Services take the session
first and never commit; the request owns the transaction."""

from __future__ import annotations

import re
import uuid
from typing import Any

from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core.errors import BadRequest, Conflict, NotFound, ValidationFailed
from core.ids import uuid7
from core.pagination import cut_page, decode_cursor
from profiles import repository as repo
from profiles.schemas import EventOut, ProfileCreate, ProfileDetail, ProfileOut, ProfilePage, ProfileUpdate
from topics import repository as topics_repo

_TRAIT_PATH = re.compile(r"^[A-Za-z0-9_\-$]+(\.[A-Za-z0-9_\-$]+)*$")
TIMELINE_LENGTH = 20


def parse_trait_filters(params: dict[str, str]) -> dict[tuple[str, ...], str]:
    """`trait.plan=pro&trait.address.city=Paris` → {('plan',): 'pro', ('address', 'city'): 'Paris'}."""
    out: dict[tuple[str, ...], str] = {}
    for name, value in params.items():
        if not name.startswith("trait."):
            continue
        path = name[len("trait.") :]
        if not _TRAIT_PATH.match(path):
            raise BadRequest(f"invalid trait filter {name!r}: use trait.<key>[.<key>...]=<value>")
        out[tuple(path.split("."))] = value
    return out


async def list_profiles(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    *,
    cursor: str | None,
    limit: int,
    email: str | None,
    external_id: str | None,
    trait_filters: dict[tuple[str, ...], str],
) -> ProfilePage:
    """One page of the workspace's profiles, newest first."""
    rows = await repo.list_profiles(
        session,
        workspace_id,
        after=decode_cursor(cursor),
        limit=limit + 1,
        email=email,
        external_id=external_id,
        traits=trait_filters,
    )
    page, next_cursor = cut_page(rows, limit, lambda r: ProfileOut.model_validate(dict(r)))
    return ProfilePage(data=page, next_cursor=next_cursor)


async def get_profile(session: AsyncSession, workspace_id: uuid.UUID, profile_id: uuid.UUID) -> ProfileDetail:
    """A profile with its anonymous ids and latest events."""
    row = await repo.get_profile(session, workspace_id, profile_id)
    if row is None:
        raise NotFound(f"no profile {profile_id} in this workspace")
    anon = await repo.anonymous_ids(session, workspace_id, profile_id)
    events = await repo.latest_events(session, workspace_id, profile_id, TIMELINE_LENGTH)
    optouts = await topics_repo.opted_out(session, workspace_id, profile_id)
    return ProfileDetail(
        **dict(row),
        anonymous_ids=anon,
        topic_optouts=optouts,
        events=[EventOut.model_validate(dict(e)) for e in events],
    )


async def _ensure_identity_free(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    email: str | None,
    external_id: str | None,
    exclude: uuid.UUID | None = None,
) -> None:
    other = await repo.find_by_identity(
        session, workspace_id, email=email, external_id=external_id, exclude=exclude
    )
    if other is not None:
        field = (
            "email"
            if email is not None and (other["email"] or "").lower() == email.lower()
            else "external_id"
        )
        raise Conflict(f"profile {other['id']} already has this {field}")


async def create_profile(session: AsyncSession, workspace_id: uuid.UUID, data: ProfileCreate) -> ProfileOut:
    """Create a profile; 409 when its email or external id is taken."""
    if data.email is None and data.external_id is None:
        raise ValidationFailed([{"loc": "body", "msg": "give email or external_id"}])
    await _ensure_identity_free(session, workspace_id, data.email, data.external_id)
    try:
        row = await repo.insert_profile(
            session,
            {
                "id": uuid7(),
                "workspace_id": workspace_id,
                "email": data.email,
                "external_id": data.external_id,
                "traits": data.traits,
            },
        )
    except IntegrityError:
        raise Conflict("a profile with this email or external_id was just created") from None
    if data.traits:
        await repo.announce_traits(session, workspace_id, row["id"], sorted(data.traits))
    return ProfileOut.model_validate(dict(row))


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396 JSON merge patch."""
    if not isinstance(patch, dict):
        return patch
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


async def update_profile(
    session: AsyncSession, workspace_id: uuid.UUID, profile_id: uuid.UUID, data: ProfileUpdate
) -> ProfileOut:
    """Merge traits (and change email / external id); 409 on a taken identity."""
    row = await repo.get_profile(session, workspace_id, profile_id, for_update=True)
    if row is None:
        raise NotFound(f"no profile {profile_id} in this workspace")
    values: dict[str, Any] = {"updated_at": func.now()}
    fields = data.model_fields_set
    if "email" in fields or "external_id" in fields:
        await _ensure_identity_free(
            session,
            workspace_id,
            data.email if "email" in fields else None,
            data.external_id if "external_id" in fields else None,
            exclude=profile_id,
        )
        if "email" in fields:
            values["email"] = data.email
        if "external_id" in fields:
            values["external_id"] = data.external_id
    if data.traits is not None:
        values["traits"] = merge_patch(row["traits"], data.traits)
    try:
        updated = await repo.update_profile(session, workspace_id, profile_id, values)
    except IntegrityError:
        raise Conflict("another profile just took this email or external_id") from None
    trait_keys = sorted(data.traits or ())
    identity = sorted(fields & {"email", "external_id"})
    if trait_keys or identity:
        await repo.write_profile_updated(session, workspace_id, profile_id, trait_keys, identity)
    return ProfileOut.model_validate(dict(updated))


async def delete_profile(session: AsyncSession, workspace_id: uuid.UUID, profile_id: uuid.UUID) -> int:
    """Erase a profile and everything recorded about it."""
    row = await repo.get_profile(session, workspace_id, profile_id, for_update=True)
    if row is None:
        raise NotFound(f"no profile {profile_id} in this workspace")
    return await repo.delete_profile(session, workspace_id, profile_id)
