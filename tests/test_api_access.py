"""Who may do what through the API (issue 11, item 6): CSRF with a cookie but not with
a key, one customer's key never reads another's payment, admin routes need an admin's
admin-scoped key, and every use of such a key is audited."""

import responses
from sqlalchemy import select

from billing_site.extensions import db
from billing_site.models import AuditLog, Refund, User
from tests.admin_actions import STRIPE_REFUNDS_URL, STRIPE_TEST_KEY, order_state, refund_callback
from tests.api_helpers import assert_error_shape, bearer, make_key
from tests.conftest import csrf_token_from
from tests.factories import logged_in, make_customer, make_paid_order, make_user


def paid_order_for(app, user_id: int, item: str = "pro") -> int:
    with app.app_context():
        return make_paid_order(db.session.get(User, user_id), item).id


def test_a_key_needs_no_csrf_token_but_a_cookie_session_still_does(app):
    user_id = make_customer(app, balance=5)
    key = make_key(app, user_id)
    cookie = app.test_client()
    logged_in(cookie, app, user_id)
    cookie.get("/pricing")

    with_key = app.test_client().post(
        "/api/v1/generations", json={"prompt": "a cat"}, headers=bearer(key)
    )
    without_token = cookie.post("/api/v1/generations", json={"prompt": "a cat"})
    token = csrf_token_from(cookie.get("/auth/login").get_data(as_text=True))
    with_token = cookie.post(
        "/api/v1/generations", json={"prompt": "a cat"}, headers={"X-CSRFToken": token}
    )

    assert with_key.status_code == 201
    assert "Set-Cookie" not in with_key.headers  # a key stands for this request only
    assert_error_shape(without_token, 400, "csrf_failed")
    assert with_token.status_code == 201


def test_a_customers_key_cannot_read_another_customers_payment(app, client):
    mine_id, theirs_id = make_customer(app), make_customer(app)
    mine = paid_order_for(app, mine_id)
    theirs = paid_order_for(app, theirs_id)
    key = make_key(app, mine_id)

    own = client.get(f"/api/v1/payments/{mine}", headers=bearer(key))
    other = client.get(f"/api/v1/payments/{theirs}", headers=bearer(key))
    other_alias = client.get(f"/api/v1/orders/{theirs}", headers=bearer(key))
    missing = client.get("/api/v1/payments/999999", headers=bearer(key))
    listed = client.get("/api/v1/payments", headers=bearer(key)).json["data"]

    assert own.status_code == 200
    assert own.json["status"] == "paid" and own.json["paid_at"].endswith("Z")
    assert own.json["receipt_url"] == f"http://localhost/account/orders/{mine}/receipt"
    assert other.json == missing.json == other_alias.json  # not theirs looks like not there
    assert_error_shape(other, 404, "not_found")
    assert [payment["id"] for payment in listed] == [mine]


def test_admin_routes_need_an_admin_scoped_key_created_by_an_admin(app, client):
    customer_id = make_customer(app)
    order_id = paid_order_for(app, customer_id)
    with app.app_context():
        admin_id = make_user("root@example.com", is_admin=True).id
    customer_key = make_key(app, customer_id)
    plain_admin_key = make_key(app, admin_id)
    admin_key = make_key(app, admin_id, scopes=["read", "write", "admin"])
    refund = {"reason": "requested_by_customer", "preview": True}
    url = f"/api/v1/admin/payments/{order_id}/refunds"

    for key in (customer_key, plain_admin_key):
        assert_error_shape(client.get("/api/v1/admin/payments", headers=bearer(key)), 403)
        assert_error_shape(client.post(url, json=refund, headers=bearer(key)), 403)
    assert_error_shape(client.get("/api/v1/admin/payments"), 401)

    found = client.get("/api/v1/admin/payments?q=example.com", headers=bearer(admin_key))
    preview = client.post(url, json=refund, headers=bearer(admin_key))

    assert found.status_code == 200
    assert [p["id"] for p in found.json["data"]] == [order_id]
    assert found.json["data"][0]["customer"]["id"] == customer_id
    assert preview.status_code == 200
    assert preview.json["amount"]["amount"] == 2000
    assert preview.json["credits_clawed_back"] == 100
    with app.app_context():
        audited = db.session.execute(
            select(AuditLog.admin_id, AuditLog.action, AuditLog.details).where(
                AuditLog.action == "api_key.admin_request"
            )
        ).all()
    # Every use of the admin key, and only of it, is in the audit log.
    assert [(a, d["method"], d["status"]) for a, _, d in audited] == [
        (admin_id, "GET", 200),
        (admin_id, "POST", 200),
    ]


def test_an_admin_refunds_through_the_api_once_per_idempotency_key(make_app):
    app = make_app(STRIPE_SECRET_KEY=STRIPE_TEST_KEY)
    client = app.test_client()
    customer_id = make_customer(app)
    order_id = paid_order_for(app, customer_id)
    with app.app_context():
        admin_id = make_user("root@example.com", is_admin=True).id
    key = make_key(app, admin_id, scopes=["read", "write", "admin"])
    url = f"/api/v1/admin/payments/{order_id}/refunds"
    body = {"amount": 500, "reason": "requested_by_customer", "note": "asked nicely"}

    with responses.RequestsMock() as stripe:
        stripe.add_callback(responses.POST, STRIPE_REFUNDS_URL, callback=refund_callback())
        missing_key = client.post(url, json=body, headers=bearer(key))
        first = client.post(url, json=body, headers=bearer(key, **{"Idempotency-Key": "r1"}))
        again = client.post(url, json=body, headers=bearer(key, **{"Idempotency-Key": "r1"}))
        too_much = client.post(
            url,
            json={**body, "amount": 1600},
            headers=bearer(key, **{"Idempotency-Key": "r2"}),
        )
        assert len(stripe.calls) == 1

    assert_error_shape(missing_key, 400, "idempotency_key_required")
    assert first.status_code == 201 and first.json == again.json
    assert first.json["refund"]["amount"]["amount"] == 500
    assert first.json["preview"]["credits_clawed_back"] == 25
    assert first.json["payment"]["status"] == "partially_refunded"
    body = assert_error_shape(too_much, 409, "refund_refused")
    assert "$15.00" in body["message"]  # the same bound as the admin page
    state = order_state(app, order_id)
    assert (state["amount_refunded_cents"], state["balance"]) == (500, 75)
    with app.app_context():
        assert db.session.scalars(select(Refund.admin_id)).all() == [admin_id]
