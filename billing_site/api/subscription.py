"""The plan: GET/DELETE /api/v1/subscription, resume, the billing portal, saved cards.

Cancelling and resuming ask Stripe (account.services); the row changes when
Stripe's webhook confirms, so the answer says what is pending.
"""

from flask import current_app, jsonify, request, url_for

from billing_site.account import services as account
from billing_site.api.blueprint import require_customer, require_scope, route
from billing_site.api.idempotency import idempotent
from billing_site.api.shapes import ApiError, iso


@route("/v1/subscription")
def get_subscription():
    user = require_customer()
    require_scope("read")
    return jsonify(subscription_json(user))


@route("/v1/subscription", methods=("DELETE",), endpoint="cancel_subscription")
@idempotent
def cancel_subscription():
    user = require_customer()
    require_scope("write")
    if request.args.get("at_period_end", "true").lower() != "true":
        raise ApiError(
            422,
            "validation_error",
            "A plan ends at the end of its paid period: send at_period_end=true.",
            "at_period_end",
        )
    return change(user, cancel=True)


@route("/v1/subscription/resume", methods=("POST",))
@idempotent
def resume_subscription():
    user = require_customer()
    require_scope("write")
    return change(user, cancel=False)


def change(user, cancel: bool):
    try:
        pending = account.set_cancel_at_period_end(user, cancel)
    except account.SelfServiceError as error:
        code = "no_subscription" if error.status == 409 else "payment_provider_error"
        raise ApiError(error.status, code, error.message) from error
    body = subscription_json(user)
    body.update(
        cancel_at_period_end=pending.cancel_at_period_end,
        current_period_end=iso(pending.period_end),
        pending_change=pending_change(pending.cancel_at_period_end, pending.period_end),
        confirmed=False,  # Stripe accepted it; the webhook will confirm it
    )
    return jsonify(body), 202


def subscription_json(user) -> dict:
    subscription = account.current_subscription(user)
    usage = account.usage(user)
    tier = usage.tier
    remaining = None if tier.is_unlimited else max(tier.credits_per_month - usage.credits_used, 0)
    period_end = subscription.current_period_end if subscription else usage.period.end
    cancelling = bool(subscription and subscription.cancel_at_period_end)
    return {
        "tier": {"id": tier.id, "name": tier.name},
        "status": subscription.status if subscription else "free",
        "allowance": None if tier.is_unlimited else tier.credits_per_month,
        "allowance_remaining": remaining,
        "unlimited": tier.is_unlimited,
        "current_period_end": iso(period_end),
        "cancel_at_period_end": cancelling,
        "pending_change": pending_change(cancelling, period_end),
        "features": list(tier.features),
    }


def pending_change(cancelling: bool, period_end) -> dict | None:
    if not cancelling:
        return None
    return {"type": "cancel", "effective_at": iso(period_end), "to_tier": "free"}


@route("/v1/billing-portal", methods=("POST",))
@idempotent
def billing_portal():
    user = require_customer()
    require_scope("write")
    return_url = current_app.config["SITE_URL"] + url_for("account.dashboard")
    try:
        url = account.portal_url(user, return_url)
    except account.SelfServiceError as error:
        code = "no_billing_account" if error.status == 409 else "payment_provider_error"
        raise ApiError(error.status, code, error.message) from error
    return jsonify({"url": url}), 201


@route("/v1/payment-methods")
def payment_methods():
    user = require_customer()
    require_scope("read")
    try:
        cards = account.saved_cards(user)
    except account.SelfServiceError as error:
        raise ApiError(error.status, "payment_provider_error", error.message) from error
    return jsonify({"data": [card_json(card) for card in cards]})


def card_json(card: account.SavedCard) -> dict:
    return {
        "id": card.id,
        "brand": card.brand,
        "last4": card.last4,
        "exp_month": card.exp_month,
        "exp_year": card.exp_year,
        "default": card.default,
    }
