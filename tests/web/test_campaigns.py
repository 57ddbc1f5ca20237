"""Campaign pages over HTTP: the create form puts each problem next to its
field and leaves nothing behind when it refuses; the campaign page's
actions (test send, schedule, send, pause, resume, cancel) go through the
API's services; refusals are notices, not error pages; another workspace
sees and changes nothing; bad parameters are 4xx pages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import text

from tests.campaigns.support import add_people, group_segment, inline_campaign
from tests.conftest import new_workspace
from tests.delivery.conftest import SENDER, add_sendgrid, make_template
from tests.flows.support import wait_for
from tests.web.conftest import csrf_of, sign_in

HTML = "<p>Hi {{ profile.first_name }}</p><a href='https://shop.example.com'>Shop</a>"


def inline_form(csrf: str, segment_id: str, **extra: str) -> dict:
    return {
        "csrf": csrf,
        "name": "Spring sale",
        "source": "inline",
        "subject": "Sale for {{ profile.first_name }}",
        "html": HTML,
        "from_email": SENDER,
        "segment_ids": segment_id,
        "when": "draft",
    } | extra


async def campaign_names(api) -> list[str]:
    return [c["name"] for c in (await api.get("/api/v1/campaigns")).json()["data"]]


async def test_create_form_puts_messages_next_to_fields(web, api):
    segment = await group_segment(api, "fans")
    csrf = csrf_of((await web.get("/campaigns/new")).text)

    r = await web.post("/campaigns/new", data={**inline_form(csrf, segment), "name": "", "segment_ids": ""})
    assert r.status_code == 422
    assert 'data-field="name"' in r.text and 'data-field="segment_ids"' in r.text

    r = await web.post("/campaigns/new", data=inline_form(csrf, segment, from_email="not-an-address"))
    assert r.status_code == 422 and 'data-field="from_email"' in r.text

    r = await web.post("/campaigns/new", data=inline_form(csrf, segment, source="template"))
    assert r.status_code == 422 and 'data-field="template_id"' in r.text

    r = await web.post("/campaigns/new", data=inline_form(csrf, segment, html="{% if %}"))
    assert r.status_code == 422 and 'data-field="html"' in r.text

    r = await web.post("/campaigns/new", data=inline_form(csrf, segment, data="[1, 2"))
    assert r.status_code == 422 and 'data-field="data"' in r.text and "not valid JSON" in r.text

    r = await web.post("/campaigns/new", data=inline_form(csrf, segment, throttle_per_hour="-3"))
    assert r.status_code == 422 and 'data-field="throttle_per_hour"' in r.text

    r = await web.post("/campaigns/new", data=inline_form(csrf, segment, topic="no-such-topic"))
    assert r.status_code == 422 and 'data-field="topic"' in r.text

    r = await web.post(
        "/campaigns/new",
        data={**inline_form(csrf, segment), "exclude_segment_ids": segment},
    )
    assert r.status_code == 422 and "both included and excluded" in r.text

    r = await web.post("/campaigns/new", data=inline_form(csrf, segment, when="at", scheduled_at=""))
    assert r.status_code == 422 and 'data-field="scheduled_at"' in r.text
    # Values typed are kept, the chosen segment still ticked.
    assert 'value="Spring sale"' in r.text and f'value="{segment}" checked' in r.text
    assert await campaign_names(api) == []


async def test_a_refused_schedule_leaves_no_draft(web, api, worker):
    segment = await group_segment(api, "fans")
    csrf = csrf_of((await web.get("/campaigns/new")).text)
    past = (datetime.now(UTC) - timedelta(days=2)).strftime("%Y-%m-%dT%H:%M")
    r = await web.post("/campaigns/new", data=inline_form(csrf, segment, when="at", scheduled_at=past))
    assert r.status_code == 422 and 'data-field="scheduled_at"' in r.text and "in the past" in r.text
    assert await campaign_names(api) == []

    r = await web.post("/campaigns/new", data=inline_form(csrf, segment))
    assert r.status_code == 303
    again = await web.post("/campaigns/new", data=inline_form(csrf, segment))
    assert again.status_code == 409 and 'data-field="name"' in again.text
    assert await campaign_names(api) == ["Spring sale"]


async def test_create_with_a_template_and_schedule(web, api, worker):
    segment = await group_segment(api, "fans")
    other = await group_segment(api, "staff")
    template = await make_template(api, name="Newsletter")
    await api.post("/api/v1/topics", json={"key": "news", "name": "News"})
    form = await web.get("/campaigns/new")
    assert "Newsletter" in form.text and "group fans" in form.text
    later = (datetime.now(UTC) + timedelta(days=3)).replace(second=0, microsecond=0)
    r = await web.post(
        "/campaigns/new",
        data={
            "csrf": csrf_of(form.text),
            "name": "Weekly",
            "source": "template",
            "template_id": template["id"],
            "subject": "",
            "segment_ids": segment,
            "exclude_segment_ids": other,
            "topic": "news",
            "throttle_per_hour": "500",
            "data": '{"code": "SPRING"}',
            "when": "at",
            "scheduled_at": later.strftime("%Y-%m-%dT%H:%M"),
        },
    )
    assert r.status_code == 303, r.text
    campaign_id = r.headers["location"].split("/")[2].split("?")[0]
    stored = (await api.get(f"/api/v1/campaigns/{campaign_id}")).json()
    assert stored["status"] == "scheduled" and stored["topic"] == "news"
    assert stored["content"] == {"template_id": template["id"]}
    assert stored["audience"] == {"segment_ids": [segment], "exclude_segment_ids": [other]}
    assert stored["throttle_per_hour"] == 500 and stored["data"] == {"code": "SPRING"}
    assert datetime.fromisoformat(stored["scheduled_at"]) == later

    page = await web.get(r.headers["location"])
    assert "Campaign scheduled." in page.text and "Newsletter" in page.text
    assert "group staff" in page.text and "No A/B test" in page.text
    listed = await web.get("/campaigns")
    assert "Weekly" in listed.text and "scheduled" in listed.text
    overview = await web.get("/")
    assert "Weekly" in overview.text  # a running (scheduled) campaign
    csrf = csrf_of(page.text)
    assert (await web.post(f"/campaigns/{campaign_id}/cancel", data={"csrf": csrf})).status_code == 303
    assert (await api.get(f"/api/v1/campaigns/{campaign_id}")).json()["status"] == "cancelled"


async def test_actions_on_a_throttled_send(web, api, worker, sendgrid, engine, workspace):
    await add_sendgrid(api, sendgrid)
    await add_people(engine, workspace.workspace_id, 3, "fans")
    segment = await group_segment(api, "fans")
    # One email an hour: the send stays in progress while the test acts on it.
    campaign = await inline_campaign(api, [segment], throttle_per_hour=1)
    page = await web.get(f"/campaigns/{campaign['id']}")
    assert (
        page.status_code == 200
        and "Before you send" in page.text
        and "Stats start with the send" in page.text
    )
    # The email as a sample reader gets it (the segment is not refreshed yet: nobody to pick).
    assert "data-preview-subject><b>Sale for</b>" in page.text and "Hi , 20% off" in page.text
    csrf = csrf_of(page.text)
    url = f"/campaigns/{campaign['id']}"

    r = await web.post(f"{url}/test", data={"csrf": csrf, "test_emails": "me@example.com, nope"})
    assert r.status_code == 422 and 'data-field="test_emails"' in r.text
    r = await web.post(f"{url}/test", data={"csrf": csrf, "test_emails": "me@example.com"})
    assert r.status_code == 303 and r.headers["location"].endswith("done=test")
    await wait_for(lambda: _received(sendgrid, "me@example.com"), timeout=60, interval=0.25)

    r = await web.post(f"{url}/pause", data={"csrf": csrf})
    assert r.status_code == 409 and "data-notice" in r.text  # a draft cannot be paused
    r = await web.post(f"{url}/send", data={"csrf": csrf})
    assert r.status_code == 303

    async def sending():
        row = (await api.get(f"/api/v1/campaigns/{campaign['id']}")).json()
        return row if row["status"] == "sending" and row["sent"] == 1 else None

    await wait_for(sending, timeout=60, interval=0.25)
    shown = await web.get(url)
    assert 'data-kpi="sent">1<' in shown.text and "of 3 recipients handled" in shown.text
    assert "every 5s" in shown.text  # the stats refresh themselves while it runs
    assert (await web.post(f"{url}/pause", data={"csrf": csrf})).status_code == 303
    assert (await api.get(f"/api/v1/campaigns/{campaign['id']}")).json()["status"] == "paused"
    assert (await web.post(f"{url}/resume", data={"csrf": csrf})).status_code == 303
    assert (await api.get(f"/api/v1/campaigns/{campaign['id']}")).json()["status"] == "sending"
    assert (await web.post(f"{url}/cancel", data={"csrf": csrf})).status_code == 303
    assert (await api.get(f"/api/v1/campaigns/{campaign['id']}")).json()["status"] == "cancelled"
    r = await web.post(f"{url}/resume", data={"csrf": csrf})
    assert r.status_code == 409 and "data-notice" in r.text
    assert (await api.get(f"/api/v1/campaigns/{campaign['id']}")).json()["status"] == "cancelled"
    assert (await web.post(f"{url}/cancel", data={})).status_code == 403
    r = await web.post(f"{url}/delete", data={"csrf": csrf})  # only a draft is deleted here
    assert r.status_code == 409 and "only a draft" in r.text


async def _received(fake, address: str) -> bool:
    return any(m["to"] == address for m in fake.delivered())


async def test_another_workspace_sees_and_changes_nothing(web_app, api, sessionmaker):
    segment = await group_segment(api, "fans")
    campaign = await inline_campaign(api, [segment], name="Secret sale")
    other = await new_workspace(sessionmaker)
    async with httpx.AsyncClient(base_url=web_app.state.base_url, timeout=30) as client:
        assert (await sign_in(client, other.secret_key)).status_code == 303
        listed = await client.get("/campaigns")
        assert "Secret sale" not in listed.text and "No campaigns yet" in listed.text
        assert "group fans" not in (await client.get("/campaigns/new")).text
        assert (await client.get(f"/campaigns/{campaign['id']}")).status_code == 404
        csrf = csrf_of(listed.text)
        for action in ("send", "cancel", "pause", "resume", "edit", "delete"):
            r = await client.post(f"/campaigns/{campaign['id']}/{action}", data={"csrf": csrf})
            assert r.status_code == 404, action
        assert (await client.get(f"/campaigns/{campaign['id']}/edit")).status_code == 404
        r = await client.post(
            f"/campaigns/{campaign['id']}/test", data={"csrf": csrf, "test_emails": "a@example.com"}
        )
        assert r.status_code == 404
        # Someone else's segment cannot be an audience either.
        r = await client.post(
            "/campaigns/new",
            data={
                "csrf": csrf,
                "name": "Borrowed",
                "source": "inline",
                "subject": "x",
                "html": "<p>x</p>",
                "from_email": SENDER,
                "segment_ids": segment,
            },
        )
        assert r.status_code == 422 and 'data-field="segment_ids"' in r.text
    assert (await api.get(f"/api/v1/campaigns/{campaign['id']}")).json()["status"] == "draft"


@pytest.mark.parametrize(
    "suffix",
    ["?cursor=abc", "?cursor=99999999999999", "?cursor=%00", "?done=hacked", "?cursor=" + "9" * 300],
)
async def test_bad_parameters_on_a_campaign_page_are_4xx(web, api, suffix):
    segment = await group_segment(api, "fans")
    campaign = await inline_campaign(api, [segment])
    r = await web.get(f"/campaigns/{campaign['id']}{suffix}")
    assert 400 <= r.status_code < 500, (suffix, r.status_code, r.text[-1500:])
    assert "Unexpected error" not in r.text


async def test_ab_test_and_variants_are_shown_when_the_stats_have_them(web, api, monkeypatch):
    """The page draws a decided A/B test (`ab_test`, `variants` of the
    stats) — given stats here; the A/B send itself, with real opens and a
    skipped timer, is tests/campaigns/test_ab.py."""
    from campaigns import service
    from campaigns.schemas import CampaignStats

    real = service.stats

    async def stats_with_ab_test(*args, **kwargs):
        plain = await real(*args, **kwargs)
        return CampaignStats.model_validate(
            {
                **plain.model_dump(),
                "ab_test": {
                    "metric": "open_rate",
                    "test_percent": 20,
                    "wait_seconds": 7200,
                    "status": "decided",
                    "winner": "B",
                    "decided_at": "2026-11-26T12:00:00Z",
                },
                "variants": [
                    {
                        "variant": "A",
                        "subject": "Spring sale",
                        "recipients": 100,
                        "sent": 100,
                        "unique_opens": 21,
                        "unique_clicks": 4,
                        "open_rate": 0.21,
                        "click_rate": 0.04,
                    },
                    {
                        "variant": "B",
                        "subject": "Our spring <sale>",
                        "recipients": 100,
                        "sent": 99,
                        "unique_opens": 35,
                        "unique_clicks": 9,
                        "open_rate": 0.3535,
                        "click_rate": 0.0909,
                    },
                ],
            }
        )

    segment = await group_segment(api, "fans")
    campaign = await inline_campaign(api, [segment])
    assert "No A/B test" in (await web.get(f"/campaigns/{campaign['id']}")).text
    monkeypatch.setattr(service, "stats", stats_with_ab_test)
    page = (await web.get(f"/campaigns/{campaign['id']}")).text
    assert "No A/B test" not in page and "data-variants" in page
    assert "20% of the audience" in page and "best open rate" in page and "winner <b>B</b>" in page
    assert "35.4%" in page and "9.1%" in page and "Our spring &lt;sale&gt;" in page
    assert '<tr class="winner"><td><b>B</b>' in page


async def test_an_ab_test_from_the_form_with_messages_next_to_its_fields(web, api):
    segment = await group_segment(api, "fans")
    csrf = csrf_of((await web.get("/campaigns/new")).text)
    ab = {"ab": "on", "ab_test_percent": "30", "ab_wait_minutes": "120", "ab_metric": "click_rate"}
    ab |= {"ab_subject_1": "Last days of the sale"}
    refused = [
        ({"ab_subject_1": ""}, "ab_subject_1"),
        ({"ab_test_percent": "0"}, "ab_test_percent"),
        ({"ab_test_percent": "x"}, "ab_test_percent"),
        ({"ab_wait_minutes": "99999999"}, "ab_wait_minutes"),
        ({"ab_metric": "revenue"}, "ab_metric"),
        ({"ab_subject_3": "D without C"}, "ab_subject_3"),
        ({"ab_subject_2": "{% if %}"}, "ab_subject_2"),
        ({"when": "local", "scheduled_at": "2030-01-01T09:00"}, "when"),
    ]
    for change, field in refused:
        r = await web.post("/campaigns/new", data=inline_form(csrf, segment, **(ab | change)))
        assert r.status_code == 422 and f'data-field="{field}"' in r.text, (change, r.text[-2000:])
    assert await campaign_names(api) == []

    r = await web.post("/campaigns/new", data=inline_form(csrf, segment, **ab, ab_subject_2="Or this one"))
    assert r.status_code == 303, r.text[-2000:]
    [created] = (await api.get("/api/v1/campaigns")).json()["data"]
    assert created["ab_test"] == {
        "variants": [
            {"name": "A"},
            {"name": "B", "subject": "Last days of the sale"},
            {"name": "C", "subject": "Or this one"},
        ],
        "test_percent": 30,
        "wait_seconds": 7200,
        "metric": "click_rate",
    }
    page = (await web.get(r.headers["location"])).text
    assert "data-variants" in page and "Last days of the sale" in page


async def test_edit_and_delete_a_draft(web, api, worker):
    segment = await group_segment(api, "fans")
    other = await group_segment(api, "others")
    draft = await inline_campaign(api, [segment])
    taken = await inline_campaign(api, [segment], name="Taken")
    edit = await web.get(f"/campaigns/{draft['id']}/edit")
    assert edit.status_code == 200 and "Edit draft" in edit.text and 'value="Spring sale"' in edit.text
    csrf = csrf_of(edit.text)
    form = inline_form(csrf, other, name="Spring sale, take two", subject="New subject")

    r = await web.post(f"/campaigns/{draft['id']}/edit", data=form | {"name": "Taken"})
    assert r.status_code == 409 and 'data-field="name"' in r.text
    r = await web.post(f"/campaigns/{draft['id']}/edit", data=form | {"from_email": "nobody"})
    assert r.status_code == 422 and 'data-field="from_email"' in r.text
    r = await web.post(f"/campaigns/{draft['id']}/edit", data=form | {"csrf": "forged"})
    assert r.status_code == 403
    r = await web.post(f"/campaigns/{draft['id']}/edit", data=form | {"ab": "on", "ab_subject_1": "B"})
    assert r.status_code == 422 and 'data-field="ab_test_percent"' in r.text

    r = await web.post(
        f"/campaigns/{draft['id']}/edit",
        data=form | {"ab": "on", "ab_subject_1": "B", "ab_test_percent": "10", "ab_wait_minutes": "60"},
    )
    assert r.status_code == 303 and r.headers["location"].endswith("?done=saved")
    saved = (await api.get(f"/api/v1/campaigns/{draft['id']}")).json()
    assert saved["name"] == "Spring sale, take two" and saved["content"]["subject"] == "New subject"
    assert saved["audience"]["segment_ids"] == [other] and saved["ab_test"]["test_percent"] == 10
    assert "Changes saved." in (await web.get(r.headers["location"])).text
    # Unticked, the A/B test goes.
    r = await web.post(f"/campaigns/{draft['id']}/edit", data=form)
    assert r.status_code == 303
    assert (await api.get(f"/api/v1/campaigns/{draft['id']}")).json()["ab_test"] is None

    # A campaign past its draft can be neither edited nor deleted here.
    r = await web.post(f"/campaigns/{taken['id']}/send", data={"csrf": csrf})
    assert r.status_code == 303
    for method, path in (("GET", "edit"), ("POST", "edit"), ("POST", "delete")):
        r = await web.request(method, f"/campaigns/{taken['id']}/{path}", data={"csrf": csrf} | form)
        assert r.status_code == 409 and "only a draft" in r.text, (method, path)

    r = await web.post(f"/campaigns/{draft['id']}/delete", data={"csrf": "forged"})
    assert r.status_code == 403
    r = await web.post(f"/campaigns/{draft['id']}/delete", data={"csrf": csrf})
    assert r.status_code == 303 and r.headers["location"] == "/campaigns?done=deleted"
    assert "Draft deleted." in (await web.get(r.headers["location"])).text
    assert (await api.get(f"/api/v1/campaigns/{draft['id']}")).status_code == 404
    assert (await web.get(f"/campaigns/{draft['id']}/edit")).status_code == 404


async def test_every_running_campaign_is_reachable_from_the_overview(web, api, engine, workspace):
    segment = await group_segment(api, "fans")
    for i in range(12):
        await inline_campaign(api, [segment], name=f"Campaign {i:02}")
    async with engine.begin() as conn:  # scheduled far ahead, as the send action would leave them
        await conn.execute(
            text(
                "UPDATE campaigns SET status = 'scheduled', scheduled_at = now() + interval '30 days' "
                "WHERE workspace_id = :w AND name <> 'Campaign 00'"
            ),
            {"w": workspace.workspace_id},
        )
    overview = (await web.get("/")).text
    assert overview.count('<tr><td><a href="/campaigns/') == 8 and "data-more-running" in overview
    first = (await web.get("/campaigns?status=running")).text
    assert "Campaign 00" not in first and first.count("Campaign ") == 11  # one page: 25 a page
    assert (await web.get("/campaigns?status=finished")).status_code == 400
