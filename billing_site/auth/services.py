"""Accounts: creating users, checking passwords, and where a log-in may send you."""

from urllib.parse import urlsplit

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from werkzeug.security import check_password_hash, generate_password_hash

from billing_site.extensions import db
from billing_site.models import User

MIN_PASSWORD_LENGTH = 8
# Checked when the email is unknown, so a wrong email costs as long as a wrong
# password and response times do not reveal who has an account.
_DUMMY_HASH = generate_password_hash("not a real password")


class EmailTaken(Exception):
    """Another account already uses this email."""


def normalise_email(raw: str) -> str:
    """The canonical form an email is stored and looked up in (lower case).

    Raises email_validator.EmailNotValidError with a message fit to show.
    """
    result = validate_email(raw.strip(), check_deliverability=False)
    return result.normalized.lower()


def email_key(raw: str) -> str:
    """A best-effort normal form, for rate-limit keys: never raises."""
    try:
        return normalise_email(raw)
    except EmailNotValidError:
        return raw.strip().lower()


def find_user_by_email(email: str) -> User | None:
    return db.session.scalar(select(User).where(User.email == email))


def create_user(email: str, password: str, *, is_admin: bool = False) -> User:
    """Create and commit an account; raises EmailTaken if the email is in use."""
    if find_user_by_email(email) is not None:
        raise EmailTaken(email)
    user = User(email=email, password_hash=generate_password_hash(password), is_admin=is_admin)
    db.session.add(user)
    try:
        db.session.commit()
    except IntegrityError as error:
        # Two sign-ups with one email raced past the check above; the unique
        # constraint let only one of them in.
        db.session.rollback()
        raise EmailTaken(email) from error
    return user


def authenticate(email: str, password: str) -> User | None:
    """The user with this email and password, or None (in about the same time)."""
    user = find_user_by_email(email)
    if user is None:
        check_password_hash(_DUMMY_HASH, password)
        return None
    return user if check_password_hash(user.password_hash, password) else None


def create_or_promote_admin(email: str, password: str | None) -> tuple[User, bool]:
    """Make `email` an admin, creating the account if needed; returns (user, created).

    An existing user is promoted, and their password reset when one is given.
    """
    if password is not None and len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"The password must have at least {MIN_PASSWORD_LENGTH} characters.")
    user = find_user_by_email(email)
    if user is None:
        if not password:
            raise ValueError("A new admin needs a password (--password).")
        return create_user(email, password, is_admin=True), True
    user.is_admin = True
    if password:
        user.password_hash = generate_password_hash(password)
    db.session.commit()
    return user, False


def safe_next_url(value: str | None) -> str | None:
    """`value` if it is a path on this site, else None.

    Browsers read `//host`, `/\\host` and `\\\\host` as other sites, and strip
    tabs and newlines before parsing, so anything but a plain absolute path is
    refused rather than cleaned up.
    """
    if not value or not value.startswith("/") or value.startswith("//"):
        return None
    if "\\" in value or any(ord(char) < 33 or ord(char) == 127 for char in value):
        return None
    parts = urlsplit(value)
    if parts.scheme or parts.netloc:
        return None
    return value
