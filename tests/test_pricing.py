"""The pricing page and the catalog's JSON twins."""

import logging
import re
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import pytest

from billing_site.pricing.routes import format_money
from tests.conftest import TEST_PASSWORD, csrf_token_from
from tests.factories import logged_in, make_customer, make_user, verification_path


def card(html: str, card_id: str) -> str:
    """The HTML of one pricing card, by its id (pack-<id> or tier-<id>)."""
    match = re.search(rf'<article[^>]*id="{card_id}"[^>]*>(.*?)</article>', html, re.DOTALL)
    assert match, f"no card {card_id}"
    return re.sub(r"\s+", " ", match.group(0))


@pytest.fixture
def pricing_html(client):
    response = client.get("/pricing")
    assert response.status_code == 200
    return response.get_data(as_text=True)


@pytest.fixture
def customer_client(app, client):
    logged_in(client, app, make_customer(app, balance=42))
    return client


@pytest.fixture
def customer_pricing_html(customer_client):
    response = customer_client.get("/pricing")
    assert response.status_code == 200
    return response.get_data(as_text=True)


def buy_link(html: str, card_id: str, label: str) -> str:
    """The href of a card's Buy or Subscribe link (what a visitor who is not logged in sees)."""
    match = re.search(rf'<a class="button[^"]*" href="([^"]+)">{label}</a>', card(html, card_id))
    assert match, f"no {label} link in {card_id}"
    return match.group(1).replace("&amp;", "&")


@pytest.mark.parametrize(
    ("pack_id", "name", "credits", "price", "per_credit", "saving"),
    [
        ("starter", "Starter Pack", "20", "$5.00", "$0.25/credit", None),
        ("pro", "Pro Pack", "100", "$20.00", "$0.20/credit", "Save 20%"),
        ("enterprise", "Enterprise Pack", "300", "$50.00", "$0.17/credit", "Save 33%"),
        ("ultimate", "Ultimate Pack", "1,000", "$150.00", "$0.15/credit", "Save 40%"),
    ],
)
def test_pricing_page_shows_each_pack(
    pricing_html, pack_id, name, credits, price, per_credit, saving
):
    html = card(pricing_html, f"pack-{pack_id}")
    assert name in html
    assert f"<strong>{credits}</strong> credits" in html
    assert price in html
    assert per_credit in html
    if saving:
        assert saving in html
    else:
        assert "Save" not in html


def test_only_the_popular_pack_wears_the_ribbon(pricing_html):
    assert "Most popular" in card(pricing_html, "pack-pro")
    assert "card-popular" in card(pricing_html, "pack-pro")
    for other in ("starter", "enterprise", "ultimate"):
        assert "Most popular" not in card(pricing_html, f"pack-{other}")


def test_a_customers_buy_buttons_are_csrf_protected_forms_to_checkout(customer_pricing_html):
    token = csrf_token_from(customer_pricing_html)
    for pack_id in ("starter", "pro", "enterprise", "ultimate"):
        html = card(customer_pricing_html, f"pack-{pack_id}")
        assert f'<form method="post" action="/checkout/pack/{pack_id}">' in html
        assert f'name="csrf_token" value="{token}"' in html
        assert ">Buy</button>" in html


@pytest.mark.parametrize(
    ("tier", "price", "credits", "models"),
    [
        ("free", "$0.00", "<strong>10</strong> credits a month", ["Standard"]),
        ("basic", "$9.99", "<strong>200</strong> credits a month", ["Standard", "HD"]),
        ("premium", "$29.99", "<strong>Unlimited</strong>", ["Standard", "HD", "Pro"]),
    ],
)
def test_pricing_page_shows_each_tier(pricing_html, tier, price, credits, models):
    html = card(pricing_html, f"tier-{tier}")
    assert f'{price}</span><span class="price-unit">/month' in html
    assert credits in html
    assert re.findall(r'<span class="pill">([^<]+)</span>', html) == models


def test_paid_tiers_subscribe_and_the_free_tier_comes_with_an_account(customer_pricing_html):
    free = card(customer_pricing_html, "tier-free")
    # The customer has signed up: the free tier is their plan, not a promise.
    assert "Current plan" in free
    assert "Included when you sign up" not in free
    assert "<form" not in free
    for tier in ("basic", "premium"):
        html = card(customer_pricing_html, f"tier-{tier}")
        assert f'<form method="post" action="/checkout/plan/{tier}">' in html
        assert 'name="csrf_token"' in html
        assert ">Subscribe</button>" in html


@pytest.mark.parametrize(
    ("card_id", "label"),
    [
        ("pack-starter", "Buy"),
        ("pack-pro", "Buy"),
        ("pack-enterprise", "Buy"),
        ("pack-ultimate", "Buy"),
        ("tier-basic", "Subscribe"),
        ("tier-premium", "Subscribe"),
    ],
)
def test_a_visitor_is_offered_links_to_sign_up_and_come_back_instead_of_forms(
    pricing_html, card_id, label
):
    link = urlsplit(buy_link(pricing_html, card_id, label))

    assert link.path == "/auth/signup"
    assert parse_qs(link.query) == {"next": ["/pricing"]}
    assert "<form" not in card(pricing_html, card_id)


