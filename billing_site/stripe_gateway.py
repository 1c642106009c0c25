"""The only module that talks to Stripe.

It returns plain dicts shaped like Stripe's objects, raises only GatewayError
(or WebhookVerificationError for a delivery that fails verification), holds no
business rules and touches no database. Every write carries an idempotency key
the caller derives from the site's own ids, so a retry can never double a
charge, a customer or a refund.

With no STRIPE_SECRET_KEY outside production, build_gateway returns the local
stand-in (billing_site.local_stripe.LocalGateway), which has the same methods.
"""

import json
import logging
import math
import time
from collections.abc import Callable, Iterator

import stripe

log = logging.getLogger(__name__)

# The API version the site is written for: every request pins it, and the webhook
# endpoint in Stripe's dashboard should send events in it (README, "Stripe").
STRIPE_API_VERSION = "2026-07-29.dahlia"
WEBHOOK_TOLERANCE_SECONDS = 300
# Shape bounds of an event we store and dispatch; Stripe's own are far inside them.
EVENT_MAX_DEPTH = 32
EVENT_ID_MAX_LENGTH = 255
# construct_event accepts any future timestamp; a signature from the future is
# as suspicious as a stale one, so allow only a little clock skew.
WEBHOOK_FUTURE_SKEW_SECONDS = 60


class GatewayError(Exception):
    """Stripe could not do what was asked; `message` is safe to show a person."""

    def __init__(self, message: str, *, retryable: bool = False, code: str | None = None):
        super().__init__(message)
        self.message = message
        self.retryable = retryable
        self.code = code


class WebhookVerificationError(Exception):
    """A webhook delivery is not signed by Stripe with one of our secrets, or is stale."""


def sign_payload(payload: str, secret: str, timestamp: int | None = None) -> str:
    """A Stripe-Signature header for `payload` (used by the local checkout and tests)."""
    return stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp=timestamp)


def stripe_id(value) -> str | None:
    """The id in a Stripe field that holds either an id or the expanded object."""
    if isinstance(value, dict):
        return value.get("id")
    return value or None


def verify_webhook(payload: bytes, signature_header: str | None, secrets: list[str]) -> dict:
    """The event in `payload` if one `v1` signature matches one secret; else raise.

    Several secrets are tried because during a roll Stripe signs with both; a `v0`
    signature (test mode's legacy scheme) never counts.
    """
    if not signature_header:
        raise WebhookVerificationError("missing Stripe-Signature header")
    if not secrets:
        raise WebhookVerificationError("no webhook secret is configured")
    try:
        # Stripe's verifier decodes the body itself and lets the error escape.
        text = payload.decode("utf-8")
    except UnicodeDecodeError as error:
        raise WebhookVerificationError("body is not UTF-8") from error
    last_error = None
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(
                text, signature_header, secret, WEBHOOK_TOLERANCE_SECONDS
            )
            break
        except stripe.SignatureVerificationError as error:
            last_error = error
    else:
        raise WebhookVerificationError(str(last_error.user_message or last_error))
    _reject_future_timestamp(signature_header)
    event = _parse_event(text)
    _note_api_version(event)
    return event


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    # 1e999 is valid JSON but parses to infinity, which no JSON column can store.
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"{text[:20]} is too large a number")
    return number


def _parse_event(text: str) -> dict:
    """The event in `text`, or WebhookVerificationError if it is not shaped like one.

    Signed is not the same as well-formed: NaN, absurd nesting, an id longer than
    the column or a `created` that is not a number would otherwise fail later, as
    a 500 with nothing recorded.
    """
    try:
        event = json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as error:
        raise WebhookVerificationError(f"body is not JSON: {str(error)[:100]}") from error
    if not isinstance(event, dict):
        raise WebhookVerificationError("body is not a Stripe event")
    problem = _event_shape_problem(event)
    if problem:
        raise WebhookVerificationError(f"malformed event: {problem}")
    return event


