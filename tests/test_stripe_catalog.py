"""The catalog in Stripe: `flask stripe sync-catalog`, checkout by Price, tiers known by Price."""

from urllib.parse import parse_qs

import pytest
import responses

from billing_site import stripe_catalog
from billing_site.catalog import build_catalog
from billing_site.models import Order, Subscription
from billing_site.subscriptions import tier_of_subscription
from tests.conftest import csrf_token_from
from tests.factories import log_in, make_user
from tests.stripe_events import stripe_object

API = "https://api.stripe.com/v1"
ALL_KEYS = [
    "pixel_forge_basic_monthly",
    "pixel_forge_premium_monthly",
    "pixel_forge_pack_starter",
    "pixel_forge_pack_pro",
    "pixel_forge_pack_enterprise",
    "pixel_forge_pack_ultimate",
]


def sync(app, *args):
    return app.test_cli_runner().invoke(args=["stripe", "sync-catalog", *args])


def active_prices(app) -> dict:
    with app.app_context():
        gateway = app.extensions["stripe_gateway"]
        return {price["lookup_key"]: price for price in gateway.list_prices(ALL_KEYS)}


def test_the_plan_for_an_empty_account_creates_a_product_and_a_price_per_item():
    from billing_site.catalog import DEFAULT_CATALOG

    wanted = stripe_catalog.wanted_prices(build_catalog(DEFAULT_CATALOG))
    changes = stripe_catalog.plan_sync(wanted, {}, {}, {})

    assert [c.lookup_key for c in changes if c.action == "create_price"] == ALL_KEYS
    assert len([c for c in changes if c.action == "create_product"]) == 6
    basic = next(c for c in changes if c.lookup_key == ALL_KEYS[0] and c.action == "create_price")
    assert (basic.wanted.unit_amount, basic.wanted.recurring) == (999, True)


def test_dry_run_prints_the_changes_and_writes_nothing_then_apply_writes_them_once(app, db):
    dry = sync(app)
    assert dry.exit_code == 0, dry.output
    assert "create_price    pixel_forge_basic_monthly: 999 usd / month" in dry.output
    assert "run again with --apply" in dry.output
    assert active_prices(app) == {}

    applied = sync(app, "--apply")
    assert applied.exit_code == 0, applied.output
    prices = active_prices(app)
    assert sorted(prices) == sorted(ALL_KEYS)
    assert prices["pixel_forge_pack_pro"]["unit_amount"] == 2000
    assert prices["pixel_forge_pack_pro"]["recurring"] is None
    assert prices["pixel_forge_premium_monthly"]["recurring"]["interval"] == "month"

    again = sync(app, "--apply")
    assert "nothing to change" in again.output
    assert active_prices(app) == prices


def test_a_changed_amount_gets_a_new_price_holding_the_key_and_the_old_one_deactivated(
    make_app, tmp_path
):
    app = make_app()
    with app.app_context():
        sync(app, "--apply")
    old = active_prices(app)["pixel_forge_basic_monthly"]

    catalog_file = tmp_path / "catalog.toml"
    catalog_file.write_text(CATALOG_WITH_BASIC_AT_1099)
    dearer = make_app(
        CATALOG_FILE=str(catalog_file),
        LOCAL_STRIPE_STATE_FILE=app.config["LOCAL_STRIPE_STATE_FILE"],
    )
    dry = sync(dearer)
    assert f"999 usd -> 1099 usd / month (new price; {old['id']} deactivated)" in dry.output

    sync(dearer, "--apply")

    new = active_prices(dearer)["pixel_forge_basic_monthly"]
    assert new["id"] != old["id"] and new["unit_amount"] == 1099
    with dearer.app_context():
        state = dearer.extensions["stripe_gateway"]
        with state._state() as data:
            assert data["prices"][old["id"]]["active"] is False
            assert data["prices"][old["id"]]["lookup_key"] is None


def test_the_local_checkout_sells_a_plan_by_its_catalog_price(app, db, client):
    user = make_user("price@example.com")
    log_in(client, user)
    token = csrf_token_from(client.get("/auth/login").get_data(as_text=True))

    response = client.post("/checkout/plan/basic", data={"csrf_token": token})
    session_id = response.headers["Location"].rsplit("/", 1)[-1]
    gateway = app.extensions["stripe_gateway"]
    gateway.pay_checkout_session(session_id)

    [subscription] = gateway.list_subscriptions(
        customer_id=db.session.get(type(user), user.id).stripe_customer_id
    )
    price = subscription["items"]["data"][0]["price"]
    assert price["lookup_key"] == "pixel_forge_basic_monthly"
    assert price["id"] == active_prices(app)["pixel_forge_basic_monthly"]["id"]
    db.session.expire_all()
    assert db.session.query(Subscription).one().tier == "basic"
    assert db.session.query(Order).one().status == "paid"


@pytest.fixture
def stripe_app(make_app):
    return make_app(STRIPE_SECRET_KEY="sk_test_123")


