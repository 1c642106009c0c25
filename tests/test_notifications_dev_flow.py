"""The issue's "done when", as a new developer tries it with the local test checkout:
buy a pack, subscribe, fail a renewal and recover it, let credits near expiry, and
read each email at /dev/mail."""

import re
from datetime import timedelta

from sqlalchemy import select, update

from billing_site.models import CreditLot, OutboundEmail, utcnow
from tests.factories import log_in, make_user
from tests.test_local_checkout import (
    open_portal,
    path_of,
    portal_action,
    press,
    start_checkout,
    subscribe,
)


def outbox_rows(client) -> list[tuple[str, str]]:
    """(kind, subject) of each row of /dev/mail, oldest first."""
    page = client.get("/dev/mail").get_data(as_text=True)
    rows = re.findall(
        r'kind=([a-z_]+)">[a-z_]+</a></td>\s*<td><a href="/dev/mail/\d+">([^<]+)</a>', page
    )
    return list(reversed(rows))


def test_a_new_developer_sees_every_email_at_dev_mail(db, client, runner):
    user = make_user("newcomer@example.com")
    log_in(client, user)

    paid = press(client, start_checkout(client, "/checkout/pack/starter"), "pay")
    client.get(path_of(paid.headers["Location"]))
    subscription = subscribe(client, db)
    portal = open_portal(client)
    portal_action(client, portal, subscription, "fail-renewal")
    portal_action(client, portal, subscription, "retry")
    # A week later the pack's credits are nearly due to expire.
    db.session.execute(
        update(CreditLot)
        .where(CreditLot.source == "pack")
        .values(expires_at=utcnow() + timedelta(days=6))
    )
    db.session.commit()
    result = runner.invoke(args=["notify-expiring-credits"])

    assert result.exit_code == 0, result.output
    kinds = [kind for kind, _ in outbox_rows(client)]
    assert kinds[0] == "receipt"  # the pack
    assert "payment_failed" in kinds and "payment_recovered" in kinds
    assert kinds.index("payment_failed") < kinds.index("payment_recovered")
    assert kinds.count("receipt") >= 3  # pack, first month, the recovered renewal
    assert kinds[-1] == "credits_expiring"
    assert all(e.status == "stored" for e in db.session.scalars(select(OutboundEmail)))
    first = db.session.scalars(select(OutboundEmail).order_by(OutboundEmail.id)).first()
    assert "Starter" in client.get(f"/dev/mail/{first.id}.txt").get_data(as_text=True)
