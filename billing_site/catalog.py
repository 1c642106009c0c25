"""What the site sells: credit packs, subscription tiers and generation models.

The defaults are PRODUCT.md's; an operator overrides them with a TOML file named
by CATALOG_FILE (same shape as DEFAULT_CATALOG below). Savings are computed from
prices, never typed in.
"""

import tomllib
from dataclasses import dataclass
from pathlib import Path

UNLIMITED = -1
DEFAULT_PACK_MODELS = ("standard", "hd")
PACK_CREDIT_LIFETIME_DAYS = 183  # "6 months after purchase"


@dataclass(frozen=True)
class Pack:
    id: str
    name: str
    credits: int
    price_cents: int
    popular: bool = False
    models: tuple[str, ...] = ()  # empty: the catalog's pack_models

    @property
    def cents_per_credit(self) -> float:
        return self.price_cents / self.credits


@dataclass(frozen=True)
class Tier:
    id: str
    name: str
    price_cents: int  # per month
    credits_per_month: int  # UNLIMITED (-1) for a fair-use tier
    models: tuple[str, ...]
    features: tuple[str, ...] = ()

    @property
    def is_unlimited(self) -> bool:
        return self.credits_per_month == UNLIMITED

    @property
    def is_free(self) -> bool:
        return self.price_cents == 0


@dataclass(frozen=True)
class Model:
    id: str
    name: str
    cost: int  # credits per generation


@dataclass(frozen=True)
class Catalog:
    currency: str
    base_cents_per_credit: int
    packs: tuple[Pack, ...]
    tiers: tuple[Tier, ...]
    models: tuple[Model, ...]
    # The models a customer who bought a pack may use (Pro stays Premium's).
    pack_models: tuple[str, ...] = DEFAULT_PACK_MODELS

    def pack(self, pack_id: str) -> Pack | None:
        return next((p for p in self.packs if p.id == pack_id), None)

    def tier(self, tier_id: str) -> Tier | None:
        return next((t for t in self.tiers if t.id == tier_id), None)

    def model(self, model_id: str) -> Model | None:
        return next((m for m in self.models if m.id == model_id), None)

    def models_of_pack(self, pack: Pack) -> tuple[str, ...]:
        """The models this pack's credits unlock."""
        return pack.models or self.pack_models

    @property
    def free_tier(self) -> Tier:
        return next(t for t in self.tiers if t.is_free)

    def savings_percent(self, pack: Pack) -> int:
        return savings_percent(pack.price_cents, pack.credits, self.base_cents_per_credit)


def savings_percent(price_cents: int, credits: int, base_cents_per_credit: int) -> int:
    """Whole-percent saving of a pack against buying its credits at the base price."""
    full_price = credits * base_cents_per_credit
    if full_price <= 0 or price_cents >= full_price:
        return 0
    return round(100 * (full_price - price_cents) / full_price)


DEFAULT_CATALOG = {
    "currency": "usd",
    "base_cents_per_credit": 25,
    "pack_models": list(DEFAULT_PACK_MODELS),
    "packs": [
        {"id": "starter", "name": "Starter Pack", "credits": 20, "price_cents": 500},
        {"id": "pro", "name": "Pro Pack", "credits": 100, "price_cents": 2000, "popular": True},
        {"id": "enterprise", "name": "Enterprise Pack", "credits": 300, "price_cents": 5000},
        {"id": "ultimate", "name": "Ultimate Pack", "credits": 1000, "price_cents": 15000},
    ],
    "tiers": [
        {
            "id": "free",
            "name": "Free",
            "price_cents": 0,
            "credits_per_month": 10,
            "models": ["standard"],
            "features": ["10 generations a month", "Standard model"],
        },
        {
            "id": "basic",
            "name": "Basic",
            "price_cents": 999,
            "credits_per_month": 200,
            "models": ["standard", "hd"],
            "features": ["200 credits every month", "HD model", "Email support"],
        },
        {
            "id": "premium",
            "name": "Premium",
            "price_cents": 2999,
            "credits_per_month": UNLIMITED,
            "models": ["standard", "hd", "pro"],
            "features": [
                "Unlimited generations (fair use)",
                "HD and Pro models",
                "Priority support",
            ],
        },
    ],
    "models": [
        {"id": "standard", "name": "Standard", "cost": 1},
        {"id": "hd", "name": "HD", "cost": 2},
        {"id": "pro", "name": "Pro", "cost": 4},
    ],
}


def build_catalog(data: dict) -> Catalog:
    """Turn a catalog mapping (the defaults or an operator's TOML) into a Catalog."""
    return Catalog(
        currency=data["currency"].lower(),
        base_cents_per_credit=int(data["base_cents_per_credit"]),
        packs=tuple(
            Pack(**{**pack, "models": tuple(pack.get("models", ()))}) for pack in data["packs"]
        ),
        tiers=tuple(
            Tier(
                **{
                    **tier,
                    "models": tuple(tier["models"]),
                    "features": tuple(tier.get("features", ())),
                }
            )
            for tier in data["tiers"]
        ),
        models=tuple(Model(**model) for model in data["models"]),
        pack_models=tuple(data.get("pack_models", DEFAULT_PACK_MODELS)),
    )


def load_catalog(path: str = "") -> Catalog:
    """The default catalog, or the one in the TOML file at `path`."""
    if not path:
        return build_catalog(DEFAULT_CATALOG)
    with Path(path).open("rb") as file:
        return build_catalog(tomllib.load(file))


def current_catalog() -> Catalog:
    """The catalog of the running app (loaded once, at start-up)."""
    from flask import current_app

    return current_app.extensions["catalog"]
