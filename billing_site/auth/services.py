"""Accounts: creating users, checking passwords, and where a log-in may send you."""

import unicodedata
from urllib.parse import urlsplit

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from werkzeug.security import check_password_hash, generate_password_hash

from billing_site import audit
from billing_site.auth.verification import mark_verified
from billing_site.extensions import db
from billing_site.lookalikes import skeleton
from billing_site.models import User, utcnow

MIN_PASSWORD_LENGTH = 8
# Checked when the email is unknown, so a wrong email costs as long as a wrong
# password and response times do not reveal who has an account.
_DUMMY_HASH = generate_password_hash("not a real password")


class EmailTaken(Exception):
    """Another account already uses this email (or one that looks just like it)."""

    def __init__(self, email: str, owner: User | None = None, lookalike: bool = False):
        super().__init__(email)
        self.owner = owner
        self.lookalike = lookalike


class WeakPassword(ValueError):
    """The password is too easy to guess; the message says why."""


def normalise_email(raw: str) -> str:
    """The canonical form an email is stored and looked up in (lower case).

    Raises email_validator.EmailNotValidError with a message fit to show.
    """
    result = validate_email(raw.strip(), check_deliverability=False)
    # NFKC folds full-width and other compatibility forms (ａdmin -> admin).
    return unicodedata.normalize("NFKC", result.normalized).lower()


def email_key(raw: str) -> str:
    """A best-effort normal form, for rate-limit keys: never raises."""
    try:
        return normalise_email(raw)
    except EmailNotValidError:
        return raw.strip().lower()


def find_user_by_email(email: str) -> User | None:
    return db.session.scalar(select(User).where(User.email == email))


def find_lookalike(email: str) -> User | None:
    """An account whose email looks the same as `email` (same confusable skeleton)."""
    return db.session.scalar(select(User).where(User.email_skeleton == skeleton(email)).limit(1))


def check_password_strength(password: str, email: str = "") -> None:
    """Raise WeakPassword when `password` is common, guessable or the email itself."""
    if len(password.strip()) < MIN_PASSWORD_LENGTH:
        raise WeakPassword(f"Use at least {MIN_PASSWORD_LENGTH} characters besides spaces.")
    lowered = password.strip().lower()
    if email and lowered in {email.lower(), email.split("@", 1)[0].lower()}:
        raise WeakPassword("Do not use your email address as your password.")
    # zxcvbn knows the common-password lists, keyboard walks and repeats; 2 of 4
    # ("somewhat guessable") is the least it accepts. Long inputs cost it time.
    from zxcvbn import zxcvbn  # its dictionaries cost a worker ~0.4 s to load: only when used

    result = zxcvbn(password[:72], user_inputs=[email])
    if result["score"] < 2:
        hint = result["feedback"].get("warning") or "It is too easy to guess."
        raise WeakPassword(f"Choose a stronger password: {hint.rstrip('.')}.")


def create_user(email: str, password: str, *, is_admin: bool = False) -> User:
    """Create and commit an account; raises EmailTaken if the email (or a look-alike) is in use."""
    existing = find_user_by_email(email)
    if existing is not None:
        raise EmailTaken(email, existing)
    lookalike = find_lookalike(email)
    if lookalike is not None:
        raise EmailTaken(email, lookalike, lookalike=True)
    user = User(
        email=email,
        password_hash=generate_password_hash(password),
        is_admin=is_admin,
        # An admin is made by the operator at the command line, who vouches for the address.
        email_verified_at=utcnow() if is_admin else None,
    )
    db.session.add(user)
    try:
        db.session.commit()
    except IntegrityError as error:
        # Two sign-ups with one email raced past the check above; the unique
        # constraint let only one of them in.
        db.session.rollback()
        raise EmailTaken(email, find_user_by_email(email)) from error
    return user


def end_all_sessions(user: User) -> None:
    """Invalidate every session and remember cookie of `user` (the caller commits)."""
    user.session_version = (user.session_version or 0) + 1


def change_password(user: User, current: str, new: str) -> bool:
    """Set a new password if `current` is right, ending every session; commits."""
    if not check_password_hash(user.password_hash, current):
        return False
    user.password_hash = generate_password_hash(new)
    end_all_sessions(user)
    db.session.commit()
    return True


def reset_password(user: User, new: str) -> None:
    """Set a password chosen through a reset link: ends every session, audited; commits.

    The link came to the account's address, so following it proves the address
    is the person's: it counts as verified from here on.
    """
    user.password_hash = generate_password_hash(new)
    end_all_sessions(user)
    audit.record(
        user.id, "password.reset", "user", user.id, {"email_verified_now": not user.email_verified}
    )
    mark_verified(user)  # commits the password, the sessions' end and the audit entry with it


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
        end_all_sessions(user)
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
