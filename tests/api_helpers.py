"""Helpers for the API tests: a key for a user, and the header that carries it."""

from billing_site.api import auth
from billing_site.extensions import db
from billing_site.models import User


def make_key(app, user_id: int, *, scopes: list[str] | None = None, name: str = "test") -> str:
    """A new API key for the user (as the account page would make it); the whole key."""
    with app.app_context():
        user = db.session.get(User, user_id)
        secret = auth.create_key(user, name, scopes=scopes).secret
        db.session.remove()
        return secret


def bearer(key: str, **headers) -> dict:
    return {"Authorization": f"Bearer {key}", **headers}


def assert_error_shape(response, status: int, code: str | None = None) -> dict:
    """The API's one error shape: {"error", "message", "field"?} as JSON."""
    assert response.status_code == status, (response.status_code, response.get_data(as_text=True))
    assert response.is_json, response.get_data(as_text=True)[:200]
    body = response.get_json()
    assert isinstance(body.get("error"), str) and body["error"], body
    assert isinstance(body.get("message"), str) and body["message"], body
    assert "field" not in body or isinstance(body["field"], str), body
    if code is not None:
        assert body["error"] == code, body
    return body
