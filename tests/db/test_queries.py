"""`db.queries.name_taken`, the one name check the CRUD domains share, on
each table that uses it, and what the API makes of it."""

from __future__ import annotations

import uuid

from core.errors import Conflict
from db.queries import name_taken
from db.tables import providers, segments, templates
from tests.conftest import new_workspace

PRO = {"type": "trait", "path": "plan", "op": "eq", "value": "pro"}
SENDER = "hello@example.com"


async def _create(api) -> dict[str, dict]:
    made = {
        "segments": await api.post("/api/v1/segments", json={"name": "Taken", "definition": PRO}),
        "templates": await api.post(
            "/api/v1/templates", json={"name": "Taken", "subject": "s", "html": "h", "from_email": SENDER}
        ),
        "providers": await api.post(
            "/api/v1/providers", json={"name": "Taken", "kind": "mixmax", "credentials": {"api_token": "t"}}
        ),
    }
    for kind, response in made.items():
        assert response.status_code == 201, (kind, response.text)
    return {kind: response.json() for kind, response in made.items()}


async def test_name_taken_on_every_table(api, sessionmaker, workspace):
    made = await _create(api)
    other_workspace = await new_workspace(sessionmaker)
    async with sessionmaker() as session:
        for table in (segments, templates, providers):
            row_id = uuid.UUID(made[table.name]["id"])
            ws = workspace.workspace_id
            assert await name_taken(session, table, ws, "Taken")
            assert not await name_taken(session, table, ws, "Free")
            # The row itself does not block keeping its own name.
            assert not await name_taken(session, table, ws, "Taken", exclude=row_id)
            # Names are per workspace.
            assert not await name_taken(session, table, other_workspace.workspace_id, "Taken")


async def test_api_answers_409_for_a_taken_name_on_create_and_rename(api):
    made = await _create(api)
    second = {
        "segments": {"name": "Second", "definition": PRO},
        "templates": {"name": "Second", "subject": "s", "html": "h", "from_email": SENDER},
        "providers": {"name": "Second", "kind": "mixmax", "credentials": {"api_token": "t"}},
    }
    for kind, body in second.items():
        assert (await api.post(f"/api/v1/{kind}", json=body | {"name": "Taken"})).status_code == 409
        other = (await api.post(f"/api/v1/{kind}", json=body)).json()
        renamed = await api.patch(f"/api/v1/{kind}/{other['id']}", json={"name": "Taken"})
        assert renamed.status_code == 409, (kind, renamed.text)
        assert renamed.json()["error"] == Conflict.code
        # Renaming a row to its own name is no conflict.
        same = await api.patch(f"/api/v1/{kind}/{made[kind]['id']}", json={"name": "Taken"})
        assert same.status_code == 200, (kind, same.text)
