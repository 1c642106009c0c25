"""Starting a Stripe Checkout and confirming it on the success page.

The order is committed (pending) before Stripe is called, so a Checkout Session
can always be traced back to a row; the session's id is committed right after.
If Stripe fails, the order is marked failed with the reason and nothing was
charged; a retry makes a new order and a new session (the idempotency key is
the order's id, so retrying one order can never create two sessions).
"""

from dataclasses import dataclass

from flask import current_app, url_for
from sqlalchemy import select

from billing_site import fulfilment, metrics, stripe_catalog
from billing_site.account.services import current_subscription
from billing_site.catalog import Pack, Tier, current_catalog
from billing_site.extensions import db
from billing_site.models import Order, Subscription, User
from billing_site.stripe_gateway import GatewayError, current_gateway


class UnknownItem(LookupError):
    """No pack or paid tier by that id in the catalog."""


class CheckoutFailed(Exception):
    """Stripe refused or could not be reached; `message` is safe to show."""

    def __init__(self, message: str, order: Order | None = None):
        super().__init__(message)
        self.message = message
        self.order = order


@dataclass(frozen=True)
class CheckoutStart:
    """Where to send the customer: Stripe Checkout, or the billing portal."""

    url: str
    order: Order | None = None  # None when the customer goes to the portal instead
    session: dict | None = None


@dataclass(frozen=True)
class CheckoutOutcome:
    """What the success page shows for one order."""

    order: Order
    state: str  # "paid", "processing", "failed", "closed"

    @property
    def is_done(self) -> bool:
        return self.state != "processing"


# --- starting a checkout -------------------------------------------------------------


def find_pack(pack_id: str) -> Pack:
    pack = current_catalog().pack(pack_id)
    if pack is None:
        raise UnknownItem(pack_id)
    return pack


def find_paid_tier(tier_id: str) -> Tier:
    tier = current_catalog().tier(tier_id)
    if tier is None or tier.is_free:
        raise UnknownItem(tier_id)
    return tier


def start_pack_checkout(user: User, pack_id: str) -> CheckoutStart:
    """A pending order and a `mode=payment` Checkout Session for one credit pack."""
    pack = find_pack(pack_id)
    order = create_order(
        user, kind="pack", item_id=pack.id, amount=pack.price_cents, credits=pack.credits
    )
    return open_checkout_session(user, order, product_name=pack.name)


def start_plan_checkout(user: User, tier_id: str) -> CheckoutStart:
    """A subscription Checkout, or the billing portal for someone already subscribed."""
    tier = find_paid_tier(tier_id)
    subscription = current_subscription(user)
    if subscription is not None:
        # One live subscription per customer: changes go through the portal.
        return CheckoutStart(url=open_billing_portal(user, subscription))
    order = create_order(
        user,
        kind="subscription",
        item_id=tier.id,
        amount=tier.price_cents,
        credits=tier.credits_per_month,
    )
    return open_checkout_session(user, order, product_name=f"{tier.name} plan (monthly)")


def create_order(user: User, *, kind: str, item_id: str, amount: int, credits: int) -> Order:
    # Committed before Stripe is called: whatever happens next, the row exists
    # and the webhook can find it by the order id in the session's metadata.
    order = Order(
        user_id=user.id,
        kind=kind,
        item_id=item_id,
        amount_cents=amount,
        currency=current_catalog().currency,
        credits=credits,
        status="pending",
    )
    db.session.add(order)
    db.session.commit()
    return order


def open_checkout_session(user: User, order: Order, *, product_name: str) -> CheckoutStart:
    gateway = current_gateway()
    try:
        customer_id = ensure_stripe_customer(user)
        session = gateway.create_checkout_session(
            checkout_params(order, customer_id, product_name),
            idempotency_key=f"checkout-order-{order.id}",
        )
    except GatewayError as error:
        mark_order_failed(order, error.message)
        raise CheckoutFailed(error.message, order) from error
    order.checkout_session_id = session["id"]
    db.session.commit()
    metrics.CHECKOUTS_STARTED.labels(kind=order.kind).inc()
    return CheckoutStart(url=session["url"], order=order, session=session)


def ensure_stripe_customer(user: User) -> str:
    """The user's Stripe customer id, created (once, by idempotency key) if missing."""
    if user.stripe_customer_id:
        return user.stripe_customer_id
    customer = current_gateway().create_customer(email=user.email, user_id=user.id)
    user.stripe_customer_id = customer["id"]
    db.session.commit()
    return customer["id"]


def checkout_params(order: Order, customer_id: str, product_name: str) -> dict:
    """The Checkout Session parameters for `order`: prices come from our catalog only."""
    site = current_app.config["SITE_URL"]
    metadata = {"order_id": str(order.id), "user_id": str(order.user_id)}
    params = {
        "mode": "payment" if order.kind == "pack" else "subscription",
        "line_items": [_line_item(order, product_name)],
        "metadata": metadata,
        "client_reference_id": str(order.user_id),
        "customer": customer_id,
        # Built from configuration, never from the request: a forged Host header
        # must not be able to send a paying customer elsewhere.
        "success_url": site + "/checkout/success?session_id={CHECKOUT_SESSION_ID}",
        "cancel_url": site + "/checkout/cancel",
        "allow_promotion_codes": True,
    }
    if order.kind == "pack":
        # So payment_intent.payment_failed can name the order it failed for.
        params["payment_intent_data"] = {"metadata": metadata}
    else:
        params["subscription_data"] = {"metadata": {**metadata, "tier": order.item_id}}
    return params


