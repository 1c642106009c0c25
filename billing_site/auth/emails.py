"""What the site tells a person by email about their account, behind one function each.

Each goes through the notifications outbox (billing_site.notifications): queued
and committed here (the account change that caused it is already committed by
the caller), then sent; in development it appears at /dev/mail. The link is
logged at INFO too, so a developer without the outbox page can follow it.
"""

import hashlib
import logging

from billing_site.extensions import db
from billing_site.models import User, utcnow
from billing_site.notifications import messages

log = logging.getLogger("billing_site.auth.emails")


def send_verification_email(user: User, link: str) -> None:
    """Ask the owner of a new account to confirm their address with `link`."""
    log.info("verification email to=%s user=%s link=%s", user.email, user.id, link)
    messages.account_notice(
        f"verify_email:user:{user.id}:{_digest(link)}",  # a resent link is a new message
        kind="verify_email",
        to=user.email,
        user_id=user.id,
        subject="Confirm your email address for Pixel Forge",
        paragraphs=[
            "Welcome to Pixel Forge! Confirm that this address is yours to finish "
            "creating your account and get your free credits.",
            "If you did not sign up, ignore this email: nothing happens without the link.",
        ],
        action_label="Confirm my email address",
        action_url=link,
    )
    db.session.commit()


def send_signup_attempt_notice(user: User) -> None:
    """Tell an existing account's owner that someone tried to sign up with their address."""
    log.info("sign-up attempt notice to=%s user=%s", user.email, user.id)
    # At most one an hour, however often someone tries.
    messages.account_notice(
        f"signup_attempt:user:{user.id}:{utcnow():%Y-%m-%dT%H}",
        kind="signup_attempt",
        to=user.email,
        user_id=user.id,
        subject="Someone tried to sign up with your address",
        paragraphs=[
            "Someone tried to create a Pixel Forge account with this email address, "
            "which already has one. Nothing was changed.",
            "If it was you, log in instead (or reset your password from the log-in page).",
        ],
        action_label="Log in",
        action_url=messages.link("auth.login"),
    )
    db.session.commit()


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]
