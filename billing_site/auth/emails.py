"""What the site tells a person by email about their account, behind one function each.

Each goes through the notifications outbox (billing_site.notifications): queued
and committed here (the account change that caused it is already committed by
the caller), then sent; in development it appears at /dev/mail. The link is
logged at INFO too, so a developer without the outbox page can follow it.
"""

import hashlib
import logging

from flask import current_app

from billing_site.extensions import db
from billing_site.models import User, utcnow
from billing_site.notifications import messages

log = logging.getLogger("billing_site.auth.emails")


def send_verification_email(user: User, link: str) -> None:
    """Ask the owner of a new account to confirm their address with `link`."""
    # Never the link: whoever holds it can verify the address (and take the free credits).
    log.info("verification email to=%s user=%s", user.email, user.id)
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


def send_password_reset_email(user: User, link: str) -> None:
    """Send the owner of an account a link to choose a new password."""
    reset_minutes = current_app.config["PASSWORD_RESET_MAX_AGE_MINUTES"]
    # Never the link: it is a key to the account for an hour.
    log.info("password reset email to=%s user=%s", user.email, user.id)
    messages.account_notice(
        f"password_reset:user:{user.id}:{_digest(link)}",  # each request is its own message
        kind="password_reset",
        to=user.email,
        user_id=user.id,
        subject="Reset your Pixel Forge password",
        paragraphs=[
            "Someone (we hope you) asked to reset the password of the Pixel Forge "
            "account for this address. Choose a new one with the link below.",
            f"The link works once, for {_duration(reset_minutes)}. Setting a new password "
            "logs you out everywhere else.",
            "If you did not ask for this, ignore this email: your password stays as it is.",
        ],
        action_label="Choose a new password",
        action_url=link,
        # Sent by the worker, not by this request: a request for an unknown address
        # sends nothing, so a request that waits on the mail server would tell them apart.
        send_after_commit=False,
    )
    db.session.commit()


def _duration(minutes: int) -> str:
    if minutes % 60:
        return f"{minutes} minutes"
    hours = minutes // 60
    return "1 hour" if hours == 1 else f"{hours} hours"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]
