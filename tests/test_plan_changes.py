"""Plan changes through the local stand-in: upgrade now with a proration, downgrade at renewal.

Every change reaches the site as Stripe's signed webhooks, so these also prove
that customer.subscription.updated with a new Price changes the tier.
"""

import re
import threading

import pytest
from sqlalchemy import select

from billing_site.models import Subscription, User
from tests.conftest import csrf_token_from
from tests.factories import log_in, make_user

HX = {"HX-Request": "true"}


def csrf(client, path="/auth/login") -> str:
    return csrf_token_from(client.get(path).get_data(as_text=True))


def subscribe(app, client, tier="basic") -> str:
    """Subscribe through the local checkout; returns the Stripe subscription id."""
    response = client.post(f"/checkout/plan/{tier}", data={"csrf_token": csrf(client)})
    session_id = response.headers["Location"].rsplit("/", 1)[-1]
    gateway = app.extensions["stripe_gateway"]
    gateway.pay_checkout_session(session_id)
    return gateway.retrieve_checkout_session(session_id)["subscription"]


def row(db) -> Subscription:
    db.session.expire_all()
    return db.session.scalars(select(Subscription)).one()


def local_state(app) -> dict:
    with app.extensions["stripe_gateway"]._state() as state:
        return state


def proration_invoices(app) -> list[dict]:
    invoices = local_state(app)["invoices"].values()
    return [i for i in invoices if i["billing_reason"] == "subscription_update"]


def preview(client, tier="premium"):
    return client.get(f"/account/plan/preview?tier={tier}", headers=HX)


def token_in(html: str) -> str:
    return re.search(r'name="token" value="([^"]+)"', html).group(1)


@pytest.fixture
def customer(db, client):
    user = make_user("plans@example.com")
    log_in(client, user)
    return user


@pytest.fixture
def basic(app, client, customer) -> str:
    return subscribe(app, client)


def test_the_account_and_pricing_pages_mark_the_current_plan_and_offer_upgrade(client, basic):
    account = client.get("/account").get_data(as_text=True)
    basic_choice = re.search(r'id="plan-choice-basic".*?</li>', account, re.S).group(0)
    premium_choice = re.search(r'id="plan-choice-premium".*?</li>', account, re.S).group(0)
    assert "Current plan" in basic_choice
    assert "Upgrade" in premium_choice

    pricing = client.get("/pricing").get_data(as_text=True)
    basic_card = re.search(r'id="tier-basic".*?</article>', pricing, re.S).group(0)
    premium_card = re.search(r'id="tier-premium".*?</article>', pricing, re.S).group(0)
    assert "Current plan" in basic_card and "Subscribe" not in basic_card
    assert ">Upgrade</a>" in premium_card


def test_the_pricing_pages_upgrade_link_opens_the_preview_as_a_page(client, basic):
    pricing = client.get("/pricing").get_data(as_text=True)
    link = re.search(r'href="([^"]+)">Upgrade</a>', pricing).group(1).replace("&amp;", "&")

    page = client.get(link)

    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert "<h1>Change plan</h1>" in html and "Pay $20.00 and upgrade" in html


def test_the_preview_shows_stripes_amount_due_today(app, client, basic):
    response = preview(client)

    assert response.status_code == 200
    html = response.get_data(as_text=True)
    # Just subscribed: the whole period at Premium less the whole period at Basic.
    assert re.search(r'id="amount-due">\$20\.00<', html)
    assert "Pay $20.00 and upgrade" in html
    assert proration_invoices(app) == []  # a preview charges nothing


