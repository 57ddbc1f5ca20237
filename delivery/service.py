"""Email operations behind the management API. Services take the session
first and never commit."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from core.errors import Conflict, NotFound, ValidationFailed
from core.ids import uuid7
from core.pagination import cut_page
from core.secret_box import SecretBox
from db import queries
from db.tables import providers, templates
from definitions import workflow_ids
from delivery import repository as repo
from delivery.destinations import check_provider_destinations
from delivery.render import RenderBudgetExceeded, check_template, profile_context, render_async
from delivery.schemas import (
    PROVIDER_FIELDS,
    MessageCreate,
    MessageEvent,
    MessageOut,
    PreviewOut,
    PreviewRequest,
    ProviderCreate,
    ProviderOut,
    ProviderPage,
    ProviderUpdate,
    SuppressionCreate,
    SuppressionOut,
    SuppressionPage,
    TemplateCreate,
    TemplateOut,
    TemplatePage,
    TemplateUpdate,
)
from topics import repository as topics_repo

# -- templates ------------------------------------------------------------------


async def _template_row(session: AsyncSession, workspace_id: uuid.UUID, template_id: uuid.UUID) -> Any:
    row = await queries.get(session, templates, repo.TEMPLATE_COLUMNS, workspace_id, template_id)
    if row is None:
        raise NotFound(f"no template {template_id} in this workspace")
    return row


async def list_templates(
    session: AsyncSession, workspace_id: uuid.UUID, cursor: str | None, limit: int
) -> TemplatePage:
    """Newest first."""
    data, next_cursor = await queries.newest_page(
        session,
        templates,
        repo.TEMPLATE_COLUMNS,
        workspace_id,
        cursor,
        limit,
        lambda r: TemplateOut.model_validate(dict(r)),
    )
    return TemplatePage(data=data, next_cursor=next_cursor)


async def create_template(
    session: AsyncSession, workspace_id: uuid.UUID, body: TemplateCreate
) -> TemplateOut:
    """Check the template (compiles, no forbidden attributes, within the render budget) and store."""
    await check_template(subject=body.subject, html=body.html, text=body.text)
    if await queries.name_taken(session, templates, workspace_id, body.name):
        raise Conflict(f"a template named {body.name!r} exists")
    try:
        row = await queries.insert_row(
            session,
            templates,
            repo.TEMPLATE_COLUMNS,
            {"id": uuid7(), "workspace_id": workspace_id, **body.model_dump()},
        )
    except IntegrityError:
        raise Conflict(f"a template named {body.name!r} exists") from None
    return TemplateOut.model_validate(dict(row))


async def get_template(session: AsyncSession, workspace_id: uuid.UUID, template_id: uuid.UUID) -> TemplateOut:
    """One template."""
    return TemplateOut.model_validate(dict(await _template_row(session, workspace_id, template_id)))


async def update_template(
    session: AsyncSession, workspace_id: uuid.UUID, template_id: uuid.UUID, body: TemplateUpdate
) -> TemplateOut:
    """Change fields (syntax checked)."""
    await _template_row(session, workspace_id, template_id)
    values = body.model_dump(exclude_unset=True)
    for required in ("subject", "html", "from_email", "name"):
        if required in values and values[required] is None:
            raise ValidationFailed([{"loc": f"body.{required}", "msg": "may not be null"}])
    await check_template(**{k: values.get(k) for k in ("subject", "html", "text")})
    if "name" in values and await queries.name_taken(
        session, templates, workspace_id, values["name"], template_id
    ):
        raise Conflict(f"a template named {values['name']!r} exists")
    row = await queries.update_row(
        session, templates, repo.TEMPLATE_COLUMNS, workspace_id, template_id, values
    )
    return TemplateOut.model_validate(dict(row))


async def delete_template(session: AsyncSession, workspace_id: uuid.UUID, template_id: uuid.UUID) -> None:
    """Delete (messages already sent keep their record)."""
    if not await queries.delete_row(session, templates, workspace_id, template_id):
        raise NotFound(f"no template {template_id} in this workspace")


async def preview(
    session: AsyncSession, workspace_id: uuid.UUID, template_id: uuid.UUID, body: PreviewRequest
) -> PreviewOut:
    """Render for a profile (or an address), reporting missing variables."""
    template = await _template_row(session, workspace_id, template_id)
    profile = None
    if body.profile_id is not None:
        profile = await repo.profile_for_send(session, workspace_id, body.profile_id)
        if profile is None:
            raise NotFound(f"no profile {body.profile_id} in this workspace")
    email = (profile["email"] if profile else None) or body.email or ""
    context = {
        "profile": profile_context(dict(profile) if profile else None, email),
        "event": body.event,
        "data": body.data,
        "unsubscribe_url": "https://example.invalid/unsubscribe",
    }
    try:
        rendered = await render_async(template["subject"], template["html"], template["text"], context)
    except RenderBudgetExceeded as exc:
        raise ValidationFailed([{"loc": "template", "msg": str(exc)}]) from None
    return PreviewOut(
        subject=rendered.subject, html=rendered.html, text=rendered.text, missing_variables=rendered.missing
    )


# -- providers ------------------------------------------------------------------


def _check_provider_fields(
    kind: str, settings: dict[str, Any], credentials: dict[str, Any], creating: bool
) -> None:
    allowed_settings, allowed_credentials, required = PROVIDER_FIELDS[kind]
    errors = [
        {"loc": f"body.settings.{k}", "msg": f"unknown setting for {kind}; use {sorted(allowed_settings)}"}
        for k in settings
        if k not in allowed_settings
    ]
    errors += [
        {
            "loc": f"body.credentials.{k}",
            "msg": f"unknown credential for {kind}; use {sorted(allowed_credentials)}",
        }
        for k in credentials
        if k not in allowed_credentials
    ]
    if creating:
        errors += [
            {"loc": f"body.credentials.{k}", "msg": f"{kind} needs {k}"}
            for k in required
            if not credentials.get(k)
        ]
    if kind == "smtp" and creating and not settings.get("host"):
        errors.append({"loc": "body.settings.host", "msg": "smtp needs host"})
    if errors:
        raise ValidationFailed(errors)


def provider_out(row: Any, tracking_url: str) -> ProviderOut:
    """A provider row without its secrets."""
    webhook = (
        f"{tracking_url.rstrip('/')}/webhooks/{row['kind']}/{row['id']}"
        if row["kind"] in ("ses", "sendgrid")
        else None
    )
    return ProviderOut(
        id=row["id"],
        name=row["name"],
        kind=row["kind"],
        priority=row["priority"],
        rate_limit=row["rate_limit"],
        enabled=row["enabled"],
        settings=row["settings"],
        credentials_set=sorted(row["secrets"]),
        webhook_url=webhook,
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


async def list_providers(
    session: AsyncSession, workspace_id: uuid.UUID, cursor: str | None, limit: int, tracking_url: str
) -> ProviderPage:
    """Newest first."""
    data, next_cursor = await queries.newest_page(
        session,
        providers,
        repo.PROVIDER_COLUMNS,
        workspace_id,
        cursor,
        limit,
        lambda r: provider_out(r, tracking_url),
    )
    return ProviderPage(data=data, next_cursor=next_cursor)


async def create_provider(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    body: ProviderCreate,
    tracking_url: str,
    *,
    box: SecretBox,
    allow_private_hosts: bool = False,
) -> ProviderOut:
    """Store a provider; credentials are encrypted with `box` into a column
    the API never reads back. Its destination must be public unless
    `allow_private_hosts`."""
    _check_provider_fields(body.kind, body.settings, body.credentials, creating=True)
    await check_provider_destinations(body.kind, body.settings, allow_private_hosts)
    if await queries.name_taken(session, providers, workspace_id, body.name):
        raise Conflict(f"a provider named {body.name!r} exists")
    values = body.model_dump(exclude={"credentials"}) | {
        "id": uuid7(),
        "workspace_id": workspace_id,
        "secrets": box.encrypt_values(body.credentials),
    }
    return provider_out(
        await queries.insert_row(session, providers, repo.PROVIDER_COLUMNS, values), tracking_url
    )


async def _provider_row(session: AsyncSession, workspace_id: uuid.UUID, provider_id: uuid.UUID) -> Any:
    row = await queries.get(session, providers, repo.PROVIDER_COLUMNS, workspace_id, provider_id)
    if row is None:
        raise NotFound(f"no provider {provider_id} in this workspace")
    return row


async def get_provider(
    session: AsyncSession, workspace_id: uuid.UUID, provider_id: uuid.UUID, tracking_url: str
) -> ProviderOut:
    """One provider, without secrets."""
    return provider_out(await _provider_row(session, workspace_id, provider_id), tracking_url)


async def update_provider(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    provider_id: uuid.UUID,
    body: ProviderUpdate,
    tracking_url: str,
    *,
    box: SecretBox,
    allow_private_hosts: bool = False,
) -> ProviderOut:
    """Change fields; credentials merge (null removes). A new destination
    must be public unless `allow_private_hosts`."""
    row = await _provider_row(session, workspace_id, provider_id)
    values = body.model_dump(exclude_unset=True, exclude={"credentials"})
    settings = values.get("settings") if values.get("settings") is not None else {}
    credentials = body.credentials or {}
    _check_provider_fields(row["kind"], settings, credentials, creating=False)
    await check_provider_destinations(row["kind"], settings, allow_private_hosts)
    if body.credentials is not None:
        secrets = dict(row["secrets"])
        for key, value in body.credentials.items():
            if value is None:
                secrets.pop(key, None)
            else:
                secrets[key] = box.encrypt(value)
        values["secrets"] = secrets
    if values.get("name") and await queries.name_taken(
        session, providers, workspace_id, values["name"], provider_id
    ):
        raise Conflict(f"a provider named {values['name']!r} exists")
    updated = await queries.update_row(
        session, providers, repo.PROVIDER_COLUMNS, workspace_id, provider_id, values
    )
    return provider_out(updated, tracking_url)


async def delete_provider(session: AsyncSession, workspace_id: uuid.UUID, provider_id: uuid.UUID) -> None:
    """Delete a provider."""
    if not await queries.delete_row(session, providers, workspace_id, provider_id):
        raise NotFound(f"no provider {provider_id} in this workspace")


async def rotate_provider_secrets(session: AsyncSession, box: SecretBox) -> int:
    """Re-encrypt every provider credential (every workspace) with the box's
    first key, encrypting any plaintext left; returns providers rewritten."""
    rows = await repo.all_provider_secrets(session)
    for row in rows:
        rotated = {name: box.rotate(value) for name, value in row["secrets"].items()}
        await repo.set_provider_secrets(session, row["id"], rotated)
    return len(rows)


# -- suppressions ---------------------------------------------------------------


async def list_suppressions(
    session: AsyncSession, workspace_id: uuid.UUID, cursor: str | None, limit: int
) -> SuppressionPage:
    """By email; the cursor is the last email of the previous page."""
    rows = await repo.suppression_page(session, workspace_id, cursor, limit + 1)
    data, next_cursor = cut_page(
        rows, limit, lambda r: SuppressionOut.model_validate(dict(r)), cursor_after=lambda s: s.email
    )
    return SuppressionPage(data=data, next_cursor=next_cursor)


async def add_suppression(
    session: AsyncSession, workspace_id: uuid.UUID, body: SuppressionCreate
) -> SuppressionOut:
    """Suppress (idempotent: an existing suppression keeps its reason)."""
    await repo.suppress(session, workspace_id, body.email, body.reason, body.detail)
    return SuppressionOut.model_validate(dict(await repo.get_suppression(session, workspace_id, body.email)))


async def remove_suppression(session: AsyncSession, workspace_id: uuid.UUID, email: str) -> None:
    """Allow sending to an address again."""
    if not await repo.unsuppress(session, workspace_id, email):
        raise NotFound(f"{email} is not suppressed")


# -- messages -------------------------------------------------------------------


async def create_message(
    session: AsyncSession, workspace_id: uuid.UUID, body: MessageCreate, *, topic_must_exist: bool = True
) -> tuple[Any, bool]:
    """Create the message row (or find it by idempotency key). Returns the
    row and whether it is new; the caller starts its workflow. A `topic`
    must be one of the workspace's unless `topic_must_exist` is off (a flow
    version keeps sending under the key of a topic deleted since, and
    people's opt-outs of that key still hold)."""
    await _template_row(session, workspace_id, body.template_id)
    if (
        body.topic is not None
        and topic_must_exist
        and not await topics_repo.key_taken(session, workspace_id, body.topic)
    ):
        raise ValidationFailed([{"loc": "body.topic", "msg": f"no topic {body.topic!r} in this workspace"}])
    if (body.profile_id is None) == (body.email is None):
        raise ValidationFailed([{"loc": "body", "msg": "give exactly one of profile_id or email"}])
    if body.profile_id is not None:
        profile = await repo.profile_for_send(session, workspace_id, body.profile_id)
        if profile is None:
            raise NotFound(f"no profile {body.profile_id} in this workspace")
        if not profile["email"]:
            raise ValidationFailed([{"loc": "body.profile_id", "msg": "this profile has no email address"}])
    else:
        profile = await repo.profile_by_email(session, workspace_id, body.email, uuid7())
    message_id = uuid7()
    return await repo.create_message(
        session,
        {
            "id": message_id,
            "workspace_id": workspace_id,
            "idempotency_key": body.idempotency_key or f"api:{message_id}",
            "profile_id": profile["id"],
            "email": profile["email"],
            "template_id": body.template_id,
            "campaign_id": body.campaign_id,
            "topic": body.topic,
            "data": body.data,
        },
    )


