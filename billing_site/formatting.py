"""How the site writes money, dates, product and model names: one format everywhere.

Every template reaches these through the filters and globals `register` installs
in the app factory, and Python code that writes a sentence for a person (a flash
message, an error) imports them from here, so "$20.00", "Pro Pack", "HD" and
"1 Feb 2027" are spelt the same on every page.
"""

from datetime import date as Date
from datetime import datetime as DateTime
from decimal import ROUND_HALF_UP, Decimal

from flask import Flask, has_app_context

CURRENCY_SYMBOLS = {"usd": "$", "eur": "€", "gbp": "£", "cad": "CA$", "aud": "A$"}
CENT = Decimal("0.01")


def _catalog():
    from billing_site.catalog import current_catalog, load_catalog

    return current_catalog() if has_app_context() else load_catalog()


def money(cents: int | Decimal | None, currency: str | None = None) -> str:
    """Minor units as a price a person reads: 2000 → "$20.00", -500 → "-$5.00"."""
    currency = (currency or _catalog().currency).lower()
    amount = (Decimal(cents or 0) / 100).quantize(CENT, rounding=ROUND_HALF_UP)
    sign, amount = ("-", -amount) if amount < 0 else ("", amount)
    symbol = CURRENCY_SYMBOLS.get(currency)
    return f"{sign}{symbol}{amount:,}" if symbol else f"{sign}{amount:,} {currency.upper()}"


def date(value: DateTime | Date | None, empty: str = "—") -> str:
    """A calendar day: "1 Feb 2027"."""
    return f"{value.day} {value:%b %Y}" if value else empty


def day_and_month(value: DateTime | Date | None, empty: str = "—") -> str:
    """A day this year or next, where the year goes without saying: "1 Feb"."""
    return f"{value.day} {value:%b}" if value else empty


def long_date(value: DateTime | Date | None, empty: str = "—") -> str:
    """A day in a sentence: "1 February 2027"."""
    return f"{value.day} {value:%B %Y}" if value else empty


def time(value: DateTime | None) -> str:
    """A time of day in UTC: "14:05"."""
    return f"{value:%H:%M}" if value else "—"


def datetime(value: DateTime | None, empty: str = "—") -> str:
    """A moment: "1 Feb 2027, 14:05" (UTC, as everything on the site)."""
    return f"{date(value)}, {value:%H:%M}" if value else empty


def model_name(model_id: str | None) -> str:
    """A model as the catalog names it: "hd" → "HD"."""
    model = _catalog().model(model_id or "")
    return model.name if model else (model_id or "").capitalize()


def product_name(kind: str | None, item_id: str | None) -> str:
    """What an order bought, as the catalog spells it: "Pro Pack", "Basic plan"."""
    catalog = _catalog()
    pack = catalog.pack(item_id or "") if kind == "pack" else None
    if pack is not None:
        return pack.name
    tier = catalog.tier(item_id or "")
    if tier is not None:
        return f"{tier.name} plan"
    return f"{(item_id or '').capitalize()} {'pack' if kind == 'pack' else 'plan'}".strip()


def credits(count: int) -> str:
    """ "1 credit", "20 credits"."""
    return f"{count:,} credit{'' if abs(count) == 1 else 's'}"


# --- the customer's ledger ---------------------------------------------------------------


def ledger_description(
    kind: str,
    reference: str | None,
    *,
    lot_source: str | None = None,
    model: str | None = None,
    product: str | None = None,
) -> str:
    """A ledger entry in the customer's words; the admin's notes never reach them.

    `lot_source`, `model` and `product` are what the entry's lot, generation and
    order say (looked up by the caller); each one is optional.
    """
    noun = (reference or "").split(":", 1)[0]
    if kind == "spend":
        return f"Generation — {model_name(model)}" if model else "Generation"
    if kind == "compensate":
        return "Credits returned — the generation failed"
    if kind == "adjust":
        return "Adjustment by support"
    if kind == "expire":
        return "Unused credits expired"
    if kind == "clawback":
        if noun == "dispute":
            return f"Payment disputed — {product}" if product else "Payment disputed"
        return f"Refund — {product}" if product else "Refund"
    if kind == "restore":
        return "Credits restored"
    return _grant_description(lot_source, product)


def _grant_description(lot_source: str | None, product: str | None) -> str:
    if lot_source == "free":
        return "Free monthly credits"
    if lot_source == "monthly":
        return f"{product} — monthly credits" if product else "Monthly plan credits"
    if lot_source == "admin":
        return "Adjustment by support"
    if lot_source == "restore":
        return "Credits restored"
    return product or "Credits added"


# --- the admin audit log -------------------------------------------------------------------

AUDIT_LABELS = {
    "refund_id": "refund",
    "order_id": "order",
    "stripe_refund_id": "Stripe refund",
    "credits_clawed_back": "credits clawed back",
    "expires_on": "expires",
}


def audit_summary(action: str, details: dict) -> str:
    """An audit entry's details as a sentence: "Refunded $5.00; 20 credits clawed back"."""
    details = details or {}
    amount = money(details["amount_cents"]) if "amount_cents" in details else None
    if action == "refund.succeeded" and amount:
        clawed = details.get("credits_clawed_back") or 0
        return f"Refunded {amount}; {credits(clawed)} clawed back"
    if action == "refund.requested" and amount:
        reason = str(details.get("reason") or "").replace("_", " ")
        return f"Asked Stripe to refund {amount}" + (f" ({reason})" if reason else "")
    if action in ("refund.failed", "refund.pending") and details.get("error"):
        return f"Refund {action.split('.')[1]}: {details['error']}"
    if action == "credits.adjust" and "delta" in details:
        delta = int(details["delta"])
        sentence = f"{'Gave' if delta > 0 else 'Took'} {credits(abs(delta))}"
        return sentence + (f": {details['reason']}" if details.get("reason") else "")
    if action == "event.replay":
        return f"Replayed: {details.get('outcome', '')}".strip()
    return ""


def audit_facts(details: dict) -> list[tuple[str, str]]:
    """The details not already in the summary, as readable (label, value) pairs."""
    facts = []
    for name, value in (details or {}).items():
        if value is None or value == "":
            continue
        if name.endswith("_cents"):
            facts.append((name.removesuffix("_cents").replace("_", " "), money(value)))
        elif name == "expires_on":
            facts.append(("expires", date(Date.fromisoformat(value))))
        else:
            facts.append((AUDIT_LABELS.get(name, name.replace("_", " ")), str(value)))
    return facts


def register(app: Flask) -> None:
    """Install the formatters as Jinja filters and globals, once, in the app factory."""
    helpers = {
        "money": money,
        "date": date,
        "long_date": long_date,
        "day_and_month": day_and_month,
        "time": time,
        "datetime": datetime,
        "model_name": model_name,
        "product_name": product_name,
        "credits": credits,
    }
    app.jinja_env.filters.update(helpers)
    from billing_site.generator import svg_data_url

    app.jinja_env.globals.update(
        money=money,
        product_name=product_name,
        audit_summary=audit_summary,
        audit_facts=audit_facts,
        svg_data_url=svg_data_url,
    )
