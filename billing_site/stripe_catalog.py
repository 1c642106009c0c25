"""The catalog as Stripe Products and Prices, found by lookup key.

Every paid tier and every pack is one Product (id `pixel_forge_<kind>_<item>`)
with one active Price holding a lookup key (`pixel_forge_basic_monthly`,
`pixel_forge_pack_pro`). `flask stripe sync-catalog` makes Stripe match the
catalog; checkout then sells by those Prices, so subscriptions name a Price the
billing portal can offer and a plan change can switch to.

Stripe Prices are immutable: when the catalog's amount changes, a new Price
takes the lookup key over (`transfer_lookup_key`) and the old one is
deactivated. Subscriptions already on the old Price keep it until changed.

An operator with Prices of their own maps lookup keys to them in
STRIPE_PRICE_IDS ("pixel_forge_basic_monthly=price_123,..."); those are used
as they are and never changed by the sync.
"""

import hashlib
import logging
import threading
import time
from dataclasses import dataclass

from flask import current_app

from billing_site.catalog import Catalog, current_catalog
from billing_site.stripe_gateway import GatewayError, current_gateway

log = logging.getLogger(__name__)

PREFIX = "pixel_forge_"
# How long "Stripe has no usable Price for this" is believed before asking again.
MISSING_PRICE_RETRY_SECONDS = 300


@dataclass(frozen=True)
class CatalogPrice:
    """One thing the site sells, as Stripe should hold it."""

    kind: str  # "tier" or "pack"
    item_id: str
    name: str
    unit_amount: int
    currency: str

    @property
    def lookup_key(self) -> str:
        return lookup_key(self.kind, self.item_id)

    @property
    def product_id(self) -> str:
        return f"{PREFIX}{self.kind}_{self.item_id}"

    @property
    def recurring(self) -> bool:
        return self.kind == "tier"


@dataclass(frozen=True)
class Change:
    """One write the sync makes (or would make)."""

    action: str  # create_product, update_product, create_price, replace_price, configured
    lookup_key: str
    detail: str
    wanted: CatalogPrice
    old_price_id: str | None = None

    def describe(self) -> str:
        return f"{self.action:15} {self.lookup_key}: {self.detail}"


def lookup_key(kind: str, item_id: str) -> str:
    """`pixel_forge_basic_monthly` for a tier, `pixel_forge_pack_pro` for a pack."""
    return f"{PREFIX}{item_id}_monthly" if kind == "tier" else f"{PREFIX}pack_{item_id}"


def wanted_prices(catalog: Catalog) -> list[CatalogPrice]:
    """What Stripe should hold for this catalog: every paid tier and every pack."""
    tiers = [
        CatalogPrice("tier", t.id, f"{t.name} plan", t.price_cents, catalog.currency)
        for t in catalog.tiers
        if not t.is_free
    ]
    packs = [
        CatalogPrice("pack", p.id, p.name, p.price_cents, catalog.currency) for p in catalog.packs
    ]
    return tiers + packs


def configured_price_ids(config: dict) -> dict[str, str]:
    """STRIPE_PRICE_IDS as {lookup key: price id}."""
    pairs = (item.split("=", 1) for item in (config.get("STRIPE_PRICE_IDS") or "").split(","))
    return {key.strip(): value.strip() for key, value in (p for p in pairs if len(p) == 2)}


def price_matches(price: dict, wanted: CatalogPrice) -> bool:
    """Does Stripe's Price charge what the catalog says, the way it says?"""
    return (
        price.get("unit_amount") == wanted.unit_amount
        and (price.get("currency") or "").lower() == wanted.currency
        and bool(price.get("recurring")) == wanted.recurring
        and price.get("active", True)
    )


# --- planning and applying the sync ---------------------------------------------------


def plan_sync(
    wanted: list[CatalogPrice],
    products: dict[str, dict],
    prices: dict[str, dict],
    configured: dict[str, str],
) -> list[Change]:
    """The writes that make Stripe hold `wanted` (pure: takes what Stripe has, returns steps)."""
    changes: list[Change] = []
    for item in wanted:
        if item.lookup_key in configured:
            detail = f"uses {configured[item.lookup_key]} from STRIPE_PRICE_IDS (not managed)"
            changes.append(Change("configured", item.lookup_key, detail, item))
            continue
        changes += _product_changes(item, products.get(item.product_id))
        changes += _price_changes(item, prices.get(item.lookup_key))
    return changes


def _product_changes(item: CatalogPrice, product: dict | None) -> list[Change]:
    if product is None:
        return [Change("create_product", item.lookup_key, f"product {item.product_id}", item)]
    if product.get("name") != item.name or not product.get("active", True):
        detail = f"product {item.product_id}: name {product.get('name')!r} -> {item.name!r}"
        return [Change("update_product", item.lookup_key, detail, item)]
    return []


def _price_changes(item: CatalogPrice, price: dict | None) -> list[Change]:
    amount = f"{item.unit_amount} {item.currency}" + (" / month" if item.recurring else "")
    if price is None:
        return [Change("create_price", item.lookup_key, amount, item)]
    if price_matches(price, item):
        return []
    was = f"{price.get('unit_amount')} {price.get('currency')}"
    detail = f"{was} -> {amount} (new price; {price['id']} deactivated)"
    return [Change("replace_price", item.lookup_key, detail, item, old_price_id=price["id"])]


