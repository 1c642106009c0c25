"""API keys (issue 11, item 1; TESTING.md row 45): made on /account/api-keys, shown once,
kept only as an HMAC, revoked → 401, never a way into the site's pages."""

import hashlib
import hmac
import re
from datetime import timedelta

from sqlalchemy import select

from billing_site.extensions import db
from billing_site.models import ApiKey, AuditLog, utcnow
from tests.api_helpers import assert_error_shape, bearer, make_key
from tests.conftest import csrf_token_from
from tests.factories import logged_in, make_customer

KEY_PATTERN = re.compile(r"pf_test_[A-Za-z0-9_-]{43}")


def create_on_the_page(client, name="my agent", **fields):
    token = csrf_token_from(client.get("/account/api-keys").get_data(as_text=True))
    data = {"name": name, "csrf_token": token, **fields}
    return client.post("/account/api-keys", data=data, headers={"HX-Request": "true"})


def test_a_key_is_shown_once_and_stored_only_as_its_hmac(app, client):
    user_id = make_customer(app, balance=5)
    logged_in(client, app, user_id)

    created = create_on_the_page(client)

    assert created.status_code == 201
    html = created.get_data(as_text=True)
    [key] = KEY_PATTERN.findall(html)  # 32 random bytes, URL-safe base64
    assert "shown only this once" in html
    listing = client.get("/account/api-keys").get_data(as_text=True)
    assert key not in listing and key[:12] in listing  # afterwards only its prefix
    with app.app_context():
        [row] = db.session.scalars(select(ApiKey)).all()
        expected = hmac.new(b"test-secret-key", key.encode(), hashlib.sha256).hexdigest()
        assert row.key_hash == expected
        stored = [str(value) for value in row.__dict__.values()]
        assert not any(key in value for value in stored)
        assert (row.name, row.scopes, row.user_id) == ("my agent", ["read", "write"], user_id)
    me = client.get("/api/v1/me", headers=bearer(key))
    assert (me.status_code, me.json["id"], me.json["balance"]) == (
        200,
        user_id,
        15,
    )  # with the month's 10 free


def test_using_a_key_records_when_it_was_last_used(app, client):
    user_id = make_customer(app)
    key = make_key(app, user_id)
    with app.app_context():
        assert db.session.scalars(select(ApiKey.last_used_at)).one() is None

    assert client.get("/api/v1/me", headers=bearer(key)).status_code == 200

    with app.app_context():
        last_used = db.session.scalars(select(ApiKey.last_used_at)).one()
        assert utcnow() - last_used < timedelta(seconds=30)


def test_a_revoked_key_is_401_in_the_api_error_shape(app, client):
    user_id = make_customer(app)
    key = make_key(app, user_id)
    logged_in(client, app, user_id)
    assert client.get("/api/v1/me", headers=bearer(key)).status_code == 200
    with app.app_context():
        key_id = db.session.scalars(select(ApiKey.id)).one()

    token = csrf_token_from(client.get("/account/api-keys").get_data(as_text=True))
    revoked = client.post(
        f"/account/api-keys/{key_id}/revoke", headers={"HX-Request": "true", "X-CSRFToken": token}
    )

    assert revoked.status_code == 200
    assert "revoked" in revoked.get_data(as_text=True)
    anonymous = app.test_client()
    for method, path in [("GET", "/api/v1/me"), ("POST", "/api/v1/generations")]:
        response = anonymous.open(path, method=method, headers=bearer(key), json={"prompt": "x"})
        body = assert_error_shape(response, 401, "invalid_api_key")
        assert "revoked" in body["message"]


def test_unknown_malformed_and_expired_keys_are_401(app, client):
    user_id = make_customer(app)
    key = make_key(app, user_id)
    with app.app_context():
        row = db.session.scalars(select(ApiKey)).one()
        row.expires_at = utcnow() - timedelta(seconds=1)
        db.session.commit()
    for presented in (key, key + "x", "pf_test_nothing", ""):
        response = client.get("/api/v1/me", headers=bearer(presented))
        assert_error_shape(response, 401, "invalid_api_key")


def test_creating_and_revoking_keys_is_audited(app, client):
    user_id = make_customer(app)
    logged_in(client, app, user_id)
    create_on_the_page(client, "ci")
    with app.app_context():
        key_id = db.session.scalars(select(ApiKey.id)).one()
    token = csrf_token_from(client.get("/account/api-keys").get_data(as_text=True))
    client.post(f"/account/api-keys/{key_id}/revoke", headers={"X-CSRFToken": token})

    with app.app_context():
        entries = db.session.execute(
            select(AuditLog.admin_id, AuditLog.action, AuditLog.target_id).order_by(AuditLog.id)
        ).all()
    assert entries == [
        (user_id, "api_key.created", str(key_id)),
        (user_id, "api_key.revoked", str(key_id)),
    ]


