"""Temporal helpers for tests."""

from __future__ import annotations

import uuid

from google.protobuf.duration_pb2 import Duration
from temporalio.api.workflowservice.v1 import RegisterNamespaceRequest
from temporalio.client import Client


async def new_namespace(client: Client, prefix: str = "ns") -> str:
    """Register a fresh namespace, so a test's schedules and search
    attributes do not meet another test's."""
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    await client.workflow_service.register_namespace(
        RegisterNamespaceRequest(namespace=name, workflow_execution_retention_period=Duration(seconds=86400))
    )
    return name