@pytest.mark.parametrize("path", ["/pricing", "/"])
def test_a_visitor_gets_the_page_without_a_csrf_token_or_a_session_cookie(client, path):
    for _ in range(2):  # the first visit and a later one
        response = client.get(path)

        assert response.status_code == 200
        assert "Set-Cookie" not in response.headers
        html = response.get_data(as_text=True)
        assert "csrf" not in html.lower()
        assert "hx-headers" not in html


@pytest.mark.parametrize("path", ["/pricing", "/"])
def test_a_later_visitor_gets_the_same_page_and_security_headers_as_the_first(app, path):
    first = app.test_client().get(path)
    later = app.test_client().get(path)

    assert later.status_code == 200
    assert later.get_data() == first.get_data()
    assert sorted(later.headers.items()) == sorted(first.headers.items())
    assert "script-src 'self'" in later.headers["Content-Security-Policy"]
    assert later.headers["X-Frame-Options"] == "DENY"
    assert later.headers["Vary"] == "Cookie"


def test_a_page_answered_over_https_is_never_replayed_over_plain_http(make_app):
    app = make_app(FORCE_HTTPS=True)
    secure = app.test_client().get("/pricing", base_url="https://localhost")
    behind_proxy = app.test_client().get("/pricing", headers={"X-Forwarded-Proto": "https"})

    plain = app.test_client().get("/pricing")

    assert secure.status_code == behind_proxy.status_code == 200
    assert "max-age" in secure.headers["Strict-Transport-Security"]
    assert "max-age" in behind_proxy.headers["Strict-Transport-Security"]
    assert plain.status_code == 302
    assert plain.headers["Location"] == "https://localhost/pricing"
    assert "Strict-Transport-Security" not in plain.headers
    again = app.test_client().get("/pricing", base_url="https://localhost")
    assert again.get_data() == secure.get_data()
    assert again.headers["Strict-Transport-Security"] == secure.headers["Strict-Transport-Security"]


def test_a_visitor_who_signs_up_from_buy_comes_back_to_buy_forms(client, db, pricing_html, caplog):
    caplog.set_level(logging.INFO, logger="billing_site.auth.emails")
    signup_url = buy_link(pricing_html, "pack-pro", "Buy")
    token = csrf_token_from(client.get(signup_url).get_data(as_text=True))
    data = {
        "email": "newbuyer@example.com",
        "password": TEST_PASSWORD,
        "password_confirm": TEST_PASSWORD,
        "csrf_token": token,
    }

    client.post(signup_url, data=data)
    response = client.get(verification_path(client))

    assert response.status_code == 302
    assert response.headers["Location"] == "/pricing"
    html = client.get("/pricing").get_data(as_text=True)
    assert '<form method="post" action="/checkout/pack/pro">' in card(html, "pack-pro")
    assert "Your email is verified" in html


def test_a_customers_page_never_reaches_a_visitor_and_the_reverse(app, client, db):
    before = app.test_client().get("/pricing").get_data(as_text=True)  # a visitor's page first
    logged_in(client, app, make_customer(app, balance=42))

    customer_html = client.get("/pricing").get_data(as_text=True)
    after = app.test_client().get("/pricing").get_data(as_text=True)
    # A visitor who holds a session cookie without being logged in (from the log-in page).
    with_cookie = app.test_client()
    with_cookie.get("/auth/login")
    after_with_cookie = with_cookie.get("/pricing").get_data(as_text=True)

    assert '<span class="badge-number">42</span>' in customer_html
    assert "Log out" in customer_html
    assert 'action="/checkout/pack/pro"' in customer_html
    for html in (before, after, after_with_cookie):
        assert 'id="balance-badge"' not in html
        assert "Log out" not in html
        assert "/checkout/" not in html
        assert "Log in</a>" in html


def test_a_flash_message_is_shown_once_to_its_visitor_only(app, auth, client, db):
    make_user("leaving@example.com")
    auth.login("leaving@example.com")
    auth.logout()
    other_visitor = app.test_client()

    assert "You are logged out." in client.get("/pricing").get_data(as_text=True)
    assert "You are logged out." not in client.get("/pricing").get_data(as_text=True)
    assert "You are logged out." not in other_visitor.get("/pricing").get_data(as_text=True)


def test_tier_features_are_listed(pricing_html):
    assert "<li>HD and Pro models</li>" in card(pricing_html, "tier-premium")


def test_home_page_is_a_landing_page_and_pricing_stays_the_full_pricing_page(client, pricing_html):
    home = client.get("/").get_data(as_text=True)

    assert "<title>AI images from a sentence · Pixel Forge</title>" in home
    assert home.count('<img src="data:image/svg+xml;base64,') == 3  # the example generations
    for tier in ("free", "basic", "premium"):
        assert f'id="plan-{tier}"' in home
    assert 'href="/auth/signup"' in home and 'href="/pricing"' in home
    assert "pack-pro" not in home
    assert "<title>Pricing · Pixel Forge</title>" in pricing_html
    assert card(pricing_html, "pack-pro")


