"""Query parameters shared by the list endpoints: every paged list takes
the same `cursor` and `limit`."""

from __future__ import annotations

from typing import Annotated

from fastapi import Query

from core.pagination import MAX_LIMIT

Cursor = Annotated[str | None, Query(description="`next_cursor` of the previous page")]
Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Most items on the page")]
