"""Who a request comes from, for rate limits, without storing raw addresses."""

import hashlib
import hmac

from flask import current_app, request


def client_key() -> str:
    """An HMAC of the client address and optional fingerprint header.

    The address is the one ProxyFix settled on (only as many X-Forwarded-For
    hops as TRUSTED_PROXIES allows), so a forged header cannot mint new keys.
    """
    address = request.remote_addr or "unknown"
    fingerprint = request.headers.get("X-Client-Fingerprint", "")[:200]
    secret = current_app.config["SECRET_KEY"].encode()
    digest = hmac.new(secret, f"{address}|{fingerprint}".encode(), hashlib.sha256)
    return "client:" + digest.hexdigest()[:32]
