"""POST /stripe/webhook: verify, store, answer. The worker applies what is stored.

Stripe signs the raw bytes, so the body is read with request.get_data() before
anything parses it. The view is exempt from CSRF (Stripe has no session) and
from rate limits (Stripe retries whatever it is refused, and a burst of events
after an outage is normal).
"""

import logging

from flask import Blueprint, current_app, jsonify, request
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

import billing_site.webhook.handlers  # noqa: F401  (fills the registry)
from billing_site.config import webhook_secrets
from billing_site.extensions import csrf, limiter
from billing_site.stripe_gateway import WebhookVerificationError, verify_webhook
from billing_site.webhook import services

bp = Blueprint("webhook", __name__, cli_group=None)
log = logging.getLogger("billing_site.webhook")


@bp.post("/stripe/webhook")
@bp.post("/api/v1/stripe/webhook")
@csrf.exempt
@limiter.exempt
def receive_event():
    body = request.get_data()
    try:
        event = verify_webhook(
            body,
            request.headers.get("Stripe-Signature"),
            webhook_secrets(current_app.config),
        )
    except WebhookVerificationError as error:
        log.warning("webhook rejected reason=%r remote=%s", str(error), request.remote_addr)
        return jsonify(error="invalid_webhook", message=f"Rejected: {error}."), 400
    try:
        stored = services.receive_event(event, body.decode())  # verified UTF-8
    except (DBAPIError, PoolTimeout) as error:
        # Nothing was committed; a 5xx makes Stripe deliver the event again later.
        log.error("webhook event_id=%s not stored: database unavailable: %r", event["id"], error)
        message = "The event could not be stored right now; deliver it again later."
        response = jsonify(error="database_unavailable", message=message)
        return response, 503, {"Retry-After": "30"}
    return jsonify(received=True, event_id=event["id"], queued=stored), 200
