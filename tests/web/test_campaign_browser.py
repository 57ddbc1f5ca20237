"""Campaigns in headless Chromium: sign in, see the list, create a
campaign (a refused form first), send a test, send it to the fake
SendGrid, then see its stats move after deliveries (the provider's signed
webhook), an open and a click through the tracking endpoints; an A/B test
of subject lines made in the form, its draft edited, then deleted.
Screenshots of each campaign page go where the walkthrough's go."""

from __future__ import annotations

import re

import pytest
from playwright.async_api import expect

from tests.campaigns.support import group_segment
from tests.web.campaign_demo import deliver, engage, recipients, seed_campaigns
from tests.web.conftest import shot
from tests.web.test_browser import sign_in

pytestmark = pytest.mark.timeout(600)


async def test_create_send_and_watch_the_stats_move(page, api, tracking, worker, sendgrid, workspace):
    demo = await seed_campaigns(api, tracking, sendgrid)
    await sign_in(page, workspace.secret_key)
    await expect(page.locator("[data-running-campaigns]")).to_contain_text("Winter sale")

    await page.click("nav >> text=Campaigns")
    await expect(page.locator("h1")).to_have_text("Campaigns")
    sent_row = page.locator("tr", has=page.locator("text=October newsletter"))
    await expect(sent_row).to_contain_text("sent")
    await expect(sent_row).to_contain_text("Everyone in Germany")
    await expect(page.locator("tr", has=page.locator("text=Winter sale"))).to_contain_text("local time")

    await page.click("text=New campaign")
    await expect(page.locator("h1")).to_have_text("New campaign")
    await shot(page, "15-campaign-new")
    # Nothing filled in but the starter body: messages next to the fields.
    await page.click("button:has-text('Create campaign')")
    await expect(page.locator(".field-error[data-field=name]")).to_be_visible()
    await expect(page.locator(".field-error[data-field=segment_ids]")).to_be_visible()
    await page.fill("#f-name", "Spring launch")
    await page.locator("#f-segment_ids label.check", has_text="Paying customers").locator("input").check()
    await (
        page.locator("#f-exclude_segment_ids label.check", has_text="Everyone in Germany")
        .locator("input")
        .check()
    )
    await page.fill("#f-subject", "Spring is here, {{ profile.first_name }}")
    await page.fill("#f-from_email", "news@example.com")
    await page.fill("#f-from_name", "Acme Shop")
    await page.click("button:has-text('Create campaign')")
    await expect(page.locator("h1")).to_contain_text("Spring launch")
    await expect(page.locator("[data-status]")).to_have_text("draft")
    await expect(page.locator("[data-ab]")).to_contain_text("No A/B test")
    # The email as its first reader (a member of the refreshed segment) gets it.
    await expect(page.locator("[data-preview-subject]")).to_have_text(re.compile(r"^Spring is here, \w+$"))

    await page.fill("#f-test_emails", "me@example.com")
    await page.click("button:has-text('Send test')")
    await expect(page.locator("[data-done]")).to_contain_text("Test email sent")
    await shot(page, "16-campaign-draft")

    await page.click("#send-now")
    await expect(page.locator("[data-done]")).to_contain_text("Sending started")
    # The page follows the send by itself (htmx every 5 s), no reload.
    await expect(page.locator("[data-status]")).to_have_text("sent", timeout=90_000)
    mine = [
        m
        for m in sendgrid.delivered()
        if m["subject"].startswith("Spring is here") and m["to"] != "me@example.com"
    ]
    campaign_id = page.url.split("/campaigns/")[1].split("?")[0]
    sent_to = await recipients(api, campaign_id)
    assert len(mine) == len(sent_to) > 0
    assert all(r["status"] == "sent" for r in sent_to)
    await expect(page.locator("[data-kpi=sent]")).to_have_text(str(len(sent_to)))
    await expect(page.locator("[data-kpi=open-rate]")).to_have_text("0.0%")
    await expect(page.locator("[data-funnel] tr[data-step=clicked] td.num").first).to_have_text("0")

    # The provider reports deliveries; one reader opens twice, another opens and clicks.
    await deliver(tracking, demo, [r["message_id"] for r in sent_to])
    await engage(tracking, mine[:1], clicks=0)
    await engage(tracking, mine[:2], clicks=2)
    await page.reload()
    await expect(page.locator("[data-kpi=delivered]")).to_have_text("100.0%")
    await expect(page.locator("[data-kpi=opens]")).to_contain_text("2 unique · 3 total")
    await expect(page.locator("[data-kpi=clicks]")).to_contain_text("2 unique")
    rate = f"{100 * 2 / len(sent_to):.1f}%"
    await expect(page.locator("[data-kpi=open-rate]")).to_have_text(rate)
    await expect(page.locator("[data-funnel] tr[data-step=opened] td.num").first).to_have_text("2")
    await expect(page.locator("[data-funnel] tr[data-step=clicked] td.num").first).to_have_text("2")
    await expect(page.locator("[data-providers]")).to_contain_text("sendgrid")
    await expect(page.locator("svg.chart")).to_be_visible()
    await expect(page.locator(".legend")).to_contain_text("Opened")
    await shot(page, "17-campaign-stats")

    await page.click("nav >> text=Campaigns")
    row = page.locator("tr", has=page.locator("text=Spring launch"))
    await expect(row).to_contain_text(rate)
    await expect(row).to_contain_text(re.compile(r"sent"))
    await shot(page, "14-campaigns")
    await page.click("text=October newsletter")
    await expect(page.locator("[data-kpi=clicks]")).to_contain_text("4 unique")
    await expect(page.locator("[data-funnel] tr[data-step=delivered] td.num").first).to_have_text("19")


