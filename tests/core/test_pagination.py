"""`cut_page`, the one paging trailer: rows fetched with `limit + 1` become
a page and the cursor of the next one."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from core.pagination import cut_page, decode_cursor, encode_cursor


@dataclass
class Row:
    id: uuid.UUID
    email: str


ROWS = [Row(uuid.uuid4(), f"p{n}@example.com") for n in range(5)]


def test_a_full_page_with_more_to_come_ends_with_the_cursor_after_its_last_item():
    items, cursor = cut_page(ROWS[:4], 3, lambda r: r)
    assert items == ROWS[:3]
    assert decode_cursor(cursor) == ROWS[2].id


def test_the_last_page_has_no_cursor():
    assert cut_page(ROWS[:3], 3, lambda r: r) == (ROWS[:3], None)
    assert cut_page(ROWS[:2], 3, lambda r: r) == (ROWS[:2], None)
    assert cut_page([], 3, lambda r: r) == ([], None)


def test_a_listing_keyed_otherwise_names_its_cursor():
    items, cursor = cut_page(ROWS, 2, lambda r: r, cursor_after=lambda r: r.email)
    assert items == ROWS[:2] and cursor == "p1@example.com"
    items, cursor = cut_page(ROWS, 2, lambda r: r, cursor_after=lambda r: encode_cursor(r.id))
    assert decode_cursor(cursor) == ROWS[1].id