def _event_shape_problem(event: dict) -> str | None:
    event_id, event_type = event.get("id"), event.get("type")
    if not isinstance(event_id, str) or not 0 < len(event_id) <= EVENT_ID_MAX_LENGTH:
        return "id is not a short string"
    if not isinstance(event_type, str) or not 0 < len(event_type) <= 255:
        return "type is not a short string"
    created = event.get("created")
    if isinstance(created, bool) or not isinstance(created, int) or created < 0:
        return "created is not a Unix time"
    if "api_version" in event and not isinstance(event["api_version"], str | None):
        return "api_version is not a string"
    data = event.get("data", {})
    if not isinstance(data, dict) or not isinstance(data.get("object", {}), dict):
        return "data.object is not an object"
    if _nested_deeper_than(event, EVENT_MAX_DEPTH):
        return f"nested deeper than {EVENT_MAX_DEPTH} levels"
    return None


def _nested_deeper_than(value: dict, most_levels: int) -> bool:
    """Whether `value` has more than `most_levels` levels of objects and arrays.

    Level by level rather than recursively, so a deep body cannot recurse here
    either; this runs on every delivery, so it looks only at containers and
    compares types exactly (an event holds only what json.loads makes).
    """
    level = [value]
    for _ in range(most_levels):
        level = [
            child
            for item in level
            for child in (item.values() if type(item) is dict else item)
            if type(child) is dict or type(child) is list
        ]
        if not level:
            return False
    return True


# Set by billing_site.stripe_contract: where an event of another API version is noted.
api_version_listener: Callable[[str, dict], None] | None = None


def _note_api_version(event: dict) -> None:
    version = event.get("api_version")
    if version and version != STRIPE_API_VERSION:
        # Still applied where its shape is known; the admin is told to fix the endpoint.
        log.warning(
            "webhook event %s has api_version %s; the site is written for %s",
            event["id"],
            version,
            STRIPE_API_VERSION,
        )
        if api_version_listener is not None:
            api_version_listener(version, event)


def _reject_future_timestamp(signature_header: str) -> None:
    fields = dict(part.split("=", 1) for part in signature_header.split(",") if "=" in part)
    timestamp = int(fields.get("t", "0"))
    if timestamp > time.time() + WEBHOOK_FUTURE_SKEW_SECONDS:
        raise WebhookVerificationError("timestamp is in the future")


