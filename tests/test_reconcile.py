"""`flask reconcile --since 72h`: lost webhooks heal from Stripe's list of events.

The real StripeGateway talks to a mocked api.stripe.com (responses), so the
request the command sends and the list shape it reads are Stripe's own.
"""

import time
from urllib.parse import parse_qs, urlparse

import pytest
import responses
from sqlalchemy import func, select

from billing_site.commands import parse_window
from billing_site.extensions import db as _db
from billing_site.models import CreditLot, Order, StripeEvent, User
from tests.factories import make_order, make_user
from tests.stripe_events import checkout_session, make_event, post_event

EVENTS_URL = "https://api.stripe.com/v1/events"


@pytest.fixture
def stripe_app(make_app):
    app = make_app(STRIPE_SECRET_KEY="sk_test_reconcile")
    with app.app_context():
        yield app
        _db.session.remove()


def event_list(events, has_more=False) -> dict:
    return {"object": "list", "data": events, "has_more": has_more, "url": "/v1/events"}


def reconcile(app, *args):
    return app.test_cli_runner().invoke(args=["reconcile", *args])


def fresh(model, key):
    _db.session.expire_all()
    return _db.session.get(model, key)


def paid_order_event():
    user = make_user()
    order = make_order(user, "pro")
    return user, order, make_event("checkout.session.completed", checkout_session(order))


def test_reconcile_applies_an_event_whose_webhook_never_arrived(stripe_app):
    user, order, event = paid_order_event()
    with responses.RequestsMock() as stripe_api:
        stripe_api.get(EVENTS_URL, json=event_list([event]))
        before = int(time.time())
        result = reconcile(stripe_app, "--since", "72h")

        query = parse_qs(urlparse(stripe_api.calls[0].request.url).query)
    assert result.exit_code == 0, result.output
    assert f"applied  {event['id']} checkout.session.completed: fulfilled" in result.output
    assert "1 event(s) from Stripe: 1 applied, 0 already done, 0 failed." in result.output
    assert abs(int(query["created[gte]"][0]) - (before - 72 * 3600)) <= 5
    assert fresh(User, user.id).balance == 100
    assert fresh(Order, order.id).status == "paid"
    assert fresh(StripeEvent, event["id"]).status == "processed"


def test_reconcile_skips_what_was_processed_and_never_grants_twice(stripe_app):
    user, _, event = paid_order_event()
    assert post_event(stripe_app.test_client(), event).status_code == 200
    with responses.RequestsMock() as stripe_api:
        stripe_api.get(EVENTS_URL, json=event_list([event]))
        result = reconcile(stripe_app)

    assert result.exit_code == 0, result.output
    assert f"skipped  {event['id']}" in result.output
    assert "0 applied, 1 already done" in result.output
    assert fresh(User, user.id).balance == 100
    assert _db.session.scalar(select(func.count()).select_from(CreditLot)) == 1


def test_reconcile_retries_a_failed_event(stripe_app, monkeypatch):
    from billing_site import credits

    user, _, event = paid_order_event()
    real_grant = credits.grant

    def failing_grant(*args, **kwargs):
        raise RuntimeError("ledger unavailable")

    monkeypatch.setattr(credits, "grant", failing_grant)
    assert not post_event(stripe_app.test_client(), event).applied_ok  # now retrying
    monkeypatch.setattr(credits, "grant", real_grant)

    with responses.RequestsMock() as stripe_api:
        stripe_api.get(EVENTS_URL, json=event_list([event]))
        result = reconcile(stripe_app, "--since", "30m")

    assert result.exit_code == 0, result.output
    assert "1 applied" in result.output
    assert fresh(User, user.id).balance == 100
    stored = fresh(StripeEvent, event["id"])
    assert (stored.status, stored.attempts) == ("processed", 2)


def test_reconcile_follows_pages_and_reports_failures(stripe_app, monkeypatch):
    user, order, paid = paid_order_event()
    now = int(time.time())
    unknown = make_event("plan.created", {"id": "plan_x", "object": "plan"}, created=now - 60)
    broken = make_event("checkout.session.completed", checkout_session(order), created=now - 30)
    paid["created"] = now - 10

    def page(request):
        query = parse_qs(urlparse(request.url).query)
        if "starting_after" not in query:
            return 200, {}, _json(event_list([paid, broken], has_more=True))
        assert query["starting_after"] == [broken["id"]]
        return 200, {}, _json(event_list([unknown]))

    from billing_site import fulfilment

    def fail_for(session, *, stripe_event_id=None):
        if stripe_event_id == broken["id"]:
            raise RuntimeError("boom")
        return real(session, stripe_event_id=stripe_event_id)

    real = fulfilment.fulfil_checkout_session
    monkeypatch.setattr(fulfilment, "fulfil_checkout_session", fail_for)
    with responses.RequestsMock() as stripe_api:
        stripe_api.add_callback(responses.GET, EVENTS_URL, callback=page)
        result = reconcile(stripe_app, "--since", "2d")

    assert result.exit_code == 1
    lines = result.output.splitlines()
    # Oldest first, whatever order the pages came in.
    assert [line.split()[1] for line in lines[:3]] == [unknown["id"], broken["id"], paid["id"]]
    assert lines[0].startswith("applied ") and "ignored" in lines[0]
    assert lines[1].startswith("failed ") and "boom" in lines[1]
    assert "3 event(s) from Stripe: 2 applied, 0 already done, 1 failed." in result.output
    assert fresh(User, user.id).balance == 100


def test_reconcile_says_so_when_stripe_cannot_be_reached(stripe_app):
    with responses.RequestsMock() as stripe_api:
        stripe_api.get(EVENTS_URL, body=ConnectionError("network down"))
        result = reconcile(stripe_app, "--since", "1h")

    assert result.exit_code == 1
    assert "Could not list Stripe's events" in result.output
    assert "Traceback" not in result.output


def test_reconcile_rejects_a_window_it_cannot_read(stripe_app):
    result = reconcile(stripe_app, "--since", "yesterday")
    assert result.exit_code == 2
    assert "not a window like 30m, 72h or 2d" in result.output


@pytest.mark.parametrize(
    ("text", "seconds"), [("30m", 1800), ("72h", 259200), ("2d", 172800), (" 5h ", 18000)]
)
def test_windows_are_read_in_minutes_hours_or_days(text, seconds):
    assert parse_window(text) == seconds


@pytest.mark.parametrize("text", ["", "0h", "5", "5w", "-1h", "h"])
def test_windows_that_are_not_windows_are_refused(text):
    with pytest.raises(ValueError):
        parse_window(text)


def _json(body) -> str:
    import json

    return json.dumps(body)
