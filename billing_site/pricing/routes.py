"""The pricing page at / and /pricing, and the catalog as JSON under /api/v1/."""

from decimal import ROUND_HALF_UP, Decimal

from flask import Blueprint, current_app, jsonify, render_template

from billing_site.catalog import Catalog, Pack, Tier, current_catalog

bp = Blueprint("pricing", __name__)

CURRENCY_SYMBOLS = {"usd": "$", "eur": "€", "gbp": "£", "cad": "CA$", "aud": "A$"}
CENT = Decimal("0.01")


def format_money(cents: int | Decimal, currency: str = "usd") -> str:
    """Minor units as a price a person reads: 2000 → "$20.00"."""
    amount = (Decimal(cents) / 100).quantize(CENT, rounding=ROUND_HALF_UP)
    symbol = CURRENCY_SYMBOLS.get(currency.lower())
    return f"{symbol}{amount:,}" if symbol else f"{amount:,} {currency.upper()}"


def price_per_credit(pack: Pack, currency: str = "usd") -> str:
    """A pack's price per credit, rounded to the cent: the Pro Pack → "$0.20"."""
    return format_money(Decimal(pack.price_cents) / pack.credits, currency)


@bp.app_template_filter("money")
def money_filter(cents: int, currency: str | None = None) -> str:
    return format_money(cents, currency or current_catalog().currency)


@bp.app_context_processor
def catalog_context() -> dict:
    # Every page may mention the catalog (sign-up names the free tier's credits).
    return {"catalog": current_catalog()}


@bp.get("/")
@bp.get("/pricing")
def index():
    catalog = current_catalog()
    return render_template("pricing/index.html", catalog=catalog, price_per_credit=price_per_credit)


@bp.get("/api/v1/stripe/packages")
def api_packages():
    catalog = current_catalog()
    packages = [pack_json(pack, catalog) for pack in catalog.packs]
    return jsonify({"packages": packages, "currency": catalog.currency})


@bp.get("/api/v1/subscriptions/tiers")
def api_tiers():
    return jsonify({"tiers": [tier_json(tier) for tier in current_catalog().tiers]})


@bp.get("/api/v1/stripe/config")
def api_stripe_config():
    # The publishable key is public by design; the secret key never leaves config.
    return jsonify({"publishable_key": current_app.config["STRIPE_PUBLISHABLE_KEY"]})


def pack_json(pack: Pack, catalog: Catalog) -> dict:
    return {
        "id": pack.id,
        "name": pack.name,
        "credits": pack.credits,
        "price_cents": pack.price_cents,
        "currency": catalog.currency,
        "popular": pack.popular,
        "savings_percent": catalog.savings_percent(pack),
    }


def tier_json(tier: Tier) -> dict:
    return {
        "tier": tier.id,
        "name": tier.name,
        # Dollars as a number (9.99) for clients; the site itself keeps cents.
        "price_monthly": float(Decimal(tier.price_cents) / 100),
        "credits_per_month": tier.credits_per_month,
        "is_unlimited": tier.is_unlimited,
        "models": list(tier.models),
        "features": list(tier.features),
    }