async def test_empty_campaign_list_says_what_to_do(page, workspace):
    await sign_in(page, workspace.secret_key)
    await page.goto("/campaigns")
    await expect(page.locator(".empty .big")).to_have_text("No campaigns yet")
    await expect(page.locator("ol.steps")).to_contain_text("Add an email provider")
    await expect(page.locator("ol.steps")).to_contain_text("Create a segment")
    await page.click("text=Create your first campaign")
    await expect(page.locator(".empty .big")).to_contain_text("No segments yet")


async def test_an_ab_campaign_then_edit_and_delete_a_draft(page, api, workspace):
    await group_segment(api, "fans", name="Newsletter readers")
    await sign_in(page, workspace.secret_key)
    await page.goto("/campaigns/new")
    await page.fill("#f-name", "Subject line test")
    await page.locator("#f-segment_ids label.check", has_text="Newsletter readers").locator("input").check()
    await page.fill("#f-from_email", "news@example.com")
    await expect(page.locator("#f-ab_test_percent")).to_be_hidden()
    await page.check("#f-ab")
    await page.fill("#f-ab_test_percent", "150")
    await page.fill("#f-ab_subject_1", "Only 3 days left: the spring sale")
    await page.click("button:has-text('Create campaign')")
    await expect(page.locator(".field-error[data-field=ab_test_percent]")).to_be_visible()
    await expect(page.locator("#f-ab")).to_be_checked()
    await shot(page, "18-campaign-ab-form")
    await page.fill("#f-ab_test_percent", "20")
    await page.fill("#f-ab_wait_minutes", "180")
    await page.select_option("#f-ab_metric", "click_rate")
    await page.click("button:has-text('Create campaign')")
    await expect(page.locator("h1")).to_contain_text("Subject line test")
    await expect(page.locator("[data-ab]")).to_contain_text("20% of the audience")
    await expect(page.locator("[data-ab]")).to_contain_text("best click rate")
    await expect(page.locator("[data-variants]")).to_contain_text("Only 3 days left: the spring sale")

    await page.click("#edit-draft")
    await expect(page.locator("h1")).to_have_text("Edit draft")
    await expect(page.locator("#f-ab_subject_1")).to_have_value("Only 3 days left: the spring sale")
    await page.fill("#f-name", "Subject line test, v2")
    await page.fill("#f-ab_subject_2", "Spring sale: your picks inside")
    await page.click("button:has-text('Save changes')")
    await expect(page.locator("[data-done]")).to_contain_text("Changes saved")
    await expect(page.locator("h1")).to_contain_text("Subject line test, v2")
    await expect(page.locator("[data-variants] tbody tr")).to_have_count(3)

    page.once("dialog", lambda dialog: dialog.accept())
    await page.click("#delete-draft")
    await expect(page.locator("[data-done]")).to_have_text("Draft deleted.")
    await expect(page.locator("h1")).to_have_text("Campaigns")
    assert (await api.get("/api/v1/campaigns")).json()["data"] == []