class StripeGateway:
    """Stripe's real API (or any server at STRIPE_API_BASE that speaks it)."""

    is_local = False

    def __init__(self, config: dict, installation_id: Callable[[], str] | None = None):
        base_addresses = {"api": config["STRIPE_API_BASE"]} if config["STRIPE_API_BASE"] else None
        # Prefixes every idempotency key: two databases sharing one Stripe account
        # (a reset dev database, CI, staging) would otherwise replay each other's
        # answers for "checkout-order-12".
        self._installation_id = installation_id or (lambda: config.get("INSTALLATION_ID", ""))
        self.client = stripe.StripeClient(
            config["STRIPE_SECRET_KEY"],
            stripe_version=STRIPE_API_VERSION,
            base_addresses=base_addresses,
            max_network_retries=2,
            http_client=stripe.RequestsClient(timeout=config["STRIPE_TIMEOUT_SECONDS"]),
        )

    def create_customer(self, *, email: str, user_id: int) -> dict:
        return self._call(
            self.client.v1.customers.create,
            {"email": email, "metadata": {"user_id": str(user_id)}},
            idempotency_key=f"customer-user-{user_id}",
        )

    def create_checkout_session(self, params: dict, *, idempotency_key: str) -> dict:
        return self._call(
            self.client.v1.checkout.sessions.create, params, idempotency_key=idempotency_key
        )

    def retrieve_checkout_session(self, session_id: str) -> dict:
        return self._call(self.client.v1.checkout.sessions.retrieve, session_id)

    def create_refund(self, params: dict, *, idempotency_key: str) -> dict:
        return self._call(self.client.v1.refunds.create, params, idempotency_key=idempotency_key)

    def retrieve_refund(self, refund_id: str) -> dict:
        return self._call(self.client.v1.refunds.retrieve, refund_id)

    def create_portal_session(self, *, customer_id: str, return_url: str) -> dict:
        return self._call(
            self.client.v1.billing_portal.sessions.create,
            {"customer": customer_id, "return_url": return_url},
        )

    def retrieve_subscription(self, subscription_id: str) -> dict:
        return self._call(self.client.v1.subscriptions.retrieve, subscription_id)

    def set_cancel_at_period_end(
        self, subscription_id: str, cancel: bool, *, idempotency_key: str
    ) -> dict:
        return self._call(
            self.client.v1.subscriptions.update,
            subscription_id,
            {"cancel_at_period_end": cancel},
            idempotency_key=idempotency_key,
        )

    def list_payment_methods(self, customer_id: str) -> dict:
        """The customer's cards, and which one is their default (`default_payment_method`)."""
        methods = self._call(
            self.client.v1.payment_methods.list, {"customer": customer_id, "type": "card"}
        )
        customer = self._call(self.client.v1.customers.retrieve, customer_id)
        default = stripe_id((customer.get("invoice_settings") or {}).get("default_payment_method"))
        return {"data": methods.get("data", []), "default_payment_method": default}

    def cancel_subscription(self, subscription_id: str, *, idempotency_key: str) -> dict:
        """End a subscription now (DELETE /v1/subscriptions/:id), without proration credit."""
        return self._call(
            self.client.v1.subscriptions.cancel, subscription_id, idempotency_key=idempotency_key
        )

    def list_events(self, *, created_since: int) -> Iterator[dict]:
        """Every event created at or after `created_since` (a Unix time), oldest first."""
        try:
            page = self.client.v1.events.list({"created": {"gte": created_since}, "limit": 100})
            events = [event.to_dict(for_json=True) for event in page.auto_paging_iter()]
        except stripe.StripeError as error:
            raise _gateway_error(error) from error
        return iter(sorted(events, key=lambda event: event["created"]))

    # --- the catalog as Products and Prices (stripe_catalog.py) ---------------------

    def list_products(self, product_ids: list[str]) -> list[dict]:
        """The products with these ids (active or not) that exist."""
        return self._list(self.client.v1.products.list, {"ids": product_ids})

    def create_product(self, params: dict, *, idempotency_key: str) -> dict:
        return self._call(self.client.v1.products.create, params, idempotency_key=idempotency_key)

    def update_product(self, product_id: str, params: dict, *, idempotency_key: str) -> dict:
        return self._call(
            self.client.v1.products.update, product_id, params, idempotency_key=idempotency_key
        )

    def list_prices(self, lookup_keys: list[str]) -> list[dict]:
        """The active prices holding these lookup keys (Stripe takes ten keys a call)."""
        prices: list[dict] = []
        for start in range(0, len(lookup_keys), 10):
            params = {"lookup_keys": lookup_keys[start : start + 10], "active": True}
            prices += self._list(self.client.v1.prices.list, params)
        return prices

    def create_price(self, params: dict, *, idempotency_key: str) -> dict:
        return self._call(self.client.v1.prices.create, params, idempotency_key=idempotency_key)

    def update_price(self, price_id: str, params: dict, *, idempotency_key: str) -> dict:
        return self._call(
            self.client.v1.prices.update, price_id, params, idempotency_key=idempotency_key
        )

    # --- plan changes (plan_changes.py) -------------------------------------------

    def preview_invoice(self, params: dict) -> dict:
        """The invoice Stripe would issue for a proposed change (invoices.create_preview)."""
        return self._call(self.client.v1.invoices.create_preview, params)

    def update_subscription(
        self, subscription_id: str, params: dict, *, idempotency_key: str
    ) -> dict:
        return self._call(
            self.client.v1.subscriptions.update,
            subscription_id,
            params,
            idempotency_key=idempotency_key,
        )

    def create_subscription_schedule(self, params: dict, *, idempotency_key: str) -> dict:
        return self._call(
            self.client.v1.subscription_schedules.create, params, idempotency_key=idempotency_key
        )

    def update_subscription_schedule(
        self, schedule_id: str, params: dict, *, idempotency_key: str
    ) -> dict:
        return self._call(
            self.client.v1.subscription_schedules.update,
            schedule_id,
            params,
            idempotency_key=idempotency_key,
        )

    def release_subscription_schedule(self, schedule_id: str, *, idempotency_key: str) -> dict:
        return self._call(
            self.client.v1.subscription_schedules.release,
            schedule_id,
            idempotency_key=idempotency_key,
        )

    # --- the books audit (books_audit.py) -----------------------------------------

    def list_charges(self, *, created_since: int) -> list[dict]:
        return self._list(self.client.v1.charges.list, {"created": {"gte": created_since}})

    def list_refunds(self, *, created_since: int) -> list[dict]:
        return self._list(self.client.v1.refunds.list, {"created": {"gte": created_since}})

    def list_disputes(self, *, created_since: int) -> list[dict]:
        return self._list(self.client.v1.disputes.list, {"created": {"gte": created_since}})

    def list_invoice_payments(self, invoice_id: str) -> list[dict]:
        """An invoice's payments (invoice.paid does not include them)."""
        return self._list(self.client.v1.invoice_payments.list, {"invoice": invoice_id})

    def list_invoices(self, *, created_since: int) -> list[dict]:
        # `payments` is not included by default; it is what ties an invoice to its charge.
        params = {"created": {"gte": created_since}, "expand": ["data.payments"]}
        return self._list(self.client.v1.invoices.list, params)

    def _list(self, method, params: dict) -> list[dict]:
        """Every object of a list call, page after page (100 a page)."""
        try:
            page = method({**params, "limit": 100})
            return [item.to_dict(for_json=True) for item in page.auto_paging_iter()]
        except stripe.StripeError as error:
            raise _gateway_error(error) from error

    def _call(self, method, *args, idempotency_key: str | None = None) -> dict:
        options = {"idempotency_key": self._scoped(idempotency_key)} if idempotency_key else {}
        try:
            result = method(*args, options=options) if options else method(*args)
        except stripe.StripeError as error:
            raise _gateway_error(error) from error
        # for_json: *_decimal fields stay strings, as Stripe sends them, so a result
        # (or a listed event) can be stored in a JSON column.
        return result.to_dict(for_json=True)

    def _scoped(self, key: str) -> str:
        prefix = self._installation_id()
        return f"{prefix}-{key}" if prefix else key


def _gateway_error(error: stripe.StripeError) -> GatewayError:
    if isinstance(error, stripe.APIConnectionError):
        return GatewayError(
            "We could not reach our payment provider. Nothing was charged; please try again.",
            retryable=True,
            code="connection_error",
        )
    if isinstance(error, stripe.RateLimitError | stripe.APIError):
        return GatewayError(
            "Our payment provider is having trouble. Please try again in a minute.",
            retryable=True,
            code=error.code,
        )
    message = error.user_message or "The payment provider refused the request."
    return GatewayError(message, code=error.code)


def build_gateway(config: dict):
    """The real gateway when a Stripe key is set; otherwise the local stand-in."""
    if config["STRIPE_SECRET_KEY"]:
        from billing_site.stripe_contract import installation_id

        return StripeGateway(config, installation_id=installation_id)
    from billing_site.local_stripe import LocalGateway

    return LocalGateway(config)


def current_gateway():
    from flask import current_app

    return current_app.extensions["stripe_gateway"]