def test_a_key_with_an_expiry_date_and_a_bad_name_on_the_page(app, client):
    user_id = make_customer(app)
    logged_in(client, app, user_id)

    refused = create_on_the_page(client, name="  ")
    dated = create_on_the_page(client, name="nightly", expires_on="2099-01-31")

    assert refused.status_code == 422
    assert "Give the key a name" in refused.get_data(as_text=True)
    assert dated.status_code == 201
    with app.app_context():
        row = db.session.scalars(select(ApiKey)).one()
        assert row.expires_at.isoformat() == "2099-01-31T23:59:59.999999+00:00"


def test_a_key_never_opens_the_sites_pages(app):
    user_id = make_customer(app, balance=5)
    key = make_key(app, user_id)
    client = app.test_client()
    for path in ("/account", "/account/api-keys", "/admin/"):
        response = client.get(path, headers=bearer(key))
        assert response.status_code == 302, path
        assert "/auth/login" in response.headers["Location"]
    # … nor lets a form post without the page's CSRF token.
    posted = client.post("/generate", data={"prompt": "a cat"}, headers=bearer(key))
    assert posted.status_code == 400


def test_only_an_admin_can_create_an_admin_scoped_key(app, client):
    customer_id = make_customer(app)
    logged_in(client, app, customer_id)
    page = client.get("/account/api-keys").get_data(as_text=True)
    assert 'name="admin"' not in page  # the option is not even offered
    refused = create_on_the_page(client, "sneaky", admin="1")
    assert refused.status_code == 422
    assert "Only an admin" in refused.get_data(as_text=True)

    key = make_key(app, customer_id)
    over_api = client.post(
        "/api/v1/api-keys", json={"name": "x", "scopes": ["admin"]}, headers=bearer(key)
    )
    assert_error_shape(over_api, 403, "forbidden")
    with app.app_context():
        assert db.session.scalars(select(ApiKey.scopes)).all() == [["read", "write"]]


def test_a_program_rotates_its_key_over_the_api(app, client):
    user_id = make_customer(app)
    key = make_key(app, user_id)

    created = client.post(
        "/api/v1/api-keys",
        json={"name": "rotated", "expires_at": "2099-01-01T00:00:00Z", "scopes": ["read"]},
        headers=bearer(key),
    )

    assert created.status_code == 201
    new_key = created.json["key"]
    assert KEY_PATTERN.fullmatch(new_key)
    assert created.json["expires_at"] == "2099-01-01T00:00:00Z"
    listed = client.get("/api/v1/api-keys", headers=bearer(new_key)).json["data"]
    assert [k["name"] for k in listed] == ["rotated", "test"]
    assert all("key" not in k for k in listed)
    # A read-only key can read but not spend, and cannot mint a stronger key.
    spend = client.post("/api/v1/generations", json={"prompt": "a cat"}, headers=bearer(new_key))
    assert_error_shape(spend, 403, "insufficient_scope")
    old_id = next(k["id"] for k in listed if k["name"] == "test")
    assert client.delete(f"/api/v1/api-keys/{old_id}", headers=bearer(key)).status_code == 200
    assert_error_shape(client.get("/api/v1/me", headers=bearer(key)), 401, "invalid_api_key")


def test_each_key_has_its_own_rate_limit_with_headers(make_app):
    app = make_app(API_KEY_RATE_LIMIT="3 per minute")
    first_id, second_id = make_customer(app), make_customer(app)
    first, second = make_key(app, first_id), make_key(app, second_id)
    client = app.test_client()

    answers = [client.get("/api/v1/me", headers=bearer(first)) for _ in range(4)]

    assert [a.status_code for a in answers] == [200, 200, 200, 429]
    assert answers[0].headers["X-RateLimit-Limit"] == "3"
    assert [a.headers["X-RateLimit-Remaining"] for a in answers[:3]] == ["2", "1", "0"]
    assert "X-RateLimit-Reset" in answers[0].headers
    assert "Retry-After" in answers[3].headers
    assert_error_shape(answers[3], 429)
    assert client.get("/api/v1/me", headers=bearer(second)).status_code == 200
