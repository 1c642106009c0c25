"""Development only: the local test checkout, billing portal and renewal controls.

Registered only when the gateway is the local stand-in (no STRIPE_SECRET_KEY,
never in production). These pages play Stripe's part: every button changes the
local Stripe state and announces it by a signed webhook to the site itself, so
the site's own code path is the production one.
"""

import secrets
from datetime import UTC, datetime

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for

from billing_site import formatting, stripe_catalog
from billing_site.catalog import current_catalog
from billing_site.stripe_gateway import GatewayError, current_gateway

bp = Blueprint("dev", __name__, url_prefix="/dev")

SUBSCRIPTION_ACTIONS = {
    "cancel": "Set to cancel at the end of the period.",
    "resume": "The subscription will renew as usual.",
    "renew": "Advanced to the next period.",
    "fail-renewal": "The renewal payment failed; the subscription is past due.",
    "retry": "The unpaid invoice was paid.",
}


def checkout_session_or_404(session_id: str) -> dict:
    try:
        return current_gateway().retrieve_checkout_session(session_id)
    except GatewayError:
        abort(404, description="There is no test checkout by that id.")


@bp.get("/checkout/<session_id>")
def checkout(session_id: str):
    return _checkout_page(checkout_session_or_404(session_id))


def _checkout_page(session: dict, status: int = 200, **context):
    items = current_gateway().list_checkout_line_items(session["id"])
    return render_template("dev/checkout.html", session=session, items=items, **context), status


@bp.post("/checkout/<session_id>/promotion")
def apply_promotion(session_id: str):
    session = checkout_session_or_404(session_id)
    try:
        current_gateway().apply_promotion_code(session_id, request.form.get("code", ""))
    except GatewayError as error:
        return _checkout_page(session, 422, promotion_error=error.message)
    return redirect(url_for("dev.checkout", session_id=session_id), code=303)


@bp.post("/checkout/<session_id>/pay")
def pay(session_id: str):
    session = checkout_session_or_404(session_id)
    try:
        current_gateway().pay_checkout_session(session_id)
    except GatewayError as error:
        return render_template("dev/checkout_closed.html", message=error.message), 409
    # Stripe fills the placeholder in success_url with the session id.
    success_url = session["success_url"].replace("{CHECKOUT_SESSION_ID}", session_id)
    return redirect(success_url, code=303)


@bp.post("/checkout/<session_id>/decline")
def decline(session_id: str):
    session = checkout_session_or_404(session_id)
    try:
        current_gateway().decline_checkout_session(session_id)
    except GatewayError as error:
        return render_template("dev/checkout_closed.html", message=error.message), 409
    return render_template("dev/declined.html", session=session), 402


@bp.get("/portal")
def portal():
    portal_session = portal_session_or_404()
    gateway = current_gateway()
    customer = portal_session["customer"]
    charges = [c for c in gateway.list_charges(created_since=0) if c["customer"] == customer]
    charge_ids = {c["id"] for c in charges}
    disputes = [d for d in gateway.list_disputes(created_since=0) if d["charge"] in charge_ids]
    return render_template(
        "dev/portal.html",
        portal=portal_session,
        subscriptions=gateway.list_subscriptions(customer_id=customer),
        charges=charges,
        disputes=disputes,
        tiers=[t for t in current_catalog().tiers if not t.is_free],
        tier_of_price=stripe_catalog.tier_of_price,
        as_date=as_date,
    )


def as_date(timestamp: int | None) -> str:
    return formatting.date(datetime.fromtimestamp(timestamp, UTC) if timestamp else None)


@bp.post("/portal/subscriptions/<subscription_id>/<action>")
def subscription_action(subscription_id: str, action: str):
    if action not in SUBSCRIPTION_ACTIONS:
        abort(404)
    portal_session = portal_session_or_404()
    subscription = owned_subscription_or_404(portal_session, subscription_id)
    try:
        apply_subscription_action(subscription["id"], action)
    except GatewayError as error:
        return render_template("dev/checkout_closed.html", message=error.message), 409
    return redirect(portal_session["url"], code=303)


@bp.post("/portal/fail-next-delivery")
def fail_next_delivery():
    """The next webhook delivery's first attempt fails, so retry and replay can be seen."""
    portal_session = portal_session_or_404()
    current_gateway().fail_next_delivery()
    flash(
        "The next event delivered to the site will fail its first attempt: the worker "
        "retries it 30 s later, or an admin can replay it from Admin → Webhook events.",
        "info",
    )
    return redirect(portal_session["url"], code=303)


def apply_subscription_action(subscription_id: str, action: str) -> None:
    gateway = current_gateway()
    if action in ("cancel", "resume"):
        # Each click is its own request to Stripe, so each gets its own key.
        key = f"dev-portal-{subscription_id}-{action}-{secrets.token_hex(8)}"
        gateway.set_cancel_at_period_end(subscription_id, action == "cancel", idempotency_key=key)
    elif action == "retry":
        gateway.retry_latest_invoice(subscription_id)
    else:
        gateway.renew_subscription(subscription_id, succeed=action == "renew")


