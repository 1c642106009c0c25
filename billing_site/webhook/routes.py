"""POST /stripe/webhook: verify, record, dispatch, answer. Nothing else lives here.

Stripe signs the raw bytes, so the body is read with request.get_data() before
anything parses it. The view is exempt from CSRF (Stripe has no session) and
from rate limits (Stripe retries whatever it is refused, and a burst of events
after an outage is normal).
"""

import logging

from flask import Blueprint, current_app, jsonify, request

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
    try:
        event = verify_webhook(
            request.get_data(),
            request.headers.get("Stripe-Signature"),
            webhook_secrets(current_app.config),
        )
    except WebhookVerificationError as error:
        log.warning("webhook rejected reason=%r remote=%s", str(error), request.remote_addr)
        return jsonify(error="invalid_webhook", message=f"Rejected: {error}."), 400
    try:
        outcome = services.process_event(event)
    except services.HandlerFailed:
        # Rolled back and recorded as failed; a 5xx makes Stripe deliver it again.
        message = "The event was recorded but could not be processed; it will be retried."
        return jsonify(error="processing_failed", message=message), 500
    return jsonify(received=True, event_id=event["id"], outcome=outcome), 200