def sync_catalog(*, apply: bool) -> list[Change]:
    """Compare Stripe's Products and Prices with the catalog; write the difference if `apply`."""
    gateway = current_gateway()
    wanted = wanted_prices(current_catalog())
    configured = configured_price_ids(current_app.config)
    managed = [item for item in wanted if item.lookup_key not in configured]
    products = {p["id"]: p for p in gateway.list_products([i.product_id for i in managed])}
    prices = {p["lookup_key"]: p for p in gateway.list_prices([i.lookup_key for i in managed])}
    changes = plan_sync(wanted, products, prices, configured)
    if apply:
        for change in changes:
            _apply(gateway, change)
        forget_resolved_prices()
    return changes


def _apply(gateway, change: Change) -> None:
    item = change.wanted
    metadata = {"pixel_forge_kind": item.kind, "pixel_forge_item": item.item_id}
    if change.action == "create_product":
        gateway.create_product(
            {"id": item.product_id, "name": item.name, "metadata": metadata},
            idempotency_key=f"catalog-product-{item.product_id}",
        )
    elif change.action == "update_product":
        gateway.update_product(
            item.product_id,
            {"name": item.name, "active": True},
            idempotency_key=f"catalog-product-{item.product_id}-{_digest(item.name)}",
        )
    elif change.action in ("create_price", "replace_price"):
        _create_price(gateway, item, metadata, change.old_price_id)


def _create_price(gateway, item: CatalogPrice, metadata: dict, old_price_id: str | None) -> None:
    params = {
        "product": item.product_id,
        "currency": item.currency,
        "unit_amount": item.unit_amount,
        "lookup_key": item.lookup_key,
        # Takes the key from an older (perhaps inactive) Price that still holds it.
        "transfer_lookup_key": True,
        "nickname": item.name,
        "metadata": metadata,
    }
    if item.recurring:
        params["recurring"] = {"interval": "month"}
    # The key names what is created and what it replaces, so a rerun after a
    # failure halfway replays rather than creating a second Price.
    key = f"catalog-price-{item.lookup_key}-{item.unit_amount}-{item.currency}-{old_price_id}"
    gateway.create_price(params, idempotency_key=key)
    if old_price_id:
        gateway.update_price(
            old_price_id, {"active": False}, idempotency_key=f"catalog-deactivate-{old_price_id}"
        )


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:12]


# --- which Price checkout sells by ------------------------------------------------------


class ResolvedPrices:
    """Lookup key → Price id, asked of Stripe once per process (missing ones re-asked later)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.price_ids: dict[str, str | None] = {}
        self.resolved_at = 0.0

    def get(self, key: str) -> str | None:
        with self.lock:
            stale = time.monotonic() - self.resolved_at > MISSING_PRICE_RETRY_SECONDS
            if not self.resolved_at or (self.price_ids.get(key) is None and stale):
                self.price_ids = _resolve_all()
                self.resolved_at = time.monotonic()
            return self.price_ids.get(key)


def checkout_price_id(kind: str, item_id: str) -> str | None:
    """The Stripe Price to sell this item by; None means inline price_data (and a warning)."""
    key = lookup_key(kind, item_id)
    configured = configured_price_ids(current_app.config).get(key)
    if configured:
        return configured
    resolved = current_app.extensions.setdefault("stripe_prices", ResolvedPrices())
    return resolved.get(key)


def forget_resolved_prices() -> None:
    current_app.extensions.pop("stripe_prices", None)


def _resolve_all() -> dict[str, str | None]:
    wanted = wanted_prices(current_catalog())
    gateway = current_gateway()
    try:
        prices = {p["lookup_key"]: p for p in gateway.list_prices([i.lookup_key for i in wanted])}
        if gateway.is_local and len(prices) < len(wanted):
            # The stand-in plays a Stripe account that has been synced.
            sync_catalog(apply=True)
            prices = {
                p["lookup_key"]: p for p in gateway.list_prices([i.lookup_key for i in wanted])
            }
    except GatewayError as error:
        log.warning("stripe catalog: could not list prices (%s); selling inline", error.message)
        return {}
    resolved = {}
    for item in wanted:
        price = prices.get(item.lookup_key)
        usable = price is not None and price_matches(price, item)
        if not usable:
            # Selling at Stripe's amount would book a price the catalog does not
            # show; inline price_data charges what the page says until a sync.
            log.warning(
                "stripe catalog: no price matching %s; run `flask stripe sync-catalog`",
                item.lookup_key,
            )
        resolved[item.lookup_key] = price["id"] if usable else None
    return resolved


# --- which tier a Price is --------------------------------------------------------------


def tier_of_price(price: dict | None) -> str | None:
    """The paid tier a Stripe Price sells: by lookup key, configured id, or our metadata."""
    if not price:
        return None
    catalog = current_catalog()
    paid = {t.id for t in catalog.tiers if not t.is_free}
    by_key = {lookup_key("tier", tier_id): tier_id for tier_id in paid}
    configured = configured_price_ids(current_app.config)
    by_id = {configured[key]: tier_id for key, tier_id in by_key.items() if key in configured}
    metadata = price.get("metadata") or {}
    candidates = (
        by_key.get(price.get("lookup_key") or ""),
        by_id.get(price.get("id") or ""),
        metadata.get("pixel_forge_item") if metadata.get("pixel_forge_kind") == "tier" else None,
    )
    return next((tier for tier in candidates if tier in paid), None)
