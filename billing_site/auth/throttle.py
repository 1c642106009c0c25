"""Log-in guesses, limited per address and per account, never by a header the client picks.

The address limit (a decorator on the view) counts every attempt. The account
limit counts failures only and is gentler to the owner: past it, a client
(address) that has already failed against the account is refused, while a
client that never failed may still try, so an attacker cannot lock the owner
out from everywhere. A hard ceiling, far higher, holds even for those.
"""

import logging

from flask import current_app
from limits import parse

from billing_site.client_identity import address_key
from billing_site.extensions import limiter

log = logging.getLogger(__name__)


def _strategy():
    return limiter.limiter


def _account_limit():
    return parse(current_app.config["LOGIN_ACCOUNT_FAILURE_LIMIT"])


def _hard_limit():
    return parse(current_app.config["LOGIN_ACCOUNT_HARD_LIMIT"])


def _keys(email_key: str) -> tuple[str, str]:
    return f"login-failures:{email_key}", f"login-failures:{email_key}:{address_key()}"


def account_refuses(email_key: str) -> bool:
    """Whether this client may not try this account now."""
    account, pair = _keys(email_key)
    try:
        if not _strategy().test(_hard_limit(), account + ":hard"):
            return True
        if _strategy().test(_account_limit(), account):
            return False
        # The account is under attack: only clients that never failed get through.
        return _strategy().get_window_stats(_account_limit(), pair).remaining < (
            _account_limit().amount
        )
    except Exception:  # storage unreachable: the address limit still holds
        log.warning("login throttle storage unreachable")
        return False


def record_failure(email_key: str) -> None:
    """Count one wrong password against the account and against this client on it."""
    account, pair = _keys(email_key)
    try:
        _strategy().hit(_account_limit(), account)
        _strategy().hit(_account_limit(), pair)
        _strategy().hit(_hard_limit(), account + ":hard")
    except Exception:
        log.warning("login throttle storage unreachable")
