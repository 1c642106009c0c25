"""Stripe Price ids for the default catalog, configured as an operator would (STRIPE_PRICE_IDS).

Tests that mock Stripe's API with `responses` configure these so checkout sells by
Price id without first listing Prices by lookup key.
"""

PRICE_IDS = {
    "pixel_forge_basic_monthly": "price_test_basic",
    "pixel_forge_premium_monthly": "price_test_premium",
    "pixel_forge_pack_starter": "price_test_starter",
    "pixel_forge_pack_pro": "price_test_pro",
    "pixel_forge_pack_enterprise": "price_test_enterprise",
    "pixel_forge_pack_ultimate": "price_test_ultimate",
}
STRIPE_PRICE_IDS = ",".join(f"{key}={value}" for key, value in PRICE_IDS.items())
