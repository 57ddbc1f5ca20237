"""Email API: `/api/v1/templates`, `/api/v1/providers`, `/api/v1/suppressions`,
`/api/v1/messages`."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response
from temporalio.client import WorkflowFailureError
from temporalio.service import RPCError

from api.deps import SessionDep, WorkspaceDep
from api.params import Cursor, Limit
from core.errors import ServiceUnavailable
from core.pagination import DEFAULT_LIMIT
from core.secret_box import SecretBox
from core.temporal import WorkflowStart, start_workflow
from definitions import workflow_ids
from definitions.messages import SendEmailInput
from definitions.search_attributes import PROFILE_ID, WORKSPACE_ID
from delivery import service
from delivery.schemas import (
    MessageCreate,
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
    TestSendRequest,
)
from workflows.messages import SendMessageWorkflow

templates_router = APIRouter(prefix="/api/v1/templates", tags=["templates"])
providers_router = APIRouter(prefix="/api/v1/providers", tags=["providers"])
suppressions_router = APIRouter(prefix="/api/v1/suppressions", tags=["suppressions"])
messages_router = APIRouter(prefix="/api/v1/messages", tags=["messages"])
Wait = Annotated[float, Query(ge=0, le=60, description="Seconds to wait for the send to finish")]


def _tracking_url(request: Request) -> str:
    return request.app.state.services.settings.tracking_url


def _allow_private_hosts(request: Request) -> bool:
    return request.app.state.services.settings.allow_private_provider_hosts


def _secret_box(request: Request) -> SecretBox:
    return SecretBox.from_settings(request.app.state.services.settings)


# -- templates ----------------------------------------------------------------------


@templates_router.get("", response_model=TemplatePage, summary="List templates")
async def list_templates(
    session: SessionDep, workspace_id: WorkspaceDep, cursor: Cursor = None, limit: Limit = DEFAULT_LIMIT
) -> TemplatePage:
    """Newest first."""
    return await service.list_templates(session, workspace_id, cursor, limit)


@templates_router.post("", response_model=TemplateOut, status_code=201, summary="Create a template")
async def create_template(
    body: TemplateCreate, session: SessionDep, workspace_id: WorkspaceDep
) -> TemplateOut:
    """Jinja2 (sandboxed): `profile`, `event`, `data`, `unsubscribe_url`. Syntax errors are a 422."""
    return await service.create_template(session, workspace_id, body)


@templates_router.get("/{template_id}", response_model=TemplateOut, summary="Get a template")
async def get_template(
    template_id: uuid.UUID, session: SessionDep, workspace_id: WorkspaceDep
) -> TemplateOut:
    """One template."""
    return await service.get_template(session, workspace_id, template_id)


@templates_router.patch("/{template_id}", response_model=TemplateOut, summary="Update a template")
async def update_template(
    template_id: uuid.UUID, body: TemplateUpdate, session: SessionDep, workspace_id: WorkspaceDep
) -> TemplateOut:
    """Any subset of fields."""
    return await service.update_template(session, workspace_id, template_id, body)


@templates_router.delete("/{template_id}", status_code=204, summary="Delete a template")
async def delete_template(
    template_id: uuid.UUID, session: SessionDep, workspace_id: WorkspaceDep
) -> Response:
    """Messages already sent keep their record."""
    await service.delete_template(session, workspace_id, template_id)
    return Response(status_code=204)


@templates_router.post("/{template_id}/preview", response_model=PreviewOut, summary="Render a template")
async def preview(
    template_id: uuid.UUID, body: PreviewRequest, session: SessionDep, workspace_id: WorkspaceDep
) -> PreviewOut:
    """Renders for a profile (or address) and lists variables that were missing."""
    return await service.preview(session, workspace_id, template_id, body)


@templates_router.post(
    "/{template_id}/test", response_model=MessageOut, status_code=202, summary="Send a test"
)
async def test_send(
    request: Request,
    template_id: uuid.UUID,
    body: TestSendRequest,
    workspace_id: WorkspaceDep,
    wait: Wait = 0,
) -> MessageOut:
    """Sends the template to one address, the same way as `POST /api/v1/messages`."""
    message = MessageCreate(template_id=template_id, email=body.email, data=body.data)
    return await _send(request, workspace_id, message, wait)


# -- providers ----------------------------------------------------------------------


@providers_router.get("", response_model=ProviderPage, summary="List providers")
async def list_providers(
    request: Request,
    session: SessionDep,
    workspace_id: WorkspaceDep,
    cursor: Cursor = None,
    limit: Limit = DEFAULT_LIMIT,
) -> ProviderPage:
    """Newest first; credentials are never returned."""
    return await service.list_providers(session, workspace_id, cursor, limit, _tracking_url(request))


@providers_router.post("", response_model=ProviderOut, status_code=201, summary="Add a provider")
async def create_provider(
    request: Request, body: ProviderCreate, session: SessionDep, workspace_id: WorkspaceDep
) -> ProviderOut:
    """`kind`: ses, sendgrid, mixmax or smtp. Providers are tried by `priority`
    (lowest first) and fail over on provider errors. Route MixMax last: it
    sends from a user mailbox at low volume. Private, loopback and link-local
    destinations are refused (422) unless ALLOW_PRIVATE_PROVIDER_HOSTS is set."""
    return await service.create_provider(
        session,
        workspace_id,
        body,
        _tracking_url(request),
        box=_secret_box(request),
        allow_private_hosts=_allow_private_hosts(request),
    )


@providers_router.get("/{provider_id}", response_model=ProviderOut, summary="Get a provider")
async def get_provider(
    request: Request, provider_id: uuid.UUID, session: SessionDep, workspace_id: WorkspaceDep
) -> ProviderOut:
    """Settings and the names of stored credentials."""
    return await service.get_provider(session, workspace_id, provider_id, _tracking_url(request))


@providers_router.patch("/{provider_id}", response_model=ProviderOut, summary="Update a provider")
async def update_provider(
    request: Request,
    provider_id: uuid.UUID,
    body: ProviderUpdate,
    session: SessionDep,
    workspace_id: WorkspaceDep,
) -> ProviderOut:
    """Any subset; credentials merge (null removes one)."""
    return await service.update_provider(
        session,
        workspace_id,
        provider_id,
        body,
        _tracking_url(request),
        box=_secret_box(request),
        allow_private_hosts=_allow_private_hosts(request),
    )


@providers_router.delete("/{provider_id}", status_code=204, summary="Delete a provider")
async def delete_provider(
    provider_id: uuid.UUID, session: SessionDep, workspace_id: WorkspaceDep
) -> Response:
    """Removes it from routing."""
    await service.delete_provider(session, workspace_id, provider_id)
    return Response(status_code=204)


# -- suppressions -------------------------------------------------------------------


@suppressions_router.get("", response_model=SuppressionPage, summary="List suppressed addresses")
async def list_suppressions(
    session: SessionDep, workspace_id: WorkspaceDep, cursor: Cursor = None, limit: Limit = DEFAULT_LIMIT
) -> SuppressionPage:
    """By address."""
    return await service.list_suppressions(session, workspace_id, cursor, limit)


@suppressions_router.post("", response_model=SuppressionOut, status_code=201, summary="Suppress an address")
async def add_suppression(
    body: SuppressionCreate, session: SessionDep, workspace_id: WorkspaceDep
) -> SuppressionOut:
    """No provider will send to it."""
    return await service.add_suppression(session, workspace_id, body)


@suppressions_router.delete("/{email}", status_code=204, summary="Remove a suppression")
async def remove_suppression(email: str, session: SessionDep, workspace_id: WorkspaceDep) -> Response:
    """Allow sending to the address again."""
    await service.remove_suppression(session, workspace_id, email)
    return Response(status_code=204)


# -- messages -------------------------------------------------------------------------


async def _send(request: Request, workspace_id: uuid.UUID, body: MessageCreate, wait: float) -> MessageOut:
    services = request.app.state.services
    client = await services.temporal.get()  # before writing anything: no Temporal, no message
    # Committed before the workflow starts, so the activity always finds the row.
    async with services.sessionmaker() as session, session.begin():
        row, _ = await service.create_message(session, workspace_id, body)
    start = WorkflowStart(
        SendMessageWorkflow.run,
        SendEmailInput(workspace_id=workspace_id, message_id=row["id"]),
        id=workflow_ids.message(row["id"]),
        search_attributes={WORKSPACE_ID: workspace_id, PROFILE_ID: row["profile_id"]},
    )
    try:
        handle = await start_workflow(client, start, services.settings.temporal_task_queue)
    except ServiceUnavailable as exc:
        # The message is stored (queued); repeating the request with the same
        # idempotency_key starts its workflow without creating another.
        raise ServiceUnavailable(
            f"could not start the send on Temporal: {exc.detail}; retry with the same idempotency_key"
        ) from None
    if wait:
        # Timed out, failed or Temporal gone: the message's own status says what happened.
        with contextlib.suppress(TimeoutError, WorkflowFailureError, RPCError):
            await asyncio.wait_for(handle.result(), timeout=wait)
    async with services.sessionmaker() as fresh:
        return await service.get_message(fresh, workspace_id, row["id"])


@messages_router.post("", response_model=MessageOut, status_code=202, summary="Send a transactional email")
async def send_message(
    request: Request, body: MessageCreate, workspace_id: WorkspaceDep, wait: Wait = 0
) -> MessageOut:
    """Creates the message and starts `SendMessageWorkflow` (visible in the
    Temporal UI with its retries). With `idempotency_key`, a repeated
    request returns the same message. `?wait=N` waits up to N seconds."""
    return await _send(request, workspace_id, body, wait)


@messages_router.get("/{message_id}", response_model=MessageOut, summary="Get a message")
async def get_message(message_id: uuid.UUID, session: SessionDep, workspace_id: WorkspaceDep) -> MessageOut:
    """Status, provider, attempts and `Email …` events."""
    return await service.get_message(session, workspace_id, message_id)
