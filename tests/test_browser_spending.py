"""In a real browser: the anonymous cap, the balance badge, and cancelling a plan."""

import json
import re
import threading
from contextlib import contextmanager
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from playwright.sync_api import expect
from werkzeug.serving import make_server

from billing_site import credits
from billing_site.extensions import db
from billing_site.models import User, utcnow
from tests.factories import log_in, make_subscription, make_user

pytestmark = pytest.mark.browser


def session_cookie(app, user_id: int) -> str:
    client = app.test_client()
    with app.app_context():
        log_in(client, db.session.get(User, user_id))
    return client.get_cookie("session").value


def browse_as(page, base_url: str, cookie: str) -> None:
    page.context.add_cookies([{"name": "session", "value": cookie, "url": base_url}])


def generate_once(page, prompt: str) -> None:
    page.fill("#prompt", prompt)
    page.click("#generator button[type=submit]")


def test_anonymous_visitor_gets_three_generations_then_the_cap(page, live_server):
    page.goto(f"{live_server}/generate")
    expect(page.locator("#free-tries")).to_contain_text("3 of 3 free generations left")
    for number in range(1, 4):
        generate_once(page, f"a lighthouse, take {number}")
        expect(page.locator("#generation-result img")).to_have_attribute(
            "alt", f"a lighthouse, take {number}"
        )
        expect(page.locator("#free-tries")).to_contain_text(f"{3 - number} of 3")

    # At zero the button is off and the card says when more tries open.
    expect(page.locator("#generator button[type=submit]")).to_be_disabled()
    tries = page.locator("#free-tries")
    expect(tries).to_contain_text(re.compile(r"You can try again (tomorrow )?at \d\d:\d\d UTC"))
    expect(tries).to_contain_text("sign up for 10 free credits a month")
    expect(tries.get_by_role("link", name="sign up")).to_have_attribute("href", "/auth/signup")


def test_customer_watches_the_balance_badge_go_down_without_a_reload(app, page, live_server):
    with app.app_context():
        user = make_user()
        make_subscription(user, tier="basic")
        credits.grant(user.id, 5, source="admin", source_ref="test-badge", expires_at=None)
        db.session.commit()
        user_id = user.id
    browse_as(page, live_server, session_cookie(app, user_id))
    page.goto(f"{live_server}/generate")
    badge = page.locator("#balance-badge .badge-number")
    expect(badge).to_have_text("5")
    navigations = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))

    generate_once(page, "a red kite")
    expect(badge).to_have_text("4")
    page.check("input[value=hd]")
    generate_once(page, "a blue kite")
    expect(badge).to_have_text("2")
    expect(page.locator("#generation-result figcaption")).to_contain_text("2 credits spent, 2 left")
    assert navigations == []  # HTMX swapped the card and the badge; the page never reloaded


class FakeStripe(BaseHTTPRequestHandler):
    """Answers POST /v1/subscriptions/<id> as Stripe does, and remembers what it was sent."""

    received: list = []
    period_end = 0

    def do_POST(self):  # noqa: N802 (the name http.server calls)
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
        FakeStripe.received.append((self.path, body))
        cancel = "cancel_at_period_end=true" in body
        reply = {
            "id": self.path.rsplit("/", 1)[-1],
            "object": "subscription",
            "status": "active",
            "cancel_at_period_end": cancel,
            "items": {"object": "list", "data": [{"current_period_end": FakeStripe.period_end}]},
        }
        payload = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@contextmanager
def serving(server):
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_subscriber_cancels_and_sees_the_date_it_ends(make_app, page):
    period_end = (utcnow() + timedelta(days=11)).replace(microsecond=0)
    FakeStripe.received = []
    FakeStripe.period_end = int(period_end.timestamp())
    with serving(ThreadingHTTPServer(("127.0.0.1", 0), FakeStripe)) as stripe_server:
        app = make_app(
            STRIPE_SECRET_KEY="sk_test_123",
            STRIPE_API_BASE=f"http://127.0.0.1:{stripe_server.server_port}",
        )
        with app.app_context():
            user = make_user(stripe_customer_id="cus_123")
            make_subscription(user, stripe_subscription_id="sub_123", current_period_end=period_end)
            user_id = user.id
        with serving(make_server("127.0.0.1", 0, app, threaded=True)) as site:
            base = f"http://127.0.0.1:{site.server_port}"
            browse_as(page, base, session_cookie(app, user_id))
            page.goto(f"{base}/account")
            card = page.locator("#subscription-card")
            expect(card).to_contain_text(f"Renews on {period_end:%-d %B %Y}")

            page.once("dialog", lambda dialog: dialog.accept())
            card.get_by_role("button", name="Cancel plan").click()
            expect(card).to_contain_text(f"Cancels on {period_end:%-d %B %Y}")
            expect(card).to_contain_text("confirming with Stripe")
            expect(card.get_by_role("button", name="Keep my plan")).to_be_visible()

    assert [path for path, _ in FakeStripe.received] == ["/v1/subscriptions/sub_123"]
    assert re.search(r"cancel_at_period_end=true", FakeStripe.received[0][1])
