"""Products and Prices, as `flask stripe sync-catalog` writes them and checkout sells them."""

import copy

from billing_site.local_stripe.state import _new_id, _now, _strings
from billing_site.stripe_gateway import GatewayError

PRICE_UPDATABLE = ("active", "nickname", "metadata", "lookup_key")


class CatalogMixin:
    """Stripe's products and prices endpoints."""

    def list_products(self, product_ids: list[str]) -> list[dict]:
        with self._state() as state:
            found = [state["products"][i] for i in product_ids if i in state["products"]]
            return copy.deepcopy(found)

    def create_product(self, params: dict, *, idempotency_key: str) -> dict:
        with self._state() as state:
            replay = self._replay(state, idempotency_key)
            if replay:
                return replay
            product_id = params.get("id") or _new_id("prod")
            if product_id in state["products"]:
                raise GatewayError(
                    f"Product already exists with ID '{product_id}'", code="resource_already_exists"
                )
            product = {
                "id": product_id,
                "object": "product",
                "active": params.get("active", True),
                "created": _now(),
                "default_price": None,
                "description": params.get("description"),
                "livemode": False,
                "metadata": _strings(params.get("metadata")),
                "name": params["name"],
                "type": "service",
                "updated": _now(),
            }
            self._store(state, "products", product, idempotency_key)
            return copy.deepcopy(product)

    def update_product(self, product_id: str, params: dict, *, idempotency_key: str) -> dict:
        with self._state() as state:
            product = self._get(state, "products", product_id)
            product.update({k: v for k, v in params.items() if k in ("name", "active")})
            product["updated"] = _now()
            return copy.deepcopy(product)

    def list_prices(self, lookup_keys: list[str]) -> list[dict]:
        """Active prices holding these lookup keys, as prices.list(lookup_keys=…, active=true)."""
        with self._state() as state:
            found = [
                p
                for p in state["prices"].values()
                if p["active"] and p["lookup_key"] in lookup_keys
            ]
            return copy.deepcopy(found)

    def create_price(self, params: dict, *, idempotency_key: str) -> dict:
        with self._state() as state:
            replay = self._replay(state, idempotency_key)
            if replay:
                return replay
            self._get(state, "products", params["product"])
            self._take_lookup_key(state, params)
            price = self._new_price(params)
            self._store(state, "prices", price, idempotency_key)
            return copy.deepcopy(price)

    def update_price(self, price_id: str, params: dict, *, idempotency_key: str) -> dict:
        with self._state() as state:
            price = self._get(state, "prices", price_id)
            price.update({k: v for k, v in params.items() if k in PRICE_UPDATABLE})
            return copy.deepcopy(price)

    @staticmethod
    def _take_lookup_key(state: dict, params: dict) -> None:
        key = params.get("lookup_key")
        holders = [p for p in state["prices"].values() if key and p["lookup_key"] == key]
        if holders and not params.get("transfer_lookup_key"):
            raise GatewayError(
                f"A price (`{holders[0]['id']}`) already uses that lookup key.",
                code="lookup_key_exists",
            )
        for holder in holders:
            holder["lookup_key"] = None

    @staticmethod
    def _new_price(params: dict) -> dict:
        recurring = params.get("recurring")
        return {
            "id": _new_id("price"),
            "object": "price",
            "active": True,
            "billing_scheme": "per_unit",
            "created": _now(),
            "currency": params["currency"].lower(),
            "livemode": False,
            "lookup_key": params.get("lookup_key"),
            "metadata": _strings(params.get("metadata")),
            "nickname": params.get("nickname"),
            "product": params["product"],
            "recurring": (
                {
                    "interval": recurring["interval"],
                    "interval_count": 1,
                    "meter": None,
                    "usage_type": "licensed",
                    "trial_period_days": None,
                }
                if recurring
                else None
            ),
            "tax_behavior": "unspecified",
            "type": "recurring" if recurring else "one_time",
            "unit_amount": int(params["unit_amount"]),
            "unit_amount_decimal": str(int(params["unit_amount"])),
        }
