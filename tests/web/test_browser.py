"""The dashboard in headless Chromium: sign in, every page with demo data
(screenshots into docs/screenshots for the README), create a segment and
see its live estimate, open a flow and see its node counts, follow a link
into the Temporal UI; another workspace's session sees none of it; forms
show messages next to their fields."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import expect

from tests.conftest import new_workspace
from tests.web.conftest import shot
from tests.web.demo import seed

pytestmark = pytest.mark.timeout(600)


async def sign_in(tab, secret_key: str) -> None:
    await tab.goto("/login")
    await tab.fill("#f-key", secret_key)
    await tab.click("button[type=submit]")
    await expect(tab.locator("h1")).to_have_text("Overview")


async def test_walkthrough_with_screenshots(page, api, tracking, engine, sendgrid, worker, workspace):
    demo = await seed(api, tracking, engine, sendgrid)

    await page.goto("/login")
    await shot(page, "01-sign-in")
    await page.fill("#f-key", "sk_not_a_real_key")
    await page.click("button[type=submit]")
    await expect(page.locator(".field-error[data-field=key]")).to_contain_text("This key is not valid")
    await sign_in(page, workspace.secret_key)
    await expect(page.locator(".kpi .value").first).not_to_have_text("0")
    await expect(page.locator("svg.chart").first).to_be_visible()
    await expect(page.locator("text=SendGrid (primary)")).to_be_visible()
    await expect(page.locator("text=Abandoned cart")).to_be_visible()
    await expect(page.locator("[data-running-campaigns]")).to_contain_text("Winter sale")
    await shot(page, "02-overview")

    # Profiles: search by email, then the profile page.
    await page.click("nav >> text=Profiles")
    await shot(page, "03-profiles")
    await page.fill("#f-q", "ada.1@example.com")
    await page.click("button:has-text('Search')")
    await page.click("text=ada.1@example.com")
    await expect(page.locator("h1")).to_have_text("ada.1@example.com")
    await expect(page.locator("text=Abandoned cart")).to_be_visible()
    await expect(page.locator("text=Event timeline")).to_be_visible()
    await shot(page, "04-profile")

    # Segments: the list, then a new one with its live estimate before saving.
    await page.click("nav >> text=Segments")
    await expect(page.locator("text=Paying customers")).to_be_visible()
    await shot(page, "05-segments")
    await page.click("text=New segment")
    await page.click("button.starter:has-text('Has not done an event')")
    await expect(page.locator("#estimate")).to_contain_text("did Order Completed = 0 times")
    await page.fill("#f-name", "German pros")
    await page.fill(
        "#f-definition",
        '{"type": "all", "conditions": [{"type": "trait", "path": "country", "op": "eq", "value": "DE"},'
        ' {"type": "trait", "path": "plan", "op": "eq", "value": "pro"}]}',
    )
    estimate = page.locator("[data-estimate] .n")
    await expect(estimate).to_have_text(re.compile(r"^\d+$"))
    expected = (
        await api.post(
            "/api/v1/segments/estimate",
            json={
                "definition": {
                    "type": "all",
                    "conditions": [
                        {"type": "trait", "path": "country", "op": "eq", "value": "DE"},
                        {"type": "trait", "path": "plan", "op": "eq", "value": "pro"},
                    ],
                }
            },
        )
    ).json()["count"]
    await expect(estimate).to_have_text(str(expected))
    await shot(page, "06-segment-new")
    await page.fill("#f-definition", '{"type": "trait", "path": "plan", "op": "sometimes"}')
    await expect(page.locator("[data-estimate-error]")).to_be_visible()
    await page.click("button:has-text('Create segment')")
    await expect(page.locator(".field-error[data-field=definition]")).to_be_visible()
    await page.fill("#f-definition", '{"type": "trait", "path": "plan", "op": "eq", "value": "pro"}')
    await page.click("button:has-text('Create segment')")
    await expect(page.locator("h1")).to_have_text("German pros")
    await page.goto(f"/segments/{demo.segment_id}")
    await expect(page.locator("h1")).to_have_text("Paying customers")
    await shot(page, "07-segment")

    # Flows: the graph with per-node counts, then a run in the Temporal UI.
    await page.click("nav >> text=Flows")
    await shot(page, "08-flows")
    await page.click("text=Abandoned cart")
    wait_node = page.locator("g.node[data-node=wait_order]")
    await expect(wait_node).to_contain_text("entered 6")
    await expect(wait_node).to_contain_text("waiting 4")
    await expect(page.locator("svg.flow-graph")).to_contain_text("event · 2")
    await expect(page.locator("g.node[data-node=thank_you]")).to_contain_text("entered 2")
    await shot(page, "09-flow")
    link = page.locator("a.run-link").first
    href = await link.get_attribute("href")
    assert "/workflows/flow%3A" in href or "/workflows/flow:" in href
    async with page.context.expect_page() as opened:
        await link.click()
    temporal = await opened.value
    await temporal.wait_for_load_state()
    workflow_id = href.rsplit("/workflows/", 1)[1]
    await expect(temporal.locator("body")).to_contain_text(
        workflow_id.replace("%3A", ":")[:20], timeout=30_000
    )
    await shot(temporal, "10-temporal-ui-run")
    await temporal.close()

    # Templates: edit with a preview for a chosen profile.
    await page.click("nav >> text=Templates")
    await page.click("text=Come back")
    await page.fill("#f-preview_for", "grace.2@example.com")
    await page.click("button:has-text('Preview')")
    await expect(page.locator("[data-preview-subject]")).to_contain_text("Grace, your cart misses you")
    await shot(page, "11-template")

    await page.click("nav >> text=Providers")
    await expect(page.locator("td >> text=closed")).to_be_visible()
    await expect(page.locator("body")).not_to_contain_text(sendgrid.token)
    await shot(page, "12-providers")

    # Events explorer: a breakdown, then a funnel.
    await page.goto("/events?name=Page+Viewed&breakdown=path&range=7d")
    await expect(page.locator(".legend")).to_contain_text("/pricing")
    await page.fill("#f-steps", "Product Viewed\nAdded to Cart\nOrder Completed")
    await page.fill("#f-window", "168")
    await page.click("button:has-text('Compute funnel')")
    await expect(page.locator("table.funnel")).to_contain_text("Order Completed")
    await shot(page, "13-events")


async def test_another_workspace_session_sees_nothing(page, api, tracking, sessionmaker):
    r = await tracking.post("/identify", json={"userId": "hidden", "traits": {"email": "hidden@example.com"}})
    assert r.status_code == 200
    segment = (
        await api.post(
            "/api/v1/segments",
            json={"name": "Hidden", "definition": {"type": "trait", "path": "a", "op": "exists"}},
        )
    ).json()
    campaign = (
        await api.post(
            "/api/v1/campaigns",
            json={
                "name": "Hidden sale",
                "content": {"subject": "Hi", "html": "<p>Hi</p>", "from_email": "shop@example.com"},
                "audience": {"segment_ids": [segment["id"]]},
            },
        )
    ).json()
    other = await new_workspace(sessionmaker)
    await sign_in(page, other.secret_key)
    await page.goto("/campaigns")
    await expect(page.locator(".empty .big")).to_have_text("No campaigns yet")
    assert (await page.goto(f"/campaigns/{campaign['id']}")).status == 404
    await page.goto("/profiles")
    await expect(page.locator("text=No profiles yet")).to_be_visible()
    await page.goto("/segments")
    await expect(page.locator("text=No segments yet")).to_be_visible()
    response = await page.goto(f"/segments/{segment['id']}")
    assert response.status == 404
    await expect(page.locator(".empty .big")).to_have_text("Not found")


async def test_empty_workspace_pages_say_what_to_do(page, workspace):
    await sign_in(page, workspace.secret_key)
    await expect(page.locator("text=No events in this range yet")).to_be_visible()
    await shot(page, "00-overview-empty")
    for path, hint in (
        ("/flows", "No flows yet"),
        ("/campaigns", "No campaigns yet"),
        ("/templates", "No templates yet"),
        ("/providers", "No email provider yet"),
        ("/events", "No events in this range"),
    ):
        await page.goto(path)
        await expect(page.locator(".empty .big").first).to_contain_text(hint)


async def test_sign_out_ends_the_session(page, workspace):
    await sign_in(page, workspace.secret_key)
    await page.click("button:has-text('Sign out')")
    await expect(page.locator("h1")).to_have_text("Sign in")
    await page.goto("/segments")
    await expect(page.locator("h1")).to_have_text("Sign in")


async def test_condition_builder_edits_the_tree_it_posts(page, api, tracking, workspace):
    people = [("DE", "pro"), ("FR", "pro"), ("US", "pro"), ("DE", "free")]
    for n, (country, plan) in enumerate(people):
        r = await tracking.post(
            "/identify", json={"userId": f"b{n}", "traits": {"country": country, "plan": plan}}
        )
        assert r.status_code == 200
    await sign_in(page, workspace.secret_key)
    await page.goto("/segments/new")
    builder = page.locator("#condition-builder")
    root = builder.locator("> .cb-group")
    # The example: all of (a trait, an event); drop the event.
    await expect(root.locator("> .cb-items > .cb-cond")).to_have_count(2)
    await root.locator("> .cb-items > [data-cond=event] [data-remove]").click()
    await expect(root.locator("> .cb-items > .cb-cond")).to_have_count(1)
    # A nested group: any of two countries.
    await root.locator("> .cb-add [data-add=group]").click()
    group = root.locator("> .cb-items > .cb-group")
    await expect(group.locator("select[aria-label=Group]")).to_have_value("any")
    await group.locator("> .cb-add [data-add=trait]").click()
    conds = group.locator("> .cb-items > [data-cond=trait]")
    await expect(conds).to_have_count(2)
    for i, country in enumerate(("DE", "FR")):
        await conds.nth(i).locator("input[aria-label=Trait]").fill("country")
        await conds.nth(i).locator("input[aria-label=Value]").fill(country)
    expected = {
        "type": "all",
        "conditions": [
            {"type": "trait", "path": "plan", "op": "eq", "value": "pro"},
            {
                "type": "any",
                "conditions": [
                    {"type": "trait", "path": "country", "op": "eq", "value": "DE"},
                    {"type": "trait", "path": "country", "op": "eq", "value": "FR"},
                ],
            },
        ],
    }
    # The live estimate follows the builder: DE-pro and FR-pro.
    await expect(page.locator("[data-estimate] .n")).to_have_text("2")
    await shot(page, "06b-segment-builder")
    # Any of the top level instead: every pro or DE/FR profile.
    await root.locator("> .cb-head select[aria-label=Group]").select_option("any")
    await expect(page.locator("[data-estimate] .n")).to_have_text("4")
    await root.locator("> .cb-head select[aria-label=Group]").select_option("all")
    # Hand-edited JSON redraws the builder; broken JSON says so.
    await page.fill("#f-definition", '{"type": "all", "conditions": [')
    await expect(builder.locator("[data-builder-error]")).to_be_visible()
    await page.fill("#f-definition", '{"type": "trait", "path": "plan", "op": "exists"}')
    await expect(builder.locator("[data-cond=trait] select[aria-label=Operator]")).to_have_value("exists")
    await expect(builder.locator("[data-cond=trait] input[aria-label=Value]")).to_have_count(0)
    await builder.locator("[data-add=wrap]").click()
    await expect(builder.locator("> .cb-group > .cb-items > .cb-cond")).to_have_count(2)
    # Back to the tree built above, through the builder, and saved.
    await builder.locator("> .cb-group > .cb-items > .cb-cond").nth(1).locator("[data-remove]").click()
    only = builder.locator("> .cb-group > .cb-items > .cb-cond").first
    await only.locator("select[aria-label=Operator]").select_option("eq")
    await only.locator("input[aria-label=Value]").fill("pro")
    await builder.locator("> .cb-group > .cb-add [data-add=group]").click()
    sub = builder.locator("> .cb-group > .cb-items > .cb-group")
    await sub.locator("> .cb-add [data-add=trait]").click()
    for i, country in enumerate(("DE", "FR")):
        cond = sub.locator("> .cb-items > [data-cond=trait]").nth(i)
        await cond.locator("input[aria-label=Trait]").fill("country")
        await cond.locator("input[aria-label=Value]").fill(country)
    await page.fill("#f-name", "Pros in DE or FR")
    await page.click("button:has-text('Create segment')")
    await expect(page.locator("h1")).to_have_text("Pros in DE or FR")
    segment_id = page.url.rsplit("/", 1)[1]
    saved = (await api.get(f"/api/v1/segments/{segment_id}")).json()
    assert saved["definition"] == expected