def test_real_stripe_is_asked_for_the_prices_once_and_checkout_names_the_price(stripe_app, db):
    client = stripe_app.test_client()
    with responses.RequestsMock() as stripe_api:
        prices = [
            stripe_object("price", id=f"price_live_{i}", lookup_key=key, **price_fields(key))
            for i, key in enumerate(ALL_KEYS)
        ]
        stripe_api.get(f"{API}/prices", json={"object": "list", "data": prices, "has_more": False})
        stripe_api.post(f"{API}/checkout/sessions", json=stripe_object("checkout_session"))
        log_in(client, make_user("real@example.com", stripe_customer_id="cus_1"))
        token = csrf_token_from(client.get("/auth/login").get_data(as_text=True))

        client.post("/checkout/pack/pro", data={"csrf_token": token})
        client.post("/checkout/plan/premium", data={"csrf_token": token})

        lists = [c for c in stripe_api.calls if c.request.method == "GET"]
        sessions = [c for c in stripe_api.calls if c.request.url.endswith("/checkout/sessions")]
    assert len(lists) == 1
    assert "lookup_keys" in lists[0].request.url
    bodies = [parse_qs(c.request.body) for c in sessions]
    assert [b["line_items[0][price]"] for b in bodies] == [["price_live_3"], ["price_live_1"]]
    assert not any(key.startswith("line_items[0][price_data]") for key in bodies[0])


def test_a_stripe_price_at_another_amount_is_not_sold_the_catalog_amount_goes_inline(
    stripe_app, db
):
    client = stripe_app.test_client()
    with responses.RequestsMock() as stripe_api:
        wrong = stripe_object(
            "price",
            id="price_old",
            lookup_key="pixel_forge_pack_pro",
            unit_amount=1500,
            recurring=None,
            currency="usd",
        )
        stripe_api.get(f"{API}/prices", json={"object": "list", "data": [wrong], "has_more": False})
        stripe_api.post(f"{API}/checkout/sessions", json=stripe_object("checkout_session"))
        log_in(client, make_user("inline@example.com", stripe_customer_id="cus_1"))
        token = csrf_token_from(client.get("/auth/login").get_data(as_text=True))

        client.post("/checkout/pack/pro", data={"csrf_token": token})

        body = parse_qs(stripe_api.calls[-1].request.body)
    assert body["line_items[0][price_data][unit_amount]"] == ["2000"]
    assert "line_items[0][price]" not in body


def test_configured_price_ids_are_used_as_they_are_and_left_alone_by_the_sync(make_app):
    app = make_app(STRIPE_PRICE_IDS="pixel_forge_basic_monthly=price_mine")
    result = sync(app, "--apply")
    assert "uses price_mine from STRIPE_PRICE_IDS (not managed)" in result.output
    assert "pixel_forge_basic_monthly" not in active_prices(app)
    with app.app_context():
        assert stripe_catalog.checkout_price_id("tier", "basic") == "price_mine"
        assert tier_of_subscription(subscription_on({"id": "price_mine"})) == "basic"


def test_a_subscription_is_the_tier_of_its_price_whatever_its_metadata_says(app, db):
    premium = {"id": "price_x", "lookup_key": "pixel_forge_premium_monthly", "unit_amount": 2999}
    # Switched in the billing portal: the price changed, the checkout metadata did not.
    assert tier_of_subscription(subscription_on(premium, tier="basic")) == "premium"
    assert tier_of_subscription(subscription_on({"id": "price_inline", "unit_amount": 999})) == (
        "basic"
    )
    unknown = {"id": "price_y", "lookup_key": "someone_elses", "unit_amount": 1}
    assert tier_of_subscription(subscription_on(unknown, tier="basic")) == "basic"


def subscription_on(price: dict, **metadata) -> dict:
    return {"metadata": metadata, "items": {"data": [{"price": price}]}}


def price_fields(key: str) -> dict:
    amounts = {"basic": 999, "premium": 2999, "starter": 500, "pro": 2000}
    amounts.update(enterprise=5000, ultimate=15000)
    item = key.removeprefix("pixel_forge_").removeprefix("pack_").removesuffix("_monthly")
    recurring = {"interval": "month"} if key.endswith("_monthly") else None
    return {"unit_amount": amounts[item], "currency": "usd", "recurring": recurring}


CATALOG_WITH_BASIC_AT_1099 = """
currency = "usd"
base_cents_per_credit = 25

[[packs]]
id = "pro"
name = "Pro Pack"
credits = 100
price_cents = 2000

[[tiers]]
id = "free"
name = "Free"
price_cents = 0
credits_per_month = 10
models = ["standard"]

[[tiers]]
id = "basic"
name = "Basic"
price_cents = 1099
credits_per_month = 200
models = ["standard", "hd"]

[[models]]
id = "standard"
name = "Standard"
cost = 1

[[models]]
id = "hd"
name = "HD"
cost = 2
"""
