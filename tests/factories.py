"""Plain functions that put rows in the database for a test to stand on."""

import itertools

from werkzeug.security import generate_password_hash

from billing_site.catalog import load_catalog
from billing_site.extensions import db
from billing_site.models import Order, User, utcnow
from tests.conftest import TEST_PASSWORD

_numbers = itertools.count(1)
# Hashing at full strength costs ~50 ms a user; tests make many users.
_FAST_HASH = generate_password_hash(TEST_PASSWORD, method="pbkdf2:sha256:1000")


def make_user(email: str | None = None, *, is_admin: bool = False, **fields) -> User:
    """A committed user whose password is TEST_PASSWORD (email verified unless told)."""
    fields.setdefault("email_verified_at", utcnow())
    user = User(
        email=email or f"user{next(_numbers)}@example.com",
        password_hash=_FAST_HASH,
        is_admin=is_admin,
        **fields,
    )
    db.session.add(user)
    db.session.commit()
    return user


def log_in(client, user: User) -> None:
    """Log `client` in as `user` without the form (for tests about something else)."""
    with client.session_transaction() as session:
        session["_user_id"] = user.get_id()
        session["_fresh"] = True


def make_order(user: User, item_id: str = "pro", *, kind: str = "pack", **fields) -> Order:
    """A committed pending order for a catalog item, with a Checkout Session id."""
    catalog = load_catalog()
    item = catalog.pack(item_id) if kind == "pack" else catalog.tier(item_id)
    fields.setdefault("checkout_session_id", f"cs_test_{next(_numbers):06d}")
    order = Order(
        user_id=user.id,
        kind=kind,
        item_id=item_id,
        amount_cents=item.price_cents,
        currency=catalog.currency,
        credits=item.credits if kind == "pack" else item.credits_per_month,
        **fields,
    )
    db.session.add(order)
    db.session.commit()
    return order


def make_subscription(user: User, tier: str = "basic", status: str = "active", **fields):
    """A committed Subscription row, as the webhook would have left it."""
    from datetime import timedelta

    from billing_site.models import Subscription, utcnow

    now = utcnow()
    subscription = Subscription(
        user_id=user.id,
        stripe_subscription_id=fields.pop("stripe_subscription_id", f"sub_test_{user.id}"),
        stripe_customer_id=fields.pop("stripe_customer_id", f"cus_test_{user.id}"),
        tier=tier,
        status=status,
        current_period_start=fields.pop("current_period_start", now - timedelta(days=3)),
        current_period_end=fields.pop("current_period_end", now + timedelta(days=27)),
        **fields,
    )
    db.session.add(subscription)
    db.session.commit()
    return subscription


def make_paid_order(user: User, item_id: str = "pro", **fields) -> Order:
    """A committed pack order as a paid checkout leaves it: Stripe ids set, credits granted."""
    from billing_site.fulfilment import grant_pack_credits
    from billing_site.models import utcnow

    order = make_order(user, item_id, **fields)
    order.status = "paid"
    order.payment_intent_id = order.payment_intent_id or f"pi_test_order_{order.id}"
    order.charge_id = order.charge_id or f"ch_test_order_{order.id}"
    order.paid_at = utcnow()
    grant_pack_credits(order)
    db.session.commit()
    return order


def make_customer(
    app, balance: int = 0, tier: str | None = None, status: str = "active", **subscription
) -> int:
    """A committed customer's id, with `balance` admin-granted credits and optionally a plan."""
    from billing_site import credits

    with app.app_context():
        user = make_user()
        if tier:
            make_subscription(user, tier=tier, status=status, **subscription)
        if balance:
            credits.grant(
                user.id, balance, source="admin", source_ref=f"test-{user.id}", expires_at=None
            )
            db.session.commit()
        return user.id


def logged_in(client, app, user_id: int) -> None:
    """Log `client` in as the user with `user_id` (outside any app context)."""
    with app.app_context():
        log_in(client, db.session.get(User, user_id))


def verification_path(client) -> str:
    """The path of the link the last verification email carries (its text, as a reader sees it).

    Read from the outbox, as a person reads their inbox: the link is never logged.
    """
    import re

    from sqlalchemy import select

    from billing_site.models import OutboundEmail

    with client.application.app_context():
        email = db.session.scalars(
            select(OutboundEmail)
            .where(OutboundEmail.kind == "verify_email")
            .order_by(OutboundEmail.id.desc())
        ).first()
        return re.search(r"https?://[^/\s]+(/auth/verify/\S+)", email.text_body).group(1)
