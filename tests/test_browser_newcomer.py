"""A real browser on the newcomer's walk (issue 13): a phone, the generator, the landing page.

Every test here also fails on any console error (the `page` fixture in conftest),
so a CSP violation after an HTMX swap is caught. Set SCREENSHOT_DIR to keep a
picture of each page looked at.
"""

import os
from pathlib import Path

import pytest
from playwright.sync_api import expect

from billing_site import credits
from billing_site.extensions import db
from billing_site.generator import SvgGenerator
from billing_site.models import Generation
from tests.factories import make_subscription, make_user
from tests.test_browser_spending import browse_as, generate_once, session_cookie

pytestmark = pytest.mark.browser

PHONE = {"width": 390, "height": 844}
LONG_PROMPT = "a" * 500  # no space to break at


def look_at(page, name: str) -> None:
    folder = os.environ.get("SCREENSHOT_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=f"{folder}/{name}.png", full_page=True)


def page_width(page) -> int:
    return page.evaluate("document.documentElement.scrollWidth")


def customer(app, *, tier="basic", balance=0, generations=()) -> str:
    with app.app_context():
        user = make_user()
        make_subscription(user, tier=tier)
        if balance:
            credits.grant(
                user.id, balance, source="admin", source_ref=f"b-{user.id}", expires_at=None
            )
        for prompt, model in generations:
            svg = SvgGenerator().generate(prompt, model).svg
            db.session.add(
                Generation(
                    user_id=user.id,
                    prompt=prompt,
                    model=model,
                    credits_charged=1,
                    status="succeeded",
                    result=svg,
                )
            )
        db.session.commit()
        return session_cookie(app, user.id)


def test_the_landing_page_shows_examples_plans_and_a_call_to_action(page, live_server):
    page.goto(f"{live_server}/")
    expect(page).to_have_title("AI images from a sentence · Pixel Forge")
    examples = page.locator(".example-gallery img")
    expect(examples).to_have_count(3)
    for index in range(3):
        assert examples.nth(index).evaluate("img => img.complete && img.naturalWidth > 0")
    expect(page.locator(".plan-brief")).to_have_count(3)
    expect(page.get_by_role("link", name="Start free")).to_have_attribute("href", "/auth/signup")
    look_at(page, "landing-desktop")

    page.get_by_role("link", name="Pricing", exact=True).click()
    expect(page).to_have_title("Pricing · Pixel Forge")
    expect(page.locator(".pack-card")).to_have_count(4)
    look_at(page, "pricing-desktop")


@pytest.mark.parametrize("path", ["/", "/pricing", "/generate", "/auth/signup"])
def test_public_pages_fit_a_390px_phone(page, live_server, path):
    page.set_viewport_size(PHONE)
    page.goto(f"{live_server}{path}")
    assert page_width(page) <= PHONE["width"]
    look_at(page, f"phone{path.replace('/', '-') or '-home'}")


def test_a_long_unbroken_prompt_wraps_on_a_phone_and_stays_in_its_card(app, page, live_server):
    cookie = customer(app, balance=5, generations=[(LONG_PROMPT, "standard"), ("a kite", "hd")])
    browse_as(page, live_server, cookie)
    page.set_viewport_size(PHONE)
    for path in ("/account", "/generate"):
        page.goto(f"{live_server}{path}")
        assert page_width(page) <= PHONE["width"], path
        look_at(page, f"phone-long-prompt{path.replace('/', '-')}")

    page.set_viewport_size({"width": 1280, "height": 900})
    page.goto(f"{live_server}/account")
    thumb = page.locator(".generation-thumb").first
    caption = thumb.locator(".generation-prompt")
    thumb_box, caption_box = thumb.bounding_box(), caption.bounding_box()
    assert caption_box["x"] + caption_box["width"] <= thumb_box["x"] + thumb_box["width"] + 1
    assert caption_box["height"] < 80  # clamped to three lines, not 500 characters tall
    look_at(page, "account-desktop")


def test_the_generator_shows_the_cost_first_then_the_image_in_a_gallery(app, page, live_server):
    browse_as(page, live_server, customer(app, balance=5))
    page.goto(f"{live_server}/generate")
    summary = page.locator("#cost-summary")
    expect(summary).to_have_text("Standard costs 1 credit: balance after 4.")
    page.check("input[value=hd]")
    expect(summary).to_have_text("HD costs 2 credits: balance after 3.")

    generate_once(page, "a paper boat on a pond")
    expect(page.locator("#generation-result figcaption")).to_contain_text("2 credits spent, 3 left")
    result = page.locator("#generation-result img")
    assert result.bounding_box()["width"] >= 400  # the result is the page's main thing
    item = page.locator("#gallery .gallery-item").first
    expect(item).to_contain_text("a paper boat on a pond")
    expect(item).to_contain_text("HD")
    expect(item).to_contain_text("2 credits")
    expect(page.locator("#cost-summary")).to_have_text("HD costs 2 credits: balance after 1.")
    look_at(page, "generator-desktop")

    with page.expect_download() as download:
        item.get_by_role("link", name="Download").click()
    assert download.value.suggested_filename.endswith(".svg")
    assert Path(download.value.path()).read_text().startswith("<svg")


def test_a_premium_customer_sees_unlimited_in_the_header(app, page, live_server):
    browse_as(page, live_server, customer(app, tier="premium"))
    page.goto(f"{live_server}/account")
    badge = page.locator("#balance-badge")
    expect(badge).to_have_text("Unlimited")
    assert "badge-empty" not in badge.get_attribute("class")
    expect(page.locator("#balance-card")).to_contain_text("Unlimited")


def test_a_visitor_at_zero_tries_sees_when_to_come_back_and_cannot_press_generate(
    page, live_server
):
    page.goto(f"{live_server}/generate")
    for number in range(3):
        generate_once(page, f"a cloud, take {number}")
        expect(page.locator("#free-tries")).to_contain_text(f"{2 - number} of 3")
    expect(page.locator("#generator button[type=submit]")).to_be_disabled()
    expect(page.locator("#free-tries")).to_contain_text("You can try again")
    page.reload()
    expect(page.locator("#generator button[type=submit]")).to_be_disabled()


def test_loading_more_of_the_ledger_logs_no_console_error(app, page, live_server):
    with app.app_context():
        user = make_user()
        for number in range(25):
            credits.grant(user.id, 1, source="admin", source_ref=f"l-{number}", expires_at=None)
        db.session.commit()
        cookie = session_cookie(app, user.id)
    browse_as(page, live_server, cookie)
    page.goto(f"{live_server}/account")
    rows = page.locator("#ledger-table tbody tr:not(.ledger-more)")
    expect(rows).to_have_count(20)
    page.get_by_role("link", name="Load more").click()
    expect(rows).to_have_count(26)  # and the month's 10 free credits, granted on the first view
    expect(page.get_by_role("link", name="Load more")).to_have_count(0)
    look_at(page, "account-ledger")


def test_admin_tabs_and_filters_line_up(app, page, live_server):
    with app.app_context():
        admin = make_user("admin@example.com", is_admin=True)
        cookie = session_cookie(app, admin.id)
    browse_as(page, live_server, cookie)
    page.goto(f"{live_server}/admin/orders")
    current = page.locator(".admin-nav a[aria-current=page]")
    expect(current).to_have_text("Orders")
    assert current.evaluate("a => getComputedStyle(a).textDecorationLine") == "none"
    assert current.evaluate("a => getComputedStyle(a).borderTopStyle") == "solid"
    boxes = [label.bounding_box() for label in page.locator(".filters label").all()]
    first_row = [box for box in boxes if box["y"] < boxes[0]["y"] + boxes[0]["height"]]
    assert len(first_row) >= 3
    assert {round(box["y"]) for box in first_row} == {round(boxes[0]["y"])}  # labels on one line
    search = page.locator("#q")
    placeholder_fits = search.evaluate(
        """input => {
            const context = document.createElement("canvas").getContext("2d");
            context.font = getComputedStyle(input).font;
            const padding = parseFloat(getComputedStyle(input).paddingLeft) * 2;
            return context.measureText(input.placeholder).width + padding <= input.clientWidth;
        }"""
    )
    assert placeholder_fits
    expect(page.locator("#balance-badge")).to_have_count(0)  # an admin, not a customer
    look_at(page, "admin-orders")
