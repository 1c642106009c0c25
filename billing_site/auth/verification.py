"""Signed, expiring email-verification links (itsdangerous), and what verifying grants."""

from flask import current_app, url_for
from itsdangerous import BadSignature, URLSafeTimedSerializer

from billing_site.extensions import db
from billing_site.models import User, utcnow

SALT = "email-verification"


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=SALT)


def verification_link(user: User, next_url: str | None = None) -> str:
    """An absolute link (on SITE_URL) that verifies `user`'s current email."""
    token = _serializer().dumps({"user": user.id, "email": user.email, "next": next_url})
    return current_app.config["SITE_URL"] + url_for("auth.verify_email", token=token)


def read_token(token: str) -> tuple[User | None, str | None]:
    """The user a valid, unexpired token names (if the email is still theirs), and its next."""
    max_age = current_app.config["EMAIL_VERIFICATION_MAX_AGE_HOURS"] * 3600
    try:
        data = _serializer().loads(token, max_age=max_age)
    except BadSignature:  # SignatureExpired is one too
        return None, None
    if not isinstance(data, dict) or not isinstance(data.get("user"), int):
        return None, None
    user = db.session.get(User, data["user"])
    if user is None or user.email != data.get("email"):
        return None, None
    next_url = data.get("next")
    return user, next_url if isinstance(next_url, str) else None


def mark_verified(user: User) -> None:
    """Record the verification and grant this month's free credits; commits."""
    from billing_site.account.services import grant_free_allowance

    if user.email_verified_at is None:
        user.email_verified_at = utcnow()
    grant_free_allowance(user)
    db.session.commit()


def verification_required() -> bool:
    return bool(current_app.config["REQUIRE_EMAIL_VERIFICATION"])
