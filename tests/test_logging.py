"""Logs a person can follow (issue 14): one request id per request on every line, in the
X-Request-ID header and on error pages; JSON lines with LOG_FORMAT=json; each money
event logged once with the user, the amounts and the Stripe id. And /admin/health."""

import io
import json
import logging
import re

import pytest

from billing_site.extensions import db as _db
from billing_site.models import StripeEvent, User, utcnow
from tests.factories import log_in, make_order, make_user
from tests.stripe_events import checkout_session, make_event, post_event

HEX_ID = re.compile(r"[0-9a-f]{32}")


@pytest.fixture
def log_lines():
    """What the site's own log handler writes, as a list of lines."""
    handler = next(h for h in logging.getLogger().handlers if getattr(h, "pixel_forge", False))
    stream = io.StringIO()
    previous = handler.setStream(stream)
    yield lambda: stream.getvalue().splitlines()
    handler.setStream(previous)


def test_each_request_gets_its_own_id_and_a_client_cannot_choose_it(client):
    first = client.get("/healthz")
    second = client.get("/healthz", headers={"X-Request-ID": "chosen-by-the-client"})

    assert HEX_ID.fullmatch(first.headers["X-Request-ID"])
    assert HEX_ID.fullmatch(second.headers["X-Request-ID"])
    assert first.headers["X-Request-ID"] != second.headers["X-Request-ID"]


def test_behind_a_trusted_proxy_its_request_id_is_kept_if_it_looks_like_one(make_app):
    client = make_app(TRUSTED_PROXIES=1).test_client()
    kept = client.get("/healthz", headers={"X-Request-ID": "lb-7f3a9c.42"})
    replaced = client.get("/healthz", headers={"X-Request-ID": "<script>alert(1)</script>"})

    assert kept.headers["X-Request-ID"] == "lb-7f3a9c.42"
    assert HEX_ID.fullmatch(replaced.headers["X-Request-ID"])


def test_an_error_page_shows_the_id_to_quote_to_support(client):
    response = client.get("/no-such-page")
    request_id = response.headers["X-Request-ID"]
    page = response.get_data(as_text=True)
    assert response.status_code == 404
    assert "quote this id" in page and f"<code>{request_id}</code>" in page


def test_json_lines_carry_the_request_id_and_each_money_event_is_logged_once(make_app, log_lines):
    app = make_app(LOG_FORMAT="json")
    client = app.test_client()
    with app.app_context():
        user_id = make_user().id
        order = make_order(_db.session.get(User, user_id), "pro")
        event = make_event("checkout.session.completed", checkout_session(order))
        responses = [post_event(client, event) for _ in range(3)]

    entries = [json.loads(line) for line in log_lines()]  # every line is JSON
    grants = [e for e in entries if e["message"].startswith("money grant")]
    assert len(grants) == 1  # three deliveries, one grant, one line
    [grant] = grants
    assert grant["logger"] == "billing_site.money"
    assert f"user_id={user_id} credits=100 source=pack" in grant["message"]
    assert f"stripe_event_id={event['id']}" in grant["message"]
    assert grant["request_id"] == "-"  # applied by the worker, outside any request
    webhook_lines = [e for e in entries if e["logger"] == "billing_site.webhook"]
    received = {e["request_id"] for e in webhook_lines} - {"-"}
    assert received == {r.headers["X-Request-ID"] for r in responses}


def test_text_lines_carry_the_request_id_too(client, log_lines):
    response = client.post("/stripe/webhook", data="{}", headers={"Stripe-Signature": "t=1,v1=x"})
    [line] = [line for line in log_lines() if "webhook rejected" in line]
    assert f"[{response.headers['X-Request-ID']}]" in line


# --- /admin/health ----------------------------------------------------------------------


def test_admin_health_shows_webhooks_failures_lag_and_the_stripe_api_version(db, client):
    admin = make_user("admin@example.com", is_admin=True)
    now = utcnow()
    for number, (status, version) in enumerate(
        [("processed", "2026-07-29.dahlia"), ("processed", "2026-07-29"), ("dead", "2024-06-20")]
    ):
        _db.session.add(
            StripeEvent(
                id=f"evt_health_{number}",
                type="invoice.paid",
                created=now,
                payload={"api_version": version},
                status=status,
                received_at=now,
                processed_at=now if status == "processed" else None,
            )
        )
    _db.session.commit()
    log_in(client, admin)

    page = client.get("/admin/health").get_data(as_text=True)

    assert re.search(r'id="failed-events"><a[^>]*>1</a>', page)
    assert 'id="rate-limit-storage">ok<' in page
    assert "2026-07-29.dahlia" in page
    assert page.count("matches") == 2  # "2026-07-29" is the same release
    assert "<code>2024-06-20</code>" in page and "differs" in page
    assert 'id="needs-review"><a' in page


def test_customers_cannot_open_admin_health(db, client):
    log_in(client, make_user())
    assert client.get("/admin/health").status_code == 403
