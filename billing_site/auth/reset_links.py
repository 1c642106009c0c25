"""Signed, expiring, single-use password-reset links (itsdangerous), and redeeming one.

A link names the user and a fingerprint of their password hash and email. Setting
a password (through the link or any other way) changes the hash, so a link works
once and every older link dies with it; no table of used tokens is needed.
"""

import hashlib
import hmac

from flask import current_app, url_for
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from billing_site.auth import emails, services
from billing_site.extensions import db
from billing_site.models import User

SALT = "password-reset"  # a verification token can never pass for a reset token


class LinkRefused(Exception):
    """The link cannot reset a password; `status` and `message` are for the person."""

    status = 400
    message = "This password-reset link is not valid."


class LinkExpired(LinkRefused):
    status = 410
    message = "This password-reset link has expired."


class LinkUsed(LinkRefused):
    # Or superseded: any password set since the link was sent ends it.
    status = 410
    message = "This password-reset link has already been used."


def _serializer() -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(current_app.config["SECRET_KEY"], salt=SALT)


def _fingerprint(user: User) -> str:
    # Keyed, so the token (readable, only signed) reveals nothing about the hash.
    secret = current_app.config["SECRET_KEY"].encode()
    state = f"{user.password_hash}|{user.email}".encode()
    return hmac.new(secret, state, hashlib.sha256).hexdigest()[:32]


def max_age_seconds() -> int:
    return current_app.config["PASSWORD_RESET_MAX_AGE_MINUTES"] * 60


def reset_link(user: User) -> str:
    """An absolute link (on SITE_URL) that lets `user` choose a new password, once."""
    token = _serializer().dumps({"user": user.id, "state": _fingerprint(user)})
    return current_app.config["SITE_URL"] + url_for("auth.reset_password", token=token)


def user_for(token: str, *, lock: bool = False) -> User:
    """The user a valid, unexpired, unused token names; raises LinkRefused otherwise."""
    try:
        data = _serializer().loads(token, max_age=max_age_seconds())
    except SignatureExpired as error:
        raise LinkExpired from error
    except BadSignature as error:
        raise LinkRefused from error
    if not isinstance(data, dict) or not isinstance(data.get("user"), int):
        raise LinkRefused
    user = db.session.get(User, data["user"], with_for_update=lock, populate_existing=lock)
    if user is None:
        raise LinkRefused
    if not hmac.compare_digest(str(data.get("state")), _fingerprint(user)):
        raise LinkUsed
    return user


def redeem(token: str, new_password: str) -> User:
    """Set the password the token allows, once even under concurrent submits; commits."""
    # The row lock makes a second submit of the same link wait, then see the new
    # hash and be refused as used.
    user = user_for(token, lock=True)
    services.reset_password(user, new_password)
    return user


def send_reset_link(email: str) -> str | None:
    """Email a reset link to the account with this address, if any; returns the link."""
    user = services.find_user_by_email(email)
    if user is None:
        return None  # the page says the same either way; no email, no account made
    link = reset_link(user)
    emails.send_password_reset_email(user, link)
    return link
