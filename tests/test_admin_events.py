"""Webhook events in the console: the list, the queue, one event's payload, and replays."""

from datetime import UTC, datetime

from sqlalchemy import select

from billing_site.extensions import db
from billing_site.models import AuditLog, StripeEvent
from tests.admin_actions import admin_client, inside, order_state, paid_order
from tests.conftest import csrf_token_from
from tests.stripe_events import make_event, post_event, stripe_object


def store_failed_event(
    app, event: dict, error: str = "OperationalError: server closed", status: str = "retrying"
) -> None:
    """An event whose first processing failed (the database went away mid-handler)."""
    with inside(app):
        db.session.add(
            StripeEvent(
                id=event["id"],
                type=event["type"],
                object_id=event["data"]["object"]["id"],
                created=datetime.fromtimestamp(event["created"], UTC),
                payload=event,
                status=status,
                error=error,
                attempts=1,
                next_attempt_at=datetime(2030, 1, 1, tzinfo=UTC) if status == "retrying" else None,
            )
        )
        db.session.commit()


def refund_event(order_id: int, amount_refunded: int) -> dict:
    charge = stripe_object(
        "charge",
        id=f"ch_test_order_{order_id}",
        payment_intent=f"pi_test_order_{order_id}",
        amount=2000,
        amount_refunded=amount_refunded,
    )
    return make_event("charge.refunded", charge)


def replay(client, event_id: str):
    page = client.get(f"/admin/events/{event_id}").get_data(as_text=True)
    return client.post(
        f"/admin/events/{event_id}/replay", data={"csrf_token": csrf_token_from(page)}
    )


def test_events_are_listed_with_status_and_error_and_filtered(app, client):
    order_id, _ = paid_order(app)
    post_event(client, refund_event(order_id, 500))
    store_failed_event(app, refund_event(order_id, 1000))
    admin, _ = admin_client(app)
    everything = admin.get("/admin/events").get_data(as_text=True)
    assert everything.count("charge.refunded") >= 2
    assert "processed" in everything and "retrying" in everything
    assert "1 Jan 2030, 00:00 UTC" in everything  # a retrying event's next attempt
    failed = admin.get("/admin/events", query_string={"status": "retrying"}).get_data(as_text=True)
    assert "OperationalError: server closed" in failed
    assert "processed" not in failed.split('id="events-results"')[1]
    by_type = admin.get("/admin/events", query_string={"type": "invoice"}).get_data(as_text=True)
    assert "No events match." in by_type


def test_an_event_page_shows_its_payload_as_json(app):
    order_id, _ = paid_order(app)
    event = refund_event(order_id, 1000)
    store_failed_event(app, event)
    admin, _ = admin_client(app)
    html = admin.get(f"/admin/events/{event['id']}").get_data(as_text=True)
    assert '<pre class="payload" id="event-payload">{\n  &#34;api_version&#34;' in html
    assert f"ch_test_order_{order_id}" in html
    assert "Replay this event" in html
    assert admin.get("/admin/events/evt_no_such_event").status_code == 404


def test_replaying_a_failed_event_applies_it_once_and_is_audited(app):
    order_id, _ = paid_order(app)
    event = refund_event(order_id, 1000)
    store_failed_event(app, event)
    admin, admin_id = admin_client(app)
    response = replay(admin, event["id"])
    assert response.status_code == 303
    page = admin.get(response.headers["Location"]).get_data(as_text=True)
    assert "Replayed: applied" in page
    state = order_state(app, order_id)
    assert state["ledger"] == [("grant", 100), ("clawback", -50)]
    # A processed event can be replayed too: it changes nothing, and says so.
    again = admin.post(
        f"/admin/events/{event['id']}/replay", data={"csrf_token": csrf_token_from(page)}
    )
    assert "(no change)" in admin.get(again.headers["Location"]).get_data(as_text=True)
    assert order_state(app, order_id)["ledger"] == [("grant", 100), ("clawback", -50)]
    with inside(app) as session:
        stored = session.get(StripeEvent, event["id"])
        assert (stored.status, stored.attempts) == ("processed", 3)
        audit = session.scalars(select(AuditLog)).all()
        assert [(a.action, a.admin_id, a.target_id) for a in audit] == [
            ("event.replay", admin_id, event["id"]),
            ("event.replay", admin_id, event["id"]),
        ]


def test_a_replay_that_fails_again_says_so_and_keeps_retrying(app, client):
    broken = make_event("charge.dispute.created", {"object": "dispute", "status": "lost"})
    assert not post_event(client, broken).applied_ok
    admin, _ = admin_client(app)
    response = replay(admin, broken["id"])
    page = admin.get(response.headers["Location"]).get_data(as_text=True)
    assert "failed again" in page
    with inside(app) as session:
        stored = session.get(StripeEvent, broken["id"])
        assert (stored.status, stored.attempts) == ("retrying", 2)
        assert session.scalar(select(AuditLog.action)) == "event.replay"


def test_a_dead_event_is_counted_on_the_overview_and_replayable(app, client):
    order_id, _ = paid_order(app)
    event = refund_event(order_id, 1000)
    store_failed_event(app, event, status="dead")
    admin, _ = admin_client(app)
    overview = admin.get("/admin/").get_data(as_text=True)
    assert '<p class="stat-number" id="dead-events">' in overview
    assert 'status=dead">1</a>' in overview
    response = replay(admin, event["id"])
    assert "Replayed: applied" in admin.get(response.headers["Location"]).get_data(as_text=True)
    assert order_state(app, order_id)["ledger"] == [("grant", 100), ("clawback", -50)]


def test_the_overview_shows_the_queue_depth_and_the_oldest_waiting_event(app, client):
    order_id, _ = paid_order(app)
    for amount in (500, 1000):
        post_event(client, refund_event(order_id, amount), apply=False)  # no worker ran yet
    admin, _ = admin_client(app)
    overview = admin.get("/admin/").get_data(as_text=True)
    assert 'status=queued">2</a>' in overview
    assert "oldest waiting 0 s" in overview or "oldest waiting 1 s" in overview
    queued = admin.get("/admin/events", query_string={"status": "queued"}).get_data(as_text=True)
    assert queued.split('id="events-results"')[1].count("charge.refunded") == 2