def portal_session_or_404() -> dict:
    """The portal session named in the request, if it is for the customer named."""
    portal_id = request.values.get("session", "")
    try:
        portal_session = current_gateway().retrieve_portal_session(portal_id)
    except GatewayError:
        abort(404, description="This billing portal link is not valid. Open it from your account.")
    customer = request.values.get("customer")
    if customer is not None and customer != portal_session["customer"]:
        abort(404, description="This billing portal link is not valid. Open it from your account.")
    return portal_session


def owned_subscription_or_404(portal_session: dict, subscription_id: str) -> dict:
    try:
        subscription = current_gateway().retrieve_subscription(subscription_id)
    except GatewayError:
        abort(404)
    if subscription["customer"] != portal_session["customer"]:
        abort(404)
    return subscription


# --- the portal's plan switch, and what happens "in the Stripe dashboard" -------------------


@bp.post("/portal/subscriptions/<subscription_id>/switch/<tier_id>")
def switch_plan(subscription_id: str, tier_id: str):
    """The billing portal's own plan switch: dearer now (prorated), cheaper at the renewal."""
    portal_session = portal_session_or_404()
    subscription = owned_subscription_or_404(portal_session, subscription_id)
    tier = current_catalog().tier(tier_id)
    price_id = stripe_catalog.checkout_price_id("tier", tier_id) if tier else None
    if tier is None or tier.is_free or not price_id:
        abort(404)
    try:
        _switch(subscription, tier.price_cents, price_id)
    except GatewayError as error:
        return render_template("dev/checkout_closed.html", message=error.message), 409
    return redirect(portal_session["url"], code=303)


def _switch(subscription: dict, new_amount: int, price_id: str) -> None:
    gateway = current_gateway()
    item = subscription["items"]["data"][0]
    key = f"dev-portal-switch-{subscription['id']}-{secrets.token_hex(8)}"
    if new_amount > item["price"]["unit_amount"]:
        change = {"items": [{"id": item["id"], "price": price_id}]}
        gateway.update_subscription(
            subscription["id"],
            {**change, "proration_behavior": "always_invoice"},
            idempotency_key=key,
        )
        return
    schedule_id = (
        subscription.get("schedule")
        or gateway.create_subscription_schedule(
            {"from_subscription": subscription["id"]}, idempotency_key=f"{key}-create"
        )["id"]
    )
    phases = [
        {
            "items": [{"price": item["price"]["id"], "quantity": 1}],
            "start_date": item["current_period_start"],
            "end_date": item["current_period_end"],
        },
        {"items": [{"price": price_id, "quantity": 1}]},
    ]
    gateway.update_subscription_schedule(
        schedule_id, {"phases": phases, "end_behavior": "release"}, idempotency_key=f"{key}-phases"
    )


CHARGE_ACTIONS = ("refund", "refund-half", "dispute")
DISPUTE_ACTIONS = ("win", "lose")


@bp.post("/portal/charges/<charge_id>/<action>")
def charge_action(charge_id: str, action: str):
    """A refund made in the Stripe dashboard, or the cardholder disputing the charge."""
    if action not in CHARGE_ACTIONS:
        abort(404)
    portal_session = portal_session_or_404()
    charge = _owned_charge_or_404(portal_session, charge_id)
    gateway = current_gateway()
    try:
        if action == "dispute":
            gateway.open_dispute(charge["id"])
        else:
            remaining = charge["amount"] - charge["amount_refunded"]
            amount = remaining // 2 if action == "refund-half" else None
            gateway.refund_in_dashboard(charge["id"], amount or None)
    except GatewayError as error:
        return render_template("dev/checkout_closed.html", message=error.message), 409
    return redirect(portal_session["url"], code=303)


@bp.post("/portal/disputes/<dispute_id>/<action>")
def dispute_action(dispute_id: str, action: str):
    if action not in DISPUTE_ACTIONS:
        abort(404)
    portal_session = portal_session_or_404()
    gateway = current_gateway()
    disputes = {d["id"]: d for d in gateway.list_disputes(created_since=0)}
    dispute = disputes.get(dispute_id)
    if dispute is None:
        abort(404)
    _owned_charge_or_404(portal_session, dispute["charge"])
    try:
        gateway.close_dispute(dispute_id, won=action == "win")
    except GatewayError as error:
        return render_template("dev/checkout_closed.html", message=error.message), 409
    return redirect(portal_session["url"], code=303)


def _owned_charge_or_404(portal_session: dict, charge_id: str) -> dict:
    charges = {c["id"]: c for c in current_gateway().list_charges(created_since=0)}
    charge = charges.get(charge_id)
    if charge is None or charge["customer"] != portal_session["customer"]:
        abort(404)
    return charge
