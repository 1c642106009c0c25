"""Development only: the local test checkout, billing portal and renewal controls.

Registered only when the gateway is the local stand-in (no STRIPE_SECRET_KEY,
never in production). These pages play Stripe's part: every button changes the
local Stripe state and announces it by a signed webhook to the site itself, so
the site's own code path is the production one.
"""

import secrets
from datetime import UTC, datetime

from flask import Blueprint, abort, flash, redirect, render_template, request

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
    session = checkout_session_or_404(session_id)
    items = current_gateway().list_checkout_line_items(session_id)
    return render_template("dev/checkout.html", session=session, items=items)


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
    subscriptions = current_gateway().list_subscriptions(customer_id=portal_session["customer"])
    return render_template(
        "dev/portal.html", portal=portal_session, subscriptions=subscriptions, as_date=as_date
    )


def as_date(timestamp: int | None) -> str:
    if not timestamp:
        return "—"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%d %b %Y")


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
