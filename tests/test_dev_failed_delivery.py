"""Issue 13.14: the local portal's "Fail the next delivery", then the retry and the replay.

Offline, the stand-in delivers and the worker's own step applies; this control
makes the next delivered event fail its first attempt, so an admin can watch it
retrying, see the worker's retry apply it, and replay it ("no change").
"""

from sqlalchemy import select

from billing_site.models import CreditLot, StripeEvent
from tests.admin_actions import admin_client
from tests.factories import log_in, make_user
from tests.stripe_events import drain_inbox
from tests.test_local_checkout import csrf, open_portal, portal_action, subscribe


def test_a_failed_delivery_is_retrying_then_applied_by_the_retry_and_replayable(app, db, client):
    log_in(client, make_user("local@example.com"))
    subscription = subscribe(client, db)
    portal_path = open_portal(client)
    assert "Fail the next delivery" in client.get(portal_path).get_data(as_text=True)
    session = portal_path.split("session=")[1]

    armed = client.post(
        f"/dev/portal/fail-next-delivery?session={session}",
        data={"csrf_token": csrf(client, portal_path)},
        follow_redirects=True,
    )
    assert "will fail its first attempt" in armed.get_data(as_text=True)
    portal_action(client, portal_path, subscription, "renew")

    db.session.expire_all()
    failed = db.session.scalars(select(StripeEvent).where(StripeEvent.status != "processed")).all()
    assert [(e.status, e.attempts) for e in failed] == [("retrying", 1)]
    assert "on purpose" in failed[0].error
    admin, _ = admin_client(app)
    listing = admin.get("/admin/events", query_string={"status": "retrying"})
    assert failed[0].id in listing.get_data(as_text=True)

    retried = drain_inbox(app, now=failed[0].next_attempt_at)  # the worker, 30 s later

    assert [(r.event_id, r.ok) for r in retried] == [(failed[0].id, True)]
    db.session.expire_all()
    assert db.session.get(StripeEvent, failed[0].id).status == "processed"
    monthly = db.session.scalars(select(CreditLot).where(CreditLot.source == "monthly")).all()
    assert len(monthly) == 2  # the renewal's grant arrived through the retry, once
    page = admin.get(f"/admin/events/{failed[0].id}").get_data(as_text=True)
    token = page.split('name="csrf_token" value="')[1].split('"')[0]
    replayed = admin.post(
        f"/admin/events/{failed[0].id}/replay", data={"csrf_token": token}, follow_redirects=True
    )
    assert "(no change)" in replayed.get_data(as_text=True)