def test_confirming_twice_in_parallel_updates_stripe_once_and_the_tier_is_premium_at_once(
    app, db, client, basic
):
    token = token_in(preview(client).get_data(as_text=True))
    form = {"csrf_token": csrf(client), "tier": "premium", "token": token}
    second = app.test_client()
    second.set_cookie("session", client.get_cookie("session").value)
    barrier = threading.Barrier(2)
    statuses = []

    def confirm(some_client):
        barrier.wait()
        statuses.append(some_client.post("/account/plan/upgrade", data=form).status_code)

    threads = [threading.Thread(target=confirm, args=(c,)) for c in (client, second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert statuses == [303, 303]
    [invoice] = proration_invoices(app)
    assert invoice["status"] == "paid" and invoice["amount_paid"] == 2000
    updates = [
        e
        for e in local_state(app)["events"]
        if e["type"] == "customer.subscription.updated"
        and "items" in e["data"].get("previous_attributes", {})
    ]
    assert len(updates) == 1
    assert row(db).tier == "premium"
    account = client.get("/account").get_data(as_text=True)
    assert re.search(r'class="plan-name"><strong>Premium</strong>', account)


def test_a_confirm_without_its_preview_token_changes_nothing(app, db, client, basic):
    preview(client)
    response = client.post(
        "/account/plan/upgrade",
        data={"csrf_token": csrf(client), "tier": "premium", "token": "forged"},
        headers=HX,
    )
    assert response.status_code == 409
    assert "preview has expired" in response.get_data(as_text=True)
    assert proration_invoices(app) == []
    assert row(db).tier == "basic"


def test_previewing_a_downgrade_as_an_upgrade_or_without_a_plan_is_refused(db, client):
    user = make_user("free@example.com")
    log_in(client, user)
    assert preview(client).status_code == 409


def test_a_downgrade_waits_for_the_renewal_can_be_kept_and_refunds_nothing(
    app, db, client, customer
):
    subscription_id = subscribe(app, client, "premium")
    gateway = app.extensions["stripe_gateway"]

    response = client.post(
        "/account/plan/downgrade",
        data={"tier": "basic"},
        headers={**HX, "X-CSRFToken": csrf(client)},
    )
    assert response.status_code == 200
    period_end = row(db).current_period_end
    assert f"Changes to Basic on {period_end:%-d %b}" in response.get_data(as_text=True)
    assert row(db).tier == "premium"

    kept = client.post("/account/plan/keep", headers={**HX, "X-CSRFToken": csrf(client)})
    assert "Changes to Basic" not in kept.get_data(as_text=True)
    assert gateway.retrieve_subscription(subscription_id)["schedule"] is None

    client.post(
        "/account/plan/downgrade",
        data={"tier": "basic"},
        headers={**HX, "X-CSRFToken": csrf(client)},
    )
    gateway.renew_subscription(subscription_id)

    assert row(db).tier == "basic"
    renewal = gateway.retrieve_subscription(subscription_id)
    assert renewal["items"]["data"][0]["price"]["lookup_key"] == "pixel_forge_basic_monthly"
    latest = local_state(app)["invoices"][renewal["latest_invoice"]]
    assert (latest["billing_reason"], latest["amount_paid"]) == ("subscription_cycle", 999)
    assert local_state(app)["refunds"] == {}
    assert "Changes to Basic" not in client.get("/account").get_data(as_text=True)


def test_a_price_change_made_outside_the_site_changes_the_tier(app, db, client, basic):
    gateway = app.extensions["stripe_gateway"]
    premium = gateway.list_prices(["pixel_forge_premium_monthly"])[0]
    subscription = gateway.retrieve_subscription(basic)
    item = subscription["items"]["data"][0]

    # As the billing portal or the dashboard would: the Price changes, the metadata does not.
    gateway.update_subscription(
        basic,
        {"items": [{"id": item["id"], "price": premium["id"]}], "proration_behavior": "none"},
        idempotency_key="dashboard-switch",
    )

    assert row(db).tier == "premium"
    assert db.session.get(User, row(db).user_id) is not None


CATALOG_WITH_PLUS = """
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
price_cents = 1000
credits_per_month = 200
models = ["standard"]

[[tiers]]
id = "plus"
name = "Plus"
price_cents = 2000
credits_per_month = 500
models = ["standard"]

[[models]]
id = "standard"
name = "Standard"
cost = 1
"""


def test_an_upgrade_to_a_bigger_allowance_gives_it_less_what_this_period_spent(
    make_app, db, tmp_path
):
    from billing_site import credits

    catalog_file = tmp_path / "catalog.toml"
    catalog_file.write_text(CATALOG_WITH_PLUS)
    app = make_app(CATALOG_FILE=str(catalog_file))
    client = app.test_client()
    with app.app_context():
        user = make_user("plus@example.com")
        log_in(client, user)
        subscribe(app, client, "basic")
        credits.spend(user.id, 50, reference="test:spent-this-period")
        db.session.commit()

        token = token_in(preview(client, "plus").get_data(as_text=True))
        response = client.post(
            "/account/plan/upgrade",
            data={"csrf_token": csrf(client), "tier": "plus", "token": token},
        )

        assert response.status_code == 303
        # 500 a month on Plus, less the 50 already spent of Basic's 200 this period.
        assert credits.current_balance(user.id) == 450
        [invoice] = proration_invoices(app)
        assert credits.find_lot("monthly", invoice["id"]).credits_granted == 300


def test_against_stripes_api_the_preview_and_the_update_send_the_new_price_and_proration(
    make_app, db
):
    from urllib.parse import parse_qs

    import responses

    from tests.catalog_prices import STRIPE_PRICE_IDS
    from tests.factories import make_subscription
    from tests.stripe_events import stripe_object

    api = "https://api.stripe.com/v1"
    app = make_app(STRIPE_SECRET_KEY="sk_test_123", STRIPE_PRICE_IDS=STRIPE_PRICE_IDS)
    client = app.test_client()
    with app.app_context(), responses.RequestsMock() as stripe_api:
        user = make_user("real-upgrade@example.com")
        make_subscription(user, stripe_subscription_id="sub_real")
        log_in(client, user)
        subscription = stripe_object("subscription", id="sub_real")
        stripe_api.get(f"{api}/subscriptions/sub_real", json=subscription)
        stripe_api.post(
            f"{api}/invoices/create_preview",
            json=stripe_object("invoice", amount_due=1987, currency="usd"),
        )
        stripe_api.post(f"{api}/subscriptions/sub_real", json=subscription)

        html = preview(client).get_data(as_text=True)
        assert "Pay $19.87 and upgrade" in html
        token = token_in(html)
        response = client.post(
            "/account/plan/upgrade",
            data={"csrf_token": csrf(client), "tier": "premium", "token": token},
        )

        assert response.status_code == 303
        preview_call = next(c for c in stripe_api.calls if "create_preview" in c.request.url)
        sent = {k: v[0] for k, v in parse_qs(preview_call.request.body).items()}
        assert sent["subscription"] == "sub_real"
        assert sent["subscription_details[items][0][id]"] == "si_QXhVnC2h0Jczwc"
        assert sent["subscription_details[items][0][price]"] == "price_test_premium"
        assert sent["subscription_details[proration_behavior]"] == "always_invoice"
        update = stripe_api.calls[-1]
        body = {k: v[0] for k, v in parse_qs(update.request.body).items()}
        assert body["items[0][price]"] == "price_test_premium"
        assert body["proration_behavior"] == "always_invoice"
        assert body["payment_behavior"] == "error_if_incomplete"
        assert body["proration_date"] == sent["subscription_details[proration_date]"]
        assert update.request.headers["Idempotency-Key"] == f"test-plan-upgrade-sub_real-{token}"
        db.session.expire_all()
        assert db.session.scalars(select(Subscription)).one().tier == "premium"


def test_a_downgrade_released_outside_the_site_is_no_longer_shown(app, db, client, customer):
    subscription_id = subscribe(app, client, "premium")
    headers = {**HX, "X-CSRFToken": csrf(client)}
    client.post("/account/plan/downgrade", data={"tier": "basic"}, headers=headers)
    schedule_id = row(db).stripe_schedule_id
    assert schedule_id

    # Someone keeps Premium in the Stripe dashboard: customer.subscription.updated, no schedule.
    app.extensions["stripe_gateway"].release_subscription_schedule(
        schedule_id, idempotency_key="dashboard-release"
    )

    assert row(db).scheduled_tier is None
    assert "Changes to Basic" not in client.get("/account").get_data(as_text=True)
    assert subscription_id
