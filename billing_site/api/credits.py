"""Who am I, can I generate, what have I used: /me, /credits/check, /usage, /ledger."""

from flask import current_app, jsonify, url_for
from flask_login import current_user
from sqlalchemy import select

from billing_site import credits as ledger
from billing_site.account import services as account
from billing_site.api.blueprint import require_customer, require_scope, route
from billing_site.api.idempotency import idempotent
from billing_site.api.shapes import (
    ApiError,
    iso,
    json_body,
    keyset,
    money,
    optional_int,
    optional_string,
    page_args,
    page_json,
)
from billing_site.catalog import Catalog, current_catalog
from billing_site.generate import services as generation
from billing_site.generate.routes import free_tries_left
from billing_site.models import LedgerEntry, User, utcnow

MAX_CHECK_COUNT = 1000


@route("/v1/me")
def me():
    user = require_customer()
    require_scope("read")
    account.touch_month(user)
    tier = account.tier_of(user)
    return jsonify(
        {
            "id": user.id,
            "email": user.email,
            "is_admin": user.is_admin,
            "balance": ledger.current_balance(user.id),
            "plan": {"id": tier.id, "name": tier.name},
            "unlimited": tier.is_unlimited,
            "created_at": iso(user.created_at),
        }
    )


@route("/v1/credits/check", methods=("POST",))
@idempotent
def check():
    data = json_body()
    catalog = current_catalog()
    model_id = optional_string(data, "model", 20) or catalog.models[0].id
    model = catalog.model(model_id)
    if model is None:
        names = ", ".join(m.id for m in catalog.models)
        raise ApiError(422, "validation_error", f"Choose one of the models: {names}.", "model")
    count = optional_int(data, "count") or 1
    if count > MAX_CHECK_COUNT:
        raise ApiError(422, "validation_error", f"count is at most {MAX_CHECK_COUNT}.", "count")
    if current_user.is_authenticated:
        require_scope("read")
        return jsonify(customer_check(current_user._get_current_object(), model, count, catalog))
    return jsonify(visitor_check(model, count, catalog))


def customer_check(user: User, model, count: int, catalog: Catalog) -> dict:
    result = generation.check_credit(user, model, count)
    tier = account.tier_of(user)
    body = {
        "has_credit": result.has_credit,
        "balance": ledger.current_balance(user.id),
        "cost": result.cost,
        "unlimited": tier.is_unlimited,
        "free_uses_remaining": free_credits_left(user),
        "plan": tier.id,
        "reason": result.reason,
        "purchase_required": result.reason == "insufficient_credits",
        "suggested_purchase": None,
    }
    if result.reason == "insufficient_credits":
        body["suggested_purchase"] = suggested_pack(result.shortfall, catalog)
    elif result.reason == "model_not_in_tier":
        body["suggested_purchase"] = suggested_plan(model.id, catalog)
    return body


def visitor_check(model, count: int, catalog: Catalog) -> dict:
    free_left = free_tries_left()
    result = generation.check_visitor(model, count, free_left)
    return {
        "has_credit": result.has_credit,
        "balance": 0,
        "cost": 0,
        "unlimited": False,
        "free_uses_remaining": free_left,
        "plan": None,
        "reason": result.reason,
        # A visitor cannot buy: signing up comes first (with its free credits).
        "purchase_required": False,
        "signup_required": not result.has_credit,
        "signup_url": url_for("auth.signup", _external=True),
        "daily_free_uses": current_app.config["ANONYMOUS_DAILY_LIMIT"],
        "suggested_purchase": None,
    }


def free_credits_left(user: User) -> int:
    """What is left of this month's free credits (0 on a paid plan)."""
    lot = ledger.find_lot("free", account.free_allowance_ref(user.id, utcnow()))
    return max(lot.credits_remaining, 0) if lot is not None and lot.is_live(utcnow()) else 0


def suggested_pack(shortfall: int, catalog: Catalog) -> dict:
    """The smallest pack that covers the shortfall (the largest if none does)."""
    packs = sorted(catalog.packs, key=lambda pack: pack.credits)
    pack = next((p for p in packs if p.credits >= shortfall), packs[-1])
    return {
        "kind": "pack",
        "id": pack.id,
        "name": pack.name,
        "credits": pack.credits,
        "price": money(pack.price_cents, catalog.currency),
    }


def suggested_plan(model_id: str, catalog: Catalog) -> dict | None:
    """The cheapest plan that includes the model."""
    plans = sorted((t for t in catalog.tiers if model_id in t.models), key=lambda t: t.price_cents)
    if not plans:
        return None
    tier = plans[0]
    return {
        "kind": "plan",
        "id": tier.id,
        "name": tier.name,
        "allowance": None if tier.is_unlimited else tier.credits_per_month,
        "unlimited": tier.is_unlimited,
        "price": money(tier.price_cents, catalog.currency),
    }


@route("/v1/usage")
@route("/v1/account/usage")
def usage():
    user = require_customer()
    require_scope("read")
    account.touch_month(user)
    current, chart = account.usage_with_chart(user)  # as the account page reads it
    tier = current.tier
    return jsonify(
        {
            "plan": tier.id,
            "balance": current.balance,
            "used": current.credits_used,
            "generations": current.generations,
            "allowance": None if tier.is_unlimited else tier.credits_per_month,
            "unlimited": tier.is_unlimited,
            "percentage": current.usage_percentage,
            "period_start": iso(current.period.start),
            "period_end": iso(current.period.end),
            "has_credit": current.has_credit,
            "purchase_required": not current.has_credit,
            "per_day": [{"date": bar.day.isoformat(), "count": bar.count} for bar in chart.bars],
        }
    )


@route("/v1/ledger")
def ledger_entries():
    user = require_customer()
    require_scope("read")
    cursor, limit = page_args()
    statement = select(LedgerEntry).where(LedgerEntry.user_id == user.id)
    entries, has_more = keyset(statement, LedgerEntry.id, cursor, limit)
    return jsonify(page_json(entries, has_more, entry_json))


def entry_json(entry: LedgerEntry) -> dict:
    return {
        "id": entry.id,
        "kind": entry.kind,
        "delta": entry.delta,
        "balance_after": entry.balance_after,
        "reference": entry.reference,
        "note": entry.note,
        "payment_id": entry.order_id,
        "created_at": iso(entry.created_at),
    }
