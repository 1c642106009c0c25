"""Buying and what was paid: POST /api/v1/checkout, GET /api/v1/payments[/<id>].

A payment is an `orders` row (one per Stripe charge); `amount` is what Stripe
actually took. The old /api/v1/stripe/checkout and /api/v1/orders/<id> stay as aliases.
"""

from flask import current_app, jsonify, url_for
from sqlalchemy import select

from billing_site import books
from billing_site.account.services import RECEIPT_STATUSES
from billing_site.api.blueprint import require_customer, require_scope, route
from billing_site.api.idempotency import idempotent
from billing_site.api.shapes import (
    ApiError,
    from_unix,
    iso,
    json_body,
    keyset,
    money,
    page_args,
    page_json,
)
from billing_site.catalog import current_catalog
from billing_site.checkout import services
from billing_site.checkout.routes import limit_checkout_starts
from billing_site.models import Order


@route("/v1/checkout", methods=("POST",))
@route("/v1/stripe/checkout", methods=("POST",))
@idempotent
@limit_checkout_starts
def checkout():
    user = require_customer()
    require_scope("write")
    start, item_id = checkout_start(json_body())
    try:
        started = start(user, item_id)
    except services.UnknownItem:
        raise ApiError(404, "unknown_item", f"We do not sell {item_id!r}.", "item") from None
    except services.CheckoutFailed as error:
        raise ApiError(502, "payment_provider_error", error.message) from error
    if started.session is None:
        # Already subscribed: plan changes go through the billing portal.
        raise ApiError(
            409,
            "already_subscribed",
            "You already have a plan; change it in the billing portal.",
            portal_url=started.url,
        )
    expires_at = started.session.get("expires_at")
    body = {
        "checkout_url": started.url,
        "session_id": started.session["id"],
        "expires_at": from_unix(expires_at),
        "payment_id": started.order.id,
    }
    return jsonify(body), 201


def checkout_start(data: dict):
    """The service for {"pack": id} or {"plan": id} (and the old {"package_id": id})."""
    chosen = {name: data[name] for name in ("pack", "plan", "package_id") if name in data}
    if len(chosen) != 1:
        raise ApiError(422, "validation_error", 'Send exactly one of "pack" or "plan".', "pack")
    [(name, item_id)] = chosen.items()
    if not isinstance(item_id, str) or not item_id:
        raise ApiError(422, "validation_error", f"{name} must be a pack or plan id.", name)
    if name == "plan":
        return services.start_plan_checkout, item_id
    return services.start_pack_checkout, item_id


@route("/v1/payments", endpoint="list_payments")
def list_payments():
    user = require_customer()
    require_scope("read")
    cursor, limit = page_args()
    rows, has_more = keyset(select(Order).where(Order.user_id == user.id), Order.id, cursor, limit)
    return jsonify(page_json(rows, has_more, payment_json))


@route("/v1/payments/<int:payment_id>")
@route("/v1/orders/<int:payment_id>")
def get_payment(payment_id: int):
    user = require_customer()
    require_scope("read")
    order = services.find_order_for(user, payment_id)
    if order is None:
        # Someone else's payment looks exactly like a missing one.
        raise ApiError(404, "not_found", "No such payment.")
    return jsonify(payment_json(order))


def payment_json(order: Order) -> dict:
    return {
        "id": order.id,
        "status": order.status,
        "kind": order.kind,
        "item": {"id": order.item_id, "name": item_name(order)},
        "description": books.payment_label(order),
        # What Stripe actually took; subtotal, discount and tax as Stripe reported them.
        "amount": money(order.amount_cents, order.currency),
        "amount_subtotal": money(order.amount_subtotal_cents, order.currency)
        if order.amount_subtotal_cents is not None
        else None,
        "amount_discount": money(order.amount_discount_cents or 0, order.currency),
        "amount_tax": money(order.amount_tax_cents or 0, order.currency),
        "promotion_code": order.promotion_code,
        "amount_refunded": money(order.amount_refunded_cents, order.currency),
        "period_start": iso(order.period_start),
        "period_end": iso(order.period_end),
        "credits": None if order.credits < 0 else order.credits,
        "unlimited": order.credits < 0,
        "created_at": iso(order.created_at),
        "paid_at": iso(order.paid_at),
        "receipt_url": receipt_url(order),
        "stripe_receipt_url": order.receipt_url,
        "hosted_invoice_url": order.hosted_invoice_url,
        "failure_reason": order.failure_reason,
    }


def item_name(order: Order) -> str:
    catalog = current_catalog()
    item = catalog.pack(order.item_id) if order.kind == "pack" else catalog.tier(order.item_id)
    return item.name if item is not None else order.item_id


def receipt_url(order: Order) -> str | None:
    if order.status not in RECEIPT_STATUSES:
        return None
    path = url_for("account.receipt", order_id=order.id)
    return current_app.config["SITE_URL"] + path