# --- JSON ----------------------------------------------------------------------------


def usd(cents: int, display: str) -> dict:
    return {"amount": cents, "currency": "usd", "display": display}


def test_packages_api_lists_the_packs_with_computed_savings(client):
    # The old path answers the catalog's packs, in the API's one money shape.
    response = client.get("/api/v1/stripe/packages")

    assert response.status_code == 200
    packs = response.get_json()["packs"]
    assert packs == client.get("/api/v1/catalog").get_json()["packs"]
    assert [(p["id"], p["credits"], p["price"], p["savings_percent"]) for p in packs] == [
        ("starter", 20, usd(500, "$5.00"), 0),
        ("pro", 100, usd(2000, "$20.00"), 20),
        ("enterprise", 300, usd(5000, "$50.00"), 33),
        ("ultimate", 1000, usd(15000, "$150.00"), 40),
    ]
    pro = packs[1]
    assert (pro["popular"], pro["price_per_credit"]) == (True, usd(20, "$0.20"))
    assert pro["unlocks"] == {"standard": 100, "hd": 50, "pro": 25}


def test_tiers_api_lists_the_tiers_in_minor_units(client):
    response = client.get("/api/v1/subscriptions/tiers")

    assert response.status_code == 200
    tiers = {tier["id"]: tier for tier in response.get_json()["tiers"]}
    assert list(tiers) == ["free", "basic", "premium"]
    assert tiers["basic"] == {
        "id": "basic",
        "name": "Basic",
        "price": usd(999, "$9.99"),
        "interval": "month",
        "allowance": 200,
        "unlimited": False,
        "models": ["standard", "hd"],
        "features": ["200 credits every month", "HD model", "Email support"],
    }
    assert tiers["free"]["price"] == usd(0, "$0.00")
    assert (tiers["premium"]["allowance"], tiers["premium"]["unlimited"]) == (None, True)


def test_stripe_config_api_gives_only_the_publishable_key(make_app):
    client = make_app(STRIPE_PUBLISHABLE_KEY="pk_test_abc").test_client()

    response = client.get("/api/v1/stripe/config")

    assert response.status_code == 200
    assert response.get_json() == {"publishable_key": "pk_test_abc"}


# --- an operator's catalog -----------------------------------------------------------

OPERATOR_CATALOG = """
currency = "eur"
base_cents_per_credit = 10

[[packs]]
id = "small"
name = "Small Bag"
credits = 50
price_cents = 500

[[packs]]
id = "big"
name = "Big Bag"
credits = 500
price_cents = 3000
popular = true

[[tiers]]
id = "free"
name = "Hobby"
price_cents = 0
credits_per_month = 5
models = ["standard"]

[[tiers]]
id = "studio"
name = "Studio"
price_cents = 4900
credits_per_month = -1
models = ["standard", "pro"]
features = ["Everything, all the time"]

[[models]]
id = "standard"
name = "Standard"
cost = 1

[[models]]
id = "pro"
name = "Pro"
cost = 4
"""


@pytest.fixture
def operator_client(make_app, tmp_path):
    catalog_file = tmp_path / "catalog.toml"
    catalog_file.write_text(OPERATOR_CATALOG)
    return make_app(CATALOG_FILE=str(catalog_file)).test_client()


def test_an_operator_catalog_file_replaces_the_packs_and_tiers(operator_client):
    html = operator_client.get("/pricing").get_data(as_text=True)

    big = card(html, "pack-big")
    assert "€30.00" in big
    assert "€0.06/credit" in big
    assert "Save 40%" in big
    assert "Most popular" in big
    assert "Save" not in card(html, "pack-small")
    assert ">Subscribe</a>" in card(html, "tier-studio")
    assert "Starter Pack" not in html
    assert 'id="tier-basic"' not in html


def test_an_operator_catalog_file_changes_the_json_too(operator_client):
    packages = operator_client.get("/api/v1/stripe/packages").get_json()
    tiers = operator_client.get("/api/v1/subscriptions/tiers").get_json()["tiers"]

    assert [(p["id"], p["savings_percent"], p["price"]["currency"]) for p in packages["packs"]] == [
        ("small", 0, "eur"),
        ("big", 40, "eur"),
    ]
    assert [(t["id"], t["price"]["amount"], t["allowance"]) for t in tiers] == [
        ("free", 0, 5),
        ("studio", 4900, None),
    ]


# --- formatting money ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("cents", "currency", "text"),
    [
        (2000, "usd", "$20.00"),
        (999, "usd", "$9.99"),
        (0, "usd", "$0.00"),
        (123456, "usd", "$1,234.56"),
        (Decimal(5000) / 300, "usd", "$0.17"),
        (500, "eur", "€5.00"),
        (500, "chf", "5.00 CHF"),
    ],
)
def test_money_is_formatted_from_integer_cents(cents, currency, text):
    assert format_money(cents, currency) == text
