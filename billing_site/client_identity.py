"""Who a request comes from, for rate limits, without storing raw addresses."""

import hashlib
import hmac

from flask import current_app, request

FINGERPRINT_MAX_LENGTH = 200


def client_address() -> str:
    """The address ProxyFix settled on.

    ProxyFix believes only as many X-Forwarded-For hops (from the right) as
    TRUSTED_PROXIES allows, so hops a client forges to the left are ignored.
    """
    return request.remote_addr or "unknown"


def client_key() -> str:
    """An HMAC of the client address and the optional X-Client-Fingerprint header.

    The fingerprint tells apart people behind one address (an office, a
    carrier's NAT); it can only split an address's allowance, never lift it,
    because address_key backs it with a per-address ceiling.
    """
    fingerprint = request.headers.get("X-Client-Fingerprint", "")[:FINGERPRINT_MAX_LENGTH]
    return "client:" + _digest(f"{client_address()}|{fingerprint}")


def address_key() -> str:
    """An HMAC of the client address alone (for the ceiling fingerprints cannot dodge)."""
    return "address:" + _digest(client_address())


def _digest(value: str) -> str:
    # Keyed with the app secret: the stored key cannot be reversed into an address
    # by hashing the (small) IPv4 space.
    secret = current_app.config["SECRET_KEY"].encode()
    return hmac.new(secret, value.encode(), hashlib.sha256).hexdigest()[:32]
