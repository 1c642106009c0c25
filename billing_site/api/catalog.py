"""GET /api/v1/catalog (packs, tiers, models) and /api/v1/stripe/config.

The old /api/v1/stripe/packages and /api/v1/subscriptions/tiers stay as aliases
that answer their part of the catalog, in the same shape.
"""

from decimal import Decimal

from flask import current_app, jsonify

from billing_site.api.blueprint import route
from billing_site.api.shapes import money
from billing_site.catalog import (
    PACK_CREDIT_LIFETIME_DAYS,
    Catalog,
    Model,
    Pack,
    Tier,
    current_catalog,
)


@route("/v1/catalog")
def catalog():
    current = current_catalog()
    return jsonify(
        {
            "currency": current.currency,
            "packs": [pack_json(pack, current) for pack in current.packs],
            "tiers": [tier_json(tier) for tier in current.tiers],
            "models": [model_json(model) for model in current.models],
        }
    )


@route("/v1/stripe/packages")
def packages():
    current = current_catalog()
    return jsonify({"packs": [pack_json(pack, current) for pack in current.packs]})


@route("/v1/subscriptions/tiers")
def tiers():
    return jsonify({"tiers": [tier_json(tier) for tier in current_catalog().tiers]})


@route("/v1/stripe/config")
def stripe_config():
    # The publishable key is public by design; the secret key never leaves config.
    return jsonify({"publishable_key": current_app.config["STRIPE_PUBLISHABLE_KEY"]})


def pack_json(pack: Pack, catalog: Catalog) -> dict:
    return {
        "id": pack.id,
        "name": pack.name,
        "credits": pack.credits,
        "price": money(pack.price_cents, catalog.currency),
        "price_per_credit": money(
            int((Decimal(pack.price_cents) / pack.credits).to_integral_value()), catalog.currency
        ),
        "popular": pack.popular,
        "savings_percent": catalog.savings_percent(pack),
        "credits_expire_after_days": PACK_CREDIT_LIFETIME_DAYS,
        # What the credits buy: generations of each model (your plan decides which
        # models you may use; pack credits never change the plan).
        "unlocks": {model.id: pack.credits // model.cost for model in catalog.models},
    }


def tier_json(tier: Tier) -> dict:
    return {
        "id": tier.id,
        "name": tier.name,
        "price": money(tier.price_cents),
        "interval": "month",
        "allowance": None if tier.is_unlimited else tier.credits_per_month,
        "unlimited": tier.is_unlimited,
        "models": list(tier.models),
        "features": list(tier.features),
    }


def model_json(model: Model) -> dict:
    return {"id": model.id, "name": model.name, "cost": model.cost}
