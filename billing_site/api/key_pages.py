"""GET /account/api-keys: a customer makes, lists and revokes their API keys (HTMX).

A page of the site, not of the API: cookie session and CSRF token as everywhere,
and an API key does not open it.
"""

from datetime import UTC, date, datetime, time

from flask import Blueprint, request
from flask_login import current_user, login_required

from billing_site.api import auth
from billing_site.htmx import render_page_or_fragment

bp = Blueprint("api_keys", __name__, url_prefix="/account/api-keys")


@bp.get("")
@login_required
def index():
    return _render(200)


@bp.post("")
@login_required
def create():
    name = request.form.get("name", "")
    try:
        expires_at = _end_of(request.form.get("expires_on", ""))
        scopes = ["read", "write", "admin"] if request.form.get("admin") else None
        new = auth.create_key(current_user, name, expires_at=expires_at, scopes=scopes)
    except auth.KeyRefused as refused:
        return _render(422, error=refused.message, name=name)
    return _render(201, new_key=new)


@bp.post("/<int:key_id>/revoke")
@login_required
def revoke(key_id: int):
    if auth.revoke_key(current_user, key_id) is None:
        return _render(404, error="No such key.")
    return _render(200)


def _end_of(text: str) -> datetime | None:
    """The end (UTC) of the day the customer picked, or None for a key that never expires."""
    if not text.strip():
        return None
    try:
        day = date.fromisoformat(text.strip())
    except ValueError:
        raise auth.KeyRefused("Pick the expiry as a date, like 2027-01-31.", "expires_on") from None
    return datetime.combine(day, time.max, tzinfo=UTC)


def _render(status: int, **context):
    context.setdefault("name", "")
    return render_page_or_fragment(
        "account/api_keys.html",
        "account/_api_keys.html",
        status,
        keys=auth.list_keys(current_user.id),
        can_create_admin=current_user.is_admin,
        **context,
    )
