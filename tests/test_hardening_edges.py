"""Hostile input at the edges (issue 12, items 7, 8, 13, 18, 19).

Signed-but-malformed webhook bodies are refused with 400 and logged, the
production start-up check refuses an empty secret list, private pages are not
cached, FORCE_HTTPS spares /healthz and keeps to SITE_URL's host, and every
Stripe request carries the pinned API version and an installation-scoped key.
"""

import json

import pytest
import responses
from sqlalchemy import select

from billing_site import stripe_contract
from billing_site.config import ConfigError, finalize_config
from billing_site.models import SiteSetting
from billing_site.stripe_gateway import STRIPE_API_VERSION
from tests.catalog_prices import STRIPE_PRICE_IDS
from tests.conftest import csrf_token_from
from tests.factories import log_in, make_paid_order, make_user
from tests.stripe_events import make_event, signature_for, stripe_object

API = "https://api.stripe.com/v1"


def post_signed(client, payload: bytes | str):
    text = payload.decode("latin-1") if isinstance(payload, bytes) else payload
    body = payload if isinstance(payload, bytes) else payload.encode()
    headers = {"Stripe-Signature": signature_for(text)}
    return client.post("/stripe/webhook", data=body, headers=headers)


# --- 7: webhook bodies -----------------------------------------------------------


def test_a_non_utf8_body_is_refused_signed_or_not(client, db, caplog):
    body = b'{"id": "evt_\xff", "type": "x"}'
    for headers in ({"Stripe-Signature": "t=1,v1=00"}, {"Stripe-Signature": signature_for("x")}):
        response = client.post("/stripe/webhook", data=body, headers=headers)
        assert response.status_code == 400
        assert response.json["error"] == "invalid_webhook"
        assert "not UTF-8" in response.json["message"]


def event_with(**changes) -> str:
    event = make_event("checkout.session.completed", stripe_object("checkout_session"))
    event.update(changes)
    return json.dumps(event)


def deeply_nested(levels: int) -> str:
    event = json.loads(event_with())
    event["data"]["object"]["metadata"] = "NESTED"
    return json.dumps(event).replace('"NESTED"', "[" * levels + "]" * levels)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (event_with(created="yesterday"), "created is not a Unix time"),
        (event_with(id="evt_" + "x" * 300), "id is not a short string"),
        (event_with().replace('"livemode": false', '"livemode": NaN'), "not JSON"),
        (event_with().replace('"livemode": false', '"livemode": 1e999'), "too large a number"),
        (deeply_nested(100), "nested deeper"),
        (deeply_nested(100_000), "not JSON"),
        ("[1, 2]", "not a Stripe event"),
        (event_with(data={"object": "cs_123"}), "data.object"),
    ],
)
def test_signed_but_malformed_events_get_400_and_a_log_line(client, db, caplog, payload, reason):
    response = post_signed(client, payload)
    assert response.status_code == 400
    assert reason in response.json["message"]
    assert any("webhook rejected" in record.getMessage() for record in caplog.records)


def test_a_secret_list_of_only_commas_is_refused_in_production():
    config = {
        "APP_ENV": "production",
        "SECRET_KEY": "s" * 40,
        "DATABASE_URL": "postgresql://db/x",
        "STRIPE_SECRET_KEY": "sk_live_x",
        "STRIPE_WEBHOOK_SECRET": " , ,",
        "SESSION_COOKIE_SECURE": None,
    }
    with pytest.raises(ConfigError, match="STRIPE_WEBHOOK_SECRET holds no secret"):
        finalize_config(config)


def test_no_secret_at_all_is_a_400_not_a_crash(make_app, db):
    client = make_app(STRIPE_WEBHOOK_SECRET=",").test_client()
    response = client.post(
        "/stripe/webhook", data=event_with(), headers={"Stripe-Signature": "t=1,v1=00"}
    )
    assert response.status_code == 400


# --- 18: the pinned API version ----------------------------------------------------


def test_an_event_of_another_version_is_applied_logged_and_shown_to_the_admin(
    app, client, db, caplog
):
    stripe_contract._noted_versions.clear()
    event = make_event("customer.created", stripe_object("customer"))
    event["api_version"] = "2025-02-24.acacia"

    response = post_signed(client, json.dumps(event))

    assert response.status_code == 200
    assert any("api_version 2025-02-24.acacia" in r.getMessage() for r in caplog.records)
    admin = make_user("admin@example.com", is_admin=True)
    admin_client = app.test_client()
    log_in(admin_client, admin)
    page = admin_client.get("/admin/").get_data(as_text=True)
    assert "The webhook endpoint sends 2025-02-24.acacia; set it to 2026-07-29.dahlia" in page


# --- 19 and 18: what every Stripe request carries ----------------------------------