def _line_item(order: Order, product_name: str) -> dict:
    """The catalog's Stripe Price for the item; inline price_data if Stripe has none matching."""
    kind = "pack" if order.kind == "pack" else "tier"
    price_id = stripe_catalog.checkout_price_id(kind, order.item_id)
    if price_id:
        return {"price": price_id, "quantity": 1}
    price_data = {
        "currency": order.currency,
        "unit_amount": order.amount_cents,
        "product_data": {"name": product_name},
    }
    if kind == "tier":
        price_data["recurring"] = {"interval": "month"}
    return {"price_data": price_data, "quantity": 1}


def mark_order_failed(order: Order, reason: str) -> None:
    db.session.rollback()
    order = db.session.get(Order, order.id)
    order.status = "failed"
    order.failure_reason = reason
    db.session.commit()


def open_billing_portal(user: User, subscription: Subscription | None = None) -> str:
    """The URL of a Stripe billing portal session for the user's customer."""
    customer_id = (subscription.stripe_customer_id if subscription else None) or (
        user.stripe_customer_id
    )
    if not customer_id:
        raise CheckoutFailed("We could not find your billing account. Please contact support.")
    try:
        portal = current_gateway().create_portal_session(
            customer_id=customer_id, return_url=return_url()
        )
    except GatewayError as error:
        raise CheckoutFailed(error.message) from error
    return portal["url"]


def return_url() -> str:
    names = current_app.view_functions
    endpoint = "account.dashboard" if "account.dashboard" in names else "pricing.index"
    return current_app.config["SITE_URL"] + url_for(endpoint)


# --- the success page ----------------------------------------------------------------


def find_own_order(user: User, session_id: str | None) -> Order | None:
    """The order behind a Checkout Session id, only if it is this user's."""
    if not session_id:
        return None
    order = db.session.execute(
        select(Order).where(Order.checkout_session_id == session_id)
    ).scalar_one_or_none()
    if order is None or order.user_id != user.id:
        return None
    return order


def confirm_checkout(user: User, session_id: str | None) -> CheckoutOutcome | None:
    """Fulfil the user's paid session if the webhook has not yet; None if not theirs.

    Uses the webhook's own idempotent fulfilment (the order is locked there), so
    the success page racing the webhook, or reloaded, grants once.
    """
    order = find_own_order(user, session_id)
    if order is None:
        return None
    # A failed order may still be paid: one card declined, the next one accepted.
    if order.status in ("pending", "failed"):
        fulfil_if_paid(order, session_id)
    return CheckoutOutcome(order=order, state=outcome_state(order))


def fulfil_if_paid(order: Order, session_id: str) -> None:
    if not _may_ask_stripe_about(session_id):
        return  # asked moments ago: show "processing"; the webhook still comes
    try:
        session = current_gateway().retrieve_checkout_session(session_id)
    except GatewayError:
        return  # Stripe is unreachable: show "processing"; the webhook still comes.
    if session.get("id") != session_id or not _metadata_matches(session, order):
        return
    fulfilment.fulfil_checkout_session(session)
    db.session.commit()
    db.session.refresh(order)


def _may_ask_stripe_about(session_id: str) -> bool:
    """At most one retrieve per session per few seconds, however often the page is loaded.

    Stripe's rate limit is per account: one customer reloading must not push
    everyone's checkouts into 429s.
    """
    from limits import parse

    from billing_site.extensions import limiter

    interval = current_app.config["CHECKOUT_RETRIEVE_INTERVAL_SECONDS"]
    if interval <= 0 or current_gateway().is_local:  # the stand-in has no rate limit
        return True
    try:
        return limiter.limiter.hit(
            parse(f"1 per {interval} seconds"), "stripe-retrieve", session_id
        )
    except Exception:  # limit storage down: ask Stripe (the route's own limit still holds)
        return True


def _metadata_matches(session: dict, order: Order) -> bool:
    # Belt and braces: the session id came from our own row, and Stripe echoes
    # the metadata we gave it, so a mismatch means it is not this order's.
    metadata = session.get("metadata") or {}
    return metadata.get("order_id") == str(order.id)


def outcome_state(order: Order) -> str:
    if order.status == "pending":
        return "processing"
    if order.status == "failed":
        return "failed"
    if order.status == "expired":
        return "closed"
    return "paid"  # paid, or paid and since refunded or disputed


# --- shared with the API (billing_site/api/payments.py) --------------------------------


def find_order_for(user: User, order_id: int) -> Order | None:
    """The user's own order; None for anyone else's (answered as a missing one)."""
    order = db.session.get(Order, order_id)
    return order if order is not None and order.user_id == user.id else None
