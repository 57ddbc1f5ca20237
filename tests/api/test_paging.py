"""Every paged list speaks the same `cursor` / `limit` / `next_cursor`:
walking pages of two returns each item once, in the list's order, and the
last page says there is no next one."""

from __future__ import annotations

import pytest

PRO = {"type": "trait", "path": "plan", "op": "eq", "value": "pro"}
SENDER = "hello@example.com"

BODIES = {
    "segments": lambda n: {"name": f"S{n}", "definition": PRO},
    "templates": lambda n: {"name": f"T{n}", "subject": "s", "html": "h", "from_email": SENDER},
    "providers": lambda n: {"name": f"P{n}", "kind": "mixmax", "credentials": {"api_token": "t"}},
    "suppressions": lambda n: {"email": f"gone{n}@example.com"},
    "profiles": lambda n: {"email": f"paged{n}@example.com"},
    "topics": lambda n: {"key": f"topic-{n}", "name": f"Topic {n}"},
}
KEY = {"suppressions": "email"}


async def walk(api, path: str, limit: int) -> list[dict]:
    """Every item of a list, page by page."""
    items, cursor, pages = [], None, 0
    while True:
        params = {"limit": limit} | ({"cursor": cursor} if cursor else {})
        r = await api.get(path, params=params)
        assert r.status_code == 200, r.text
        page = r.json()
        assert len(page["data"]) <= limit
        items += page["data"]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            return items
        assert pages < 20, "paging does not end"


@pytest.mark.parametrize("kind", list(BODIES))
async def test_walking_pages_returns_every_item_once(api, kind):
    key = KEY.get(kind, "id")
    made = []
    for n in range(5):
        r = await api.post(f"/api/v1/{kind}", json=BODIES[kind](n))
        assert r.status_code == 201, r.text
        made.append(r.json()[key])
    walked = [item[key] for item in await walk(api, f"/api/v1/{kind}", limit=2)]
    assert sorted(walked) == sorted(made)
    assert len(walked) == len(set(walked)) == 5
    # One page holding everything has no next page either.
    assert (await api.get(f"/api/v1/{kind}", params={"limit": 5})).json()["next_cursor"] is None
    one_more = await api.get(f"/api/v1/{kind}", params={"limit": 4})
    assert one_more.json()["next_cursor"] is not None


@pytest.mark.parametrize("kind", list(BODIES))
async def test_limit_and_cursor_are_checked_alike(api, kind):
    for limit in (0, 501):
        assert (await api.get(f"/api/v1/{kind}", params={"limit": limit})).status_code == 422
    if kind != "suppressions":  # keyed by email: any text is a place to start after
        bad = await api.get(f"/api/v1/{kind}", params={"cursor": "%%%"})
        assert bad.status_code == 400