@pytest.fixture
def stripe_api():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def test_stripe_requests_pin_the_version_and_scope_keys_to_the_installation(make_app, stripe_api):
    app = make_app(
        STRIPE_SECRET_KEY="sk_test_123", INSTALLATION_ID="", STRIPE_PRICE_IDS=STRIPE_PRICE_IDS
    )
    stripe_api.post(f"{API}/customers", json=stripe_object("customer", id="cus_new"))
    stripe_api.post(f"{API}/checkout/sessions", json=stripe_object("checkout_session"))
    client = app.test_client()
    with app.app_context():
        log_in(client, make_user("buyer@example.com"))
    token = csrf_token_from(client.get("/auth/login").get_data(as_text=True))

    client.post("/checkout/pack/pro", data={"csrf_token": token})

    with app.app_context():
        stored = app.extensions["sqlalchemy"].session.scalar(
            select(SiteSetting.value).where(SiteSetting.name == "installation_id")
        )
    assert stored and stored.startswith("pf")
    for call in stripe_api.calls:
        assert call.request.headers["Stripe-Version"] == STRIPE_API_VERSION
        assert call.request.headers["Idempotency-Key"].startswith(f"{stored}-")


def test_a_configured_installation_id_wins(make_app, stripe_api):
    app = make_app(STRIPE_SECRET_KEY="sk_test_123", INSTALLATION_ID="staging")
    stripe_api.post(f"{API}/customers", json=stripe_object("customer", id="cus_new"))
    with app.app_context():
        user = make_user("buyer@example.com")
        app.extensions["stripe_gateway"].create_customer(email=user.email, user_id=user.id)
    key = stripe_api.calls[0].request.headers["Idempotency-Key"]
    assert key == f"staging-customer-user-{user.id}"


# --- 8 and 13: private pages, HTTPS ------------------------------------------------


def test_private_pages_are_not_cached_and_public_ones_may_be(app, client, db):
    user = make_user("ada@example.com")
    order = make_paid_order(user, "pro")
    log_in(client, user)
    for path in ("/account", "/account/ledger", f"/account/orders/{order.id}/receipt"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert response.headers["Cache-Control"] == "no-store", path
    assert "no-store" not in client.get("/pricing").headers.get("Cache-Control", "")
    admin = app.test_client()
    log_in(admin, make_user("root@example.com", is_admin=True))
    assert admin.get("/admin/").headers["Cache-Control"] == "no-store"


def test_force_https_spares_healthz_and_keeps_to_the_site_host(make_app, db):
    app = make_app(FORCE_HTTPS=True, TRUSTED_PROXIES=1, SITE_URL="https://pixel.example")
    client = app.test_client()

    assert client.get("/healthz").status_code == 200
    forged = client.get(
        "/account?x=1", headers={"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "http"}
    )
    assert forged.status_code == 302
    assert forged.headers["Location"] == "https://pixel.example/account?x=1"


# --- 6: NUL bytes, huge integers, far dates ----------------------------------------


def test_nul_bytes_huge_integers_and_far_dates_get_4xx_never_500(app, client, db):
    user = make_user("ada@example.com")
    log_in(client, user)
    token = csrf_token_from(client.get("/account").get_data(as_text=True))
    assert client.get("/checkout/success?session_id=%00").status_code == 400
    assert client.get("/account/ledger?page=99999999999999999999").status_code == 400
    assert client.get("/account/orders/99999999999999999999/receipt").status_code == 404
    nul_prompt = {"prompt": "a\x00b", "model": "standard", "csrf_token": token}
    assert client.post("/generate", data=nul_prompt).status_code == 400
    nul_json = client.post(
        "/api/v1/generations",
        data='{"prompt": "a\\u0000b", "model": "standard"}',
        content_type="application/json",
        headers={"X-CSRFToken": token},
    )
    assert nul_json.status_code == 400
    assert nul_json.json["error"] == "bad_request"

    admin = app.test_client()
    log_in(admin, make_user("root@example.com", is_admin=True))
    assert admin.get("/admin/orders?q=%00").status_code == 400
    page = admin.get("/admin/orders?to=9999-12-31")
    assert page.status_code == 200
    assert "outside 1970–9998; ignored" in page.get_data(as_text=True)
    export = admin.get("/admin/orders.csv?to=9999-12-31")
    assert export.status_code == 400
    assert "Nothing was exported" in export.get_data(as_text=True)


# --- 12: Stripe is not hammered on one customer's behalf ----------------------------


def test_the_success_page_asks_stripe_once_per_few_seconds_and_is_limited(make_app, stripe_api):
    from tests.factories import make_order

    app = make_app(
        STRIPE_SECRET_KEY="sk_test_123",
        SUCCESS_PAGE_RATE_LIMIT="8 per minute",
        CHECKOUT_RETRIEVE_INTERVAL_SECONDS=60,
    )
    client = app.test_client()
    with app.app_context():
        user = make_user("buyer@example.com")
        order = make_order(user)
        session_id = order.checkout_session_id
        log_in(client, user)
    open_session = stripe_object("checkout_session", id=session_id, payment_status="unpaid")
    stripe_api.get(f"{API}/checkout/sessions/{session_id}", json=open_session)

    statuses = [
        client.get(f"/checkout/success?session_id={session_id}").status_code for _ in range(9)
    ]

    assert statuses == [200] * 8 + [429]
    assert len(stripe_api.calls) == 1


def test_the_billing_portal_is_limited_per_customer(make_app):
    app = make_app(PORTAL_RATE_LIMIT="2 per minute")
    client = app.test_client()
    with app.app_context():
        log_in(client, make_user("ada@example.com", stripe_customer_id="cus_local_1"))
    token = csrf_token_from(client.get("/account").get_data(as_text=True))
    statuses = [
        client.post("/account/portal", data={"csrf_token": token}).status_code for _ in range(3)
    ]
    assert statuses == [303, 303, 429]
