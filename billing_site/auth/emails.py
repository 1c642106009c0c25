"""What the site tells a person by email about their account, behind one function each.

For now each one logs at INFO (the link included) so an operator or a developer
can follow it; the notifications work routes these to a mail outbox.
"""

import logging

from billing_site.models import User

log = logging.getLogger("billing_site.auth.emails")


def send_verification_email(user: User, link: str) -> None:
    """Ask the owner of a new account to confirm their address with `link`."""
    log.info("verification email to=%s user=%s link=%s", user.email, user.id, link)


def send_signup_attempt_notice(user: User) -> None:
    """Tell an existing account's owner that someone tried to sign up with their address."""
    log.info("sign-up attempt notice to=%s user=%s", user.email, user.id)