async def link_message_to_flow(
    session: AsyncSession,
    workspace_id: uuid.UUID,
    message_id: uuid.UUID,
    flow_id: uuid.UUID,
    version: int,
    node_id: str,
    enrollment_id: uuid.UUID,
    *,
    marketing: bool,
) -> None:
    """Tie a flow's message to its flow, version, node and enrollment (stats,
    audits); `marketing` messages count toward frequency caps."""
    await repo.link_to_flow(
        session,
        workspace_id,
        message_id,
        {
            "flow_id": flow_id,
            "flow_version": version,
            "flow_node": node_id,
            "enrollment_id": enrollment_id,
            "marketing": marketing,
        },
    )


async def get_message(session: AsyncSession, workspace_id: uuid.UUID, message_id: uuid.UUID) -> MessageOut:
    """A message with its events."""
    row = await repo.message(session, workspace_id, message_id)
    if row is None:
        raise NotFound(f"no message {message_id} in this workspace")
    found = await repo.message_events(session, workspace_id, message_id, row["profile_id"])
    return message_out(row, [MessageEvent.model_validate(dict(e)) for e in found])


def message_out(row: Any, found: list[MessageEvent] | None = None) -> MessageOut:
    """A message row as the API shows it."""
    return MessageOut(
        id=row["id"],
        status=row["status"],
        email=row["email"],
        profile_id=row["profile_id"],
        template_id=row["template_id"],
        campaign_id=row["campaign_id"],
        topic=row["topic"],
        subject=row["subject"],
        provider=row["provider_kind"],
        provider_message_id=row["provider_message_id"],
        error=row["error"],
        attempts=row["attempts"],
        created_at=row["created_at"],
        sent_at=row["sent_at"],
        delivered_at=row["delivered_at"],
        opened_at=row["opened_at"],
        clicked_at=row["clicked_at"],
        workflow_id=workflow_ids.message(row["id"]),
        events=found or [],
    )
