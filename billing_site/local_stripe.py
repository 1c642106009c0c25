"""The local stand-in for Stripe, used in development when no key is set.

LocalGateway has StripeGateway's methods and returns Stripe-shaped dicts (API
version 2026-07-29.dahlia: a subscription's period lives on items.data[0]; an invoice
names its subscription at parent.subscription_details.subscription). Its state
(customers, Checkout Sessions, subscriptions, invoices, payment intents,
charges, refunds, events) is a JSON file under instance/ (LOCAL_STRIPE_STATE_FILE),
read and written under a thread lock and an OS file lock, so several web
processes can share it.

Whatever Stripe would announce by webhook, this announces the same way: each
event is recorded (so list_events and `reconcile` see it) and posted, signed
with the first STRIPE_WEBHOOK_SECRET, to the site's own /stripe/webhook, through
the very verification and handlers production uses.

When events are delivered: inside a request, after the view has returned (an
after_this_request hook), so the view's own transaction is committed and a
handler never waits on a row the view still holds locked; outside a request
(a CLI command, a test) at once, so the caller must commit first. Delivery runs
in a fresh thread, hence in its own app context and database session. The
webhook only stores events; the delivery then drains the inbox in-process
through the worker's own step, so "Pay" shows the credits at once and tests
stay deterministic. "Fail the next delivery" (the portal's control) makes the
next delivered event's first attempt fail, so retries and replay can be seen
offline.

It never runs in production (see build_gateway and the check below).
"""

import calendar
import copy
import fcntl
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from flask import after_this_request, current_app, has_request_context

from billing_site.config import INSTANCE_DIR, ConfigError, webhook_secrets
from billing_site.stripe_gateway import STRIPE_API_VERSION, GatewayError, sign_payload

log = logging.getLogger(__name__)

API_VERSION = STRIPE_API_VERSION  # the version the site pins (stripe_gateway)
WEBHOOK_PATH = "/stripe/webhook"
SESSION_LIFETIME_SECONDS = 24 * 60 * 60
DECLINE_MESSAGE = "Your card was declined."
COLLECTIONS = (
    "customers",
    "checkout_sessions",
    "session_extras",
    "subscriptions",
    "invoices",
    "payment_intents",
    "charges",
    "refunds",
    "portal_sessions",
    "idempotency",
)

# One lock per state file for the threads of this process; fcntl covers the others.
_thread_locks: dict[str, threading.Lock] = {}
_thread_locks_guard = threading.Lock()


def _thread_lock(path: Path) -> threading.Lock:
    with _thread_locks_guard:
        return _thread_locks.setdefault(str(path), threading.Lock())


def _now() -> int:
    return int(time.time())


def _new_id(prefix: str) -> str:
    return f"{prefix}_local{secrets.token_hex(12)}"


def add_month(timestamp: int) -> int:
    """The same moment one calendar month later (31 Jan → 28/29 Feb)."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    year, month = moment.year + moment.month // 12, moment.month % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return int(moment.replace(year=year, month=month, day=day).timestamp())


def _missing(kind: str, object_id: str) -> GatewayError:
    return GatewayError(f"No such {kind}: '{object_id}'", code="resource_missing")


class LocalGateway:
    """Stripe's API, played locally; see the module docstring."""

    is_local = True

    def __init__(self, config: dict):
        if config.get("APP_ENV") == "production":
            raise ConfigError("The local Stripe stand-in never runs in production.")
        self.config = config
        self.state_file = Path(
            config.get("LOCAL_STRIPE_STATE_FILE") or INSTANCE_DIR / "local_stripe.json"
        )

    # --- StripeGateway's methods -------------------------------------------------------

    def create_customer(self, *, email: str, user_id: int) -> dict:
        with self._state() as state:
            replay = self._replay(state, f"customer-user-{user_id}")
            if replay:
                return replay
            customer = {
                "id": _new_id("cus"),
                "object": "customer",
                "created": _now(),
                "email": email,
                "name": None,
                "metadata": {"user_id": str(user_id)},
                "balance": 0,
                "currency": None,
                "delinquent": False,
                "livemode": False,
            }
            self._store(state, "customers", customer, f"customer-user-{user_id}")
            return copy.deepcopy(customer)

    def create_checkout_session(self, params: dict, *, idempotency_key: str) -> dict:
        _check_checkout_params(params)
        with self._state() as state:
            replay = self._replay(state, idempotency_key)
            if replay:
                return replay
            session = self._new_checkout_session(state, params)
            state["session_extras"][session["id"]] = {
                "line_items": params["line_items"],
                "subscription_data": params.get("subscription_data") or {},
                "payment_intent_data": params.get("payment_intent_data") or {},
            }
            self._store(state, "checkout_sessions", session, idempotency_key)
            return copy.deepcopy(session)

    def retrieve_checkout_session(self, session_id: str) -> dict:
        with self._state() as state:
            return copy.deepcopy(self._get(state, "checkout_sessions", session_id))

    def create_refund(self, params: dict, *, idempotency_key: str) -> dict:
        with self._state() as state:
            replay = self._replay(state, idempotency_key)
            if replay:
                return replay
            charge = self._charge_to_refund(state, params)
            refund, events = self._refund_charge(state, charge, params)
            self._store(state, "refunds", refund, idempotency_key)
        self._deliver(events)
        return copy.deepcopy(refund)

    def retrieve_refund(self, refund_id: str) -> dict:
        with self._state() as state:
            return copy.deepcopy(self._get(state, "refunds", refund_id))

    def create_portal_session(self, *, customer_id: str, return_url: str) -> dict:
        with self._state() as state:
            portal_id = _new_id("bps")
            portal = {
                "id": portal_id,
                "object": "billing_portal.session",
                "configuration": "bpc_local",
                "created": _now(),
                "customer": customer_id,
                "flow": None,
                "livemode": False,
                "locale": None,
                "on_behalf_of": None,
                "return_url": return_url,
                "url": f"{self._site()}/dev/portal?customer={customer_id}&session={portal_id}",
            }
            self._store(state, "portal_sessions", portal)
            return copy.deepcopy(portal)

    def retrieve_subscription(self, subscription_id: str) -> dict:
        with self._state() as state:
            return copy.deepcopy(self._get(state, "subscriptions", subscription_id))

    def set_cancel_at_period_end(
        self, subscription_id: str, cancel: bool, *, idempotency_key: str
    ) -> dict:
        with self._state() as state:
            replay = self._replay(state, idempotency_key)
            if replay:
                return replay
            subscription = self._get(state, "subscriptions", subscription_id)
            if subscription["status"] == "canceled":
                raise GatewayError("This subscription has already ended.", code="invalid_state")
            previous = {"cancel_at_period_end": subscription["cancel_at_period_end"]}
            period_end = subscription["items"]["data"][0]["current_period_end"]
            subscription.update(
                cancel_at_period_end=cancel,
                cancel_at=period_end if cancel else None,
                canceled_at=_now() if cancel else None,
            )
            state["idempotency"][idempotency_key] = ["subscriptions", subscription_id]
            events = [self._event(state, "customer.subscription.updated", subscription, previous)]
            result = copy.deepcopy(subscription)
        self._deliver(events)
        return result

    def cancel_subscription(self, subscription_id: str, *, idempotency_key: str) -> dict:
        """End a subscription now, as DELETE /v1/subscriptions/:id does (books helper)."""
        with self._state() as state:
            replay = self._replay(state, idempotency_key)
            if replay:
                return replay
            subscription = self._get(state, "subscriptions", subscription_id)
            events = []
            if subscription["status"] != "canceled":
                events = self._end_subscription(state, subscription)
            state["idempotency"][idempotency_key] = ["subscriptions", subscription_id]
            result = copy.deepcopy(subscription)
        self._deliver(events)
        return result

    def list_events(self, *, created_since: int) -> Iterator[dict]:
        """Every recorded event created at or after `created_since`, oldest first."""
        with self._state() as state:
            events = [e for e in state["events"] if e["created"] >= created_since]
        return iter(copy.deepcopy(events))

    # --- what the local checkout and portal pages do ---------------------------------

    def pay_checkout_session(self, session_id: str, *, deliver: bool = True) -> list[dict]:
        """The customer paid: complete the session and announce it as Stripe would.

        Paying a session that is already complete changes nothing and announces
        nothing (a double-clicked Pay button). Returns the events emitted.
        """
        with self._state() as state:
            session = self._get(state, "checkout_sessions", session_id)
            if session["status"] == "complete":
                return []
            if session["status"] == "expired":
                raise GatewayError("This checkout has expired.", code="checkout_expired")
            if session["mode"] == "payment":
                events = self._complete_payment(state, session)
            else:
                events = self._complete_subscription(state, session)
        if deliver:
            self._deliver(events)
        return events

    def decline_checkout_session(self, session_id: str, *, deliver: bool = True) -> list[dict]:
        """The card was declined: a failed payment intent and payment_intent.payment_failed."""
        with self._state() as state:
            session = self._get(state, "checkout_sessions", session_id)
            if session["status"] != "open":
                raise GatewayError("This checkout is no longer open.", code="invalid_state")
            intent = self._payment_intent(
                state,
                session,
                status="requires_payment_method",
                metadata=self._intent_metadata(state, session),
            )
            intent["last_payment_error"] = {
                "code": "card_declined",
                "decline_code": "generic_decline",
                "message": DECLINE_MESSAGE,
                "type": "card_error",
            }
            if session["mode"] == "payment":
                session["payment_intent"] = intent["id"]
            events = [self._event(state, "payment_intent.payment_failed", intent)]
        if deliver:
            self._deliver(events)
        return events

    def list_checkout_line_items(self, session_id: str) -> list[dict]:
        """What the session sells, shaped like Stripe's checkout line items."""
        with self._state() as state:
            session = self._get(state, "checkout_sessions", session_id)
            items = state["session_extras"][session["id"]]["line_items"]
        return [_checkout_line_item(item) for item in items]

    def retrieve_portal_session(self, portal_id: str) -> dict:
        with self._state() as state:
            return copy.deepcopy(self._get(state, "portal_sessions", portal_id))

    def list_subscriptions(self, *, customer_id: str) -> list[dict]:
        with self._state() as state:
            found = [s for s in state["subscriptions"].values() if s["customer"] == customer_id]
            return copy.deepcopy(sorted(found, key=lambda s: s["created"], reverse=True))

    def renew_subscription(
        self, subscription_id: str, *, succeed: bool = True, deliver: bool = True
    ) -> list[dict]:
        """Move a subscription to its next period, as the monthly renewal would.

        A subscription set to cancel at period end ends instead
        (customer.subscription.deleted). Otherwise a new invoice for the new
        period is paid (invoice.paid) or fails (invoice.payment_failed, status
        past_due), followed by customer.subscription.updated.
        """
        with self._state() as state:
            subscription = self._get(state, "subscriptions", subscription_id)
            if subscription["status"] == "canceled":
                raise GatewayError("This subscription has already ended.", code="invalid_state")
            if subscription["cancel_at_period_end"]:
                events = self._end_subscription(state, subscription)
            else:
                events = self._advance_period(state, subscription, succeed=succeed)
        if deliver:
            self._deliver(events)
        return events

    def retry_latest_invoice(self, subscription_id: str, *, deliver: bool = True) -> list[dict]:
        """A past-due subscription's open invoice is paid after all."""
        with self._state() as state:
            subscription = self._get(state, "subscriptions", subscription_id)
            invoice = self._get(state, "invoices", subscription["latest_invoice"])
            if invoice["status"] != "open":
                raise GatewayError("There is no unpaid invoice to retry.", code="invalid_state")
            self._mark_invoice_paid(state, invoice, subscription)
            previous = {"status": subscription["status"]}
            subscription["status"] = "active"
            events = [
                self._event(state, "invoice.paid", invoice),
                self._event(state, "customer.subscription.updated", subscription, previous),
            ]
        if deliver:
            self._deliver(events)
        return events

    def deliver(self, events: list[dict]) -> list[int]:
        """Post recorded events to the site's webhook now; returns the statuses."""
        return _post_events(current_app._get_current_object(), events, self._take_fail_next())

    def fail_next_delivery(self) -> None:
        """Make the first event of the next delivery fail its first attempt (then retried)."""
        with self._state() as state:
            state["fail_next_delivery"] = True

    def _take_fail_next(self) -> bool:
        with self._state() as state:
            return bool(state.pop("fail_next_delivery", False))

    # --- building objects ------------------------------------------------------------

    def _new_checkout_session(self, state: dict, params: dict) -> dict:
        session_id = _new_id("cs_test")
        line_items = params["line_items"]
        amount = sum(_line_amount(item) for item in line_items)
        customer = state["customers"].get(params.get("customer") or "")
        created = _now()
        return {
            "id": session_id,
            "object": "checkout.session",
            "allow_promotion_codes": bool(params.get("allow_promotion_codes")),
            "amount_subtotal": amount,
            "amount_total": amount,
            "cancel_url": params.get("cancel_url"),
            "client_reference_id": params.get("client_reference_id"),
            "created": created,
            "currency": line_items[0]["price_data"]["currency"],
            "customer": params.get("customer"),
            "customer_details": {"email": customer["email"] if customer else None},
            "customer_email": params.get("customer_email"),
            "expires_at": created + SESSION_LIFETIME_SECONDS,
            "invoice": None,
            "livemode": False,
            "metadata": _strings(params.get("metadata")),
            "mode": params["mode"],
            "payment_intent": None,
            "payment_method_types": ["card"],
            "payment_status": "unpaid",
            "status": "open",
            "subscription": None,
            "success_url": params["success_url"],
            "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
            "ui_mode": "hosted",
            "url": f"{self._site()}/dev/checkout/{session_id}",
        }

    def _complete_payment(self, state: dict, session: dict) -> list[dict]:
        intent = state["payment_intents"].get(session["payment_intent"] or "")
        if intent is None:
            intent = self._payment_intent(
                state, session, status="succeeded", metadata=self._intent_metadata(state, session)
            )
        else:  # a declined card, then another that worked: the same intent succeeds
            intent.update(status="succeeded", amount_received=intent["amount"])
        self._charge(state, intent)
        session.update(status="complete", payment_status="paid", payment_intent=intent["id"])
        return [
            self._event(state, "checkout.session.completed", session),
            self._event(state, "payment_intent.succeeded", intent),
        ]

    def _complete_subscription(self, state: dict, session: dict) -> list[dict]:
        extras = state["session_extras"][session["id"]]
        subscription = self._subscription(state, session, extras)
        item = subscription["items"]["data"][0]
        period = (item["current_period_start"], item["current_period_end"])
        invoice = self._invoice(
            state, subscription, "subscription_create", period, (period[0], period[0])
        )
        self._mark_invoice_paid(state, invoice, subscription)
        subscription["latest_invoice"] = invoice["id"]
        session.update(
            status="complete",
            payment_status="paid",
            subscription=subscription["id"],
            invoice=invoice["id"],
        )
        # Stripe's own order: the subscription, its first invoice, then the session.
        return [
            self._event(state, "customer.subscription.created", subscription),
            self._event(state, "invoice.paid", invoice),
            self._event(state, "checkout.session.completed", session),
        ]

    def _subscription(self, state: dict, session: dict, extras: dict) -> dict:
        price_data = extras["line_items"][0]["price_data"]
        subscription_id = _new_id("sub")
        start = _now()
        price = {
            "id": _new_id("price"),
            "object": "price",
            "active": True,
            "currency": price_data["currency"],
            "product": _new_id("prod"),
            "recurring": {"interval": "month", "interval_count": 1, "usage_type": "licensed"},
            "type": "recurring",
            "unit_amount": int(price_data["unit_amount"]),
            "nickname": (price_data.get("product_data") or {}).get("name"),
        }
        subscription = {
            "id": subscription_id,
            "object": "subscription",
            "billing_cycle_anchor": start,
            "cancel_at": None,
            "cancel_at_period_end": False,
            "canceled_at": None,
            "collection_method": "charge_automatically",
            "created": start,
            "currency": price_data["currency"],
            "customer": session["customer"],
            "ended_at": None,
            "items": {
                "object": "list",
                "data": [
                    {
                        "id": _new_id("si"),
                        "object": "subscription_item",
                        "created": start,
                        "current_period_start": start,
                        "current_period_end": add_month(start),
                        "metadata": {},
                        "price": price,
                        "quantity": 1,
                        "subscription": subscription_id,
                    }
                ],
                "has_more": False,
            },
            "latest_invoice": None,
            "livemode": False,
            "metadata": _strings((extras["subscription_data"] or {}).get("metadata")),
            "start_date": start,
            "status": "active",
            "trial_end": None,
            "trial_start": None,
        }
        state["subscriptions"][subscription_id] = subscription
        return subscription

    def _invoice(
        self,
        state: dict,
        subscription: dict,
        billing_reason: str,
        period: tuple[int, int],
        invoice_period: tuple[int, int],
    ) -> dict:
        item = subscription["items"]["data"][0]
        amount = item["price"]["unit_amount"]
        invoice_id = _new_id("in")
        customer = state["customers"].get(subscription["customer"] or "") or {}
        invoice = {
            "id": invoice_id,
            "object": "invoice",
            "amount_due": amount,
            "amount_paid": 0,
            "amount_remaining": amount,
            "attempt_count": 1,
            "attempted": True,
            "billing_reason": billing_reason,
            "collection_method": "charge_automatically",
            "created": _now(),
            "currency": subscription["currency"],
            "customer": subscription["customer"],
            "customer_email": customer.get("email"),
            "hosted_invoice_url": None,
            "lines": {
                "object": "list",
                "data": [
                    {
                        "id": _new_id("il"),
                        "object": "line_item",
                        "amount": amount,
                        "currency": subscription["currency"],
                        "description": f"1 × {item['price']['nickname']}",
                        "invoice": invoice_id,
                        "metadata": {},
                        "parent": {
                            "type": "subscription_item_details",
                            "subscription_item_details": {
                                "invoice_item": None,
                                "proration": False,
                                "subscription": subscription["id"],
                                "subscription_item": item["id"],
                            },
                        },
                        "period": {"start": period[0], "end": period[1]},
                        "pricing": {
                            "type": "price_details",
                            "price_details": {
                                "price": item["price"]["id"],
                                "product": item["price"]["product"],
                            },
                        },
                        "quantity": 1,
                    }
                ],
                "has_more": False,
            },
            "livemode": False,
            "metadata": {},
            "number": f"LOCAL-{len(state['invoices']) + 1:04d}",
            "parent": {
                "type": "subscription_details",
                "quote_details": None,
                "subscription_details": {
                    "metadata": copy.deepcopy(subscription["metadata"]),
                    "subscription": subscription["id"],
                },
            },
            # As at Stripe, the invoice's own period is the one just ended; the
            # period paid for is on its line.
            "period_start": invoice_period[0],
            "period_end": invoice_period[1],
            "status": "open",
            "status_transitions": {"finalized_at": _now(), "paid_at": None},
            "subscription": None,
            "subtotal": amount,
            "total": amount,
        }
        state["invoices"][invoice_id] = invoice
        return invoice

    def _mark_invoice_paid(self, state: dict, invoice: dict, subscription: dict) -> None:
        metadata = {**subscription["metadata"], "invoice": invoice["id"]}
        intent = self._payment_intent(
            state, invoice, status="succeeded", metadata=metadata, customer=invoice["customer"]
        )
        self._charge(state, intent)
        invoice.update(
            status="paid",
            amount_paid=invoice["amount_due"],
            amount_remaining=0,
            status_transitions={"finalized_at": invoice["created"], "paid_at": _now()},
            payments={
                "object": "list",
                "data": [
                    {
                        "object": "invoice_payment",
                        "payment": {"type": "payment_intent", "payment_intent": intent["id"]},
                        "status": "paid",
                    }
                ],
            },
        )

    def _advance_period(self, state: dict, subscription: dict, *, succeed: bool) -> list[dict]:
        item = subscription["items"]["data"][0]
        previous = {
            "status": subscription["status"],
            "items": copy.deepcopy(subscription["items"]),
            "latest_invoice": subscription["latest_invoice"],
        }
        ended = (item["current_period_start"], item["current_period_end"])
        period = (ended[1], add_month(ended[1]))
        item.update(current_period_start=period[0], current_period_end=period[1])
        invoice = self._invoice(state, subscription, "subscription_cycle", period, ended)
        subscription["latest_invoice"] = invoice["id"]
        if succeed:
            self._mark_invoice_paid(state, invoice, subscription)
            subscription["status"] = "active"
            invoice_event = self._event(state, "invoice.paid", invoice)
        else:
            invoice["next_payment_attempt"] = _now() + 3 * 24 * 60 * 60
            subscription["status"] = "past_due"
            invoice_event = self._event(state, "invoice.payment_failed", invoice)
        updated = self._event(state, "customer.subscription.updated", subscription, previous)
        return [invoice_event, updated]

    def _end_subscription(self, state: dict, subscription: dict) -> list[dict]:
        subscription.update(status="canceled", ended_at=_now(), canceled_at=_now())
        return [self._event(state, "customer.subscription.deleted", subscription)]

    def _payment_intent(
        self,
        state: dict,
        source: dict,
        *,
        status: str,
        metadata: dict,
        customer: str | None = None,
    ) -> dict:
        amount = source.get("amount_total", source.get("amount_due"))
        intent = {
            "id": _new_id("pi"),
            "object": "payment_intent",
            "amount": amount,
            "amount_received": amount if status == "succeeded" else 0,
            "created": _now(),
            "currency": source["currency"],
            "customer": customer or source.get("customer"),
            "last_payment_error": None,
            "latest_charge": None,
            "livemode": False,
            "metadata": metadata,
            "payment_method_types": ["card"],
            "status": status,
        }
        state["payment_intents"][intent["id"]] = intent
        return intent

    def _intent_metadata(self, state: dict, session: dict) -> dict:
        extras = state["session_extras"].get(session["id"], {})
        from_params = (extras.get("payment_intent_data") or {}).get("metadata")
        return {**session["metadata"], **_strings(from_params)}

    def _charge(self, state: dict, intent: dict) -> dict:
        charge = {
            "id": _new_id("ch"),
            "object": "charge",
            "amount": intent["amount"],
            "amount_captured": intent["amount"],
            "amount_refunded": 0,
            "captured": True,
            "created": _now(),
            "currency": intent["currency"],
            "customer": intent["customer"],
            "disputed": False,
            "livemode": False,
            "metadata": copy.deepcopy(intent["metadata"]),
            "paid": True,
            "payment_intent": intent["id"],
            "payment_method_details": {"type": "card", "card": {"brand": "visa", "last4": "4242"}},
            "refunded": False,
            "refunds": {"object": "list", "data": [], "has_more": False, "total_count": 0},
            "status": "succeeded",
        }
        intent["latest_charge"] = charge["id"]
        state["charges"][charge["id"]] = charge
        return charge

    def _charge_to_refund(self, state: dict, params: dict) -> dict:
        if params.get("charge"):
            return self._get(state, "charges", params["charge"])
        intent_id = params.get("payment_intent")
        if not intent_id:
            raise GatewayError(
                "A refund needs a charge or a payment_intent.", code="parameter_missing"
            )
        intent = self._get(state, "payment_intents", intent_id)
        if not intent.get("latest_charge"):
            raise GatewayError("This payment has no charge to refund.", code="charge_missing")
        return self._get(state, "charges", intent["latest_charge"])

    def _refund_charge(self, state: dict, charge: dict, params: dict) -> tuple[dict, list]:
        remaining = charge["amount"] - charge["amount_refunded"]
        amount = int(params.get("amount") or remaining)
        if remaining <= 0:
            raise GatewayError(
                f"Charge {charge['id']} has already been refunded.", code="charge_already_refunded"
            )
        if amount <= 0 or amount > remaining:
            raise GatewayError(
                f"Refund amount ({amount}) is greater than unrefunded amount on charge "
                f"({remaining}).",
                code="amount_too_large",
            )
        refund = {
            "id": _new_id("re"),
            "object": "refund",
            "amount": amount,
            "charge": charge["id"],
            "created": _now(),
            "currency": charge["currency"],
            "metadata": _strings(params.get("metadata")),
            "payment_intent": charge["payment_intent"],
            "reason": params.get("reason"),
            "status": "succeeded",
        }
        previous = {"amount_refunded": charge["amount_refunded"], "refunded": charge["refunded"]}
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] >= charge["amount"]
        refunds = charge["refunds"]
        refunds["data"].insert(0, refund)
        refunds["total_count"] = len(refunds["data"])
        events = [
            self._event(state, "charge.refunded", charge, previous),
            self._event(state, "refund.created", refund),
        ]
        return refund, events

    # --- events --------------------------------------------------------------------

    def _event(self, state: dict, event_type: str, obj: dict, previous: dict | None = None) -> dict:
        """Record an event about `obj` as it is now (a snapshot, as Stripe sends)."""
        data = {"object": copy.deepcopy(obj)}
        if previous is not None:
            data["previous_attributes"] = copy.deepcopy(previous)
        event = {
            "id": _new_id("evt"),
            "object": "event",
            "api_version": API_VERSION,
            "created": _now(),
            "data": data,
            "livemode": False,
            "pending_webhooks": 1,
            "request": {"id": None, "idempotency_key": None},
            "type": event_type,
        }
        state["events"].append(event)
        return event

    def _deliver(self, events: list[dict]) -> None:
        if not events:
            return
        app = current_app._get_current_object()
        fail_first = self._take_fail_next()
        if not has_request_context():
            _post_events(app, events, fail_first)
            return

        # Inside a request: after the view returns (and has committed), so a
        # handler never waits on a row this request still holds locked.
        @after_this_request
        def deliver_after_view(response):
            _post_events(app, events, fail_first)
            return response

    # --- state ---------------------------------------------------------------------

    def _site(self) -> str:
        return self.config["SITE_URL"].rstrip("/")

    @contextmanager
    def _state(self):
        """The whole state, locked for this thread and process; saved if no error."""
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.state_file.with_name(self.state_file.name + ".lock")
        with _thread_lock(self.state_file), open(lock_path, "a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                state = self._read()
                yield state
                self._write(state)
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)

    def _read(self) -> dict:
        state = {}
        if self.state_file.exists() and self.state_file.stat().st_size:
            state = json.loads(self.state_file.read_text())
        for name in COLLECTIONS:
            state.setdefault(name, {})
        state.setdefault("events", [])
        return state

    def _write(self, state: dict) -> None:
        # Write then rename: a reader in another process never sees half a file.
        temporary = self.state_file.with_name(
            f"{self.state_file.name}.{os.getpid()}.{threading.get_ident()}.tmp"
        )
        temporary.write_text(json.dumps(state, indent=1))
        os.replace(temporary, self.state_file)

    @staticmethod
    def _get(state: dict, collection: str, object_id: str) -> dict:
        found = state[collection].get(object_id or "")
        if found is None:
            raise _missing(collection[:-1].replace("_", " "), object_id)
        return found

    @staticmethod
    def _store(state: dict, collection: str, obj: dict, idempotency_key: str | None = None):
        state[collection][obj["id"]] = obj
        if idempotency_key:
            state["idempotency"][idempotency_key] = [collection, obj["id"]]

    @staticmethod
    def _replay(state: dict, idempotency_key: str) -> dict | None:
        """What a request with this idempotency key made the first time, if any."""
        stored = state["idempotency"].get(idempotency_key)
        if stored is None:
            return None
        collection, object_id = stored
        return copy.deepcopy(state[collection][object_id])


def _post_events(app, events: list[dict], fail_first: bool = False) -> list[int]:
    """Post each event, signed, to the app's own webhook, then apply them; returns the statuses.

    A fresh thread has no Flask context, so the webhook request gets its own app
    context and database session rather than sharing the caller's.
    """
    statuses: list[int] = []

    def post_all():
        client = app.test_client()
        secret = webhook_secrets(app.config)[0]
        for event in events:
            payload = json.dumps(event)
            try:
                response = client.post(
                    WEBHOOK_PATH,
                    data=payload,
                    headers={"Stripe-Signature": sign_payload(payload, secret)},
                    content_type="application/json",
                )
            except Exception:  # the webhook is the site's; report and go on, as Stripe would
                log.exception("local stripe: delivering %s %s raised", event["type"], event["id"])
                statuses.append(500)
                continue
            statuses.append(response.status_code)
            level = logging.INFO if response.status_code < 300 else logging.WARNING
            log.log(
                level,
                "local stripe: delivered %s %s -> %s",
                event["type"],
                event["id"],
                response.status_code,
            )
        _apply_delivered(app, events, fail_first)

    thread = threading.Thread(target=post_all, name="local-stripe-webhook")
    thread.start()
    thread.join()
    return statuses


def _apply_delivered(app, events: list[dict], fail_first: bool) -> None:
    """Apply what was just stored, in-process, through the worker's own step."""
    from billing_site import worker

    with app.app_context():
        if fail_first and events:
            reason = "The local stand-in failed this delivery on purpose (fail the next delivery)."
            worker.fail_once(events[0]["id"], reason)
        try:
            worker.drain()
        except Exception:  # the worker process (or a replay) picks up whatever is left
            log.exception("local stripe: applying delivered events raised")
        finally:
            from billing_site.extensions import db

            db.session.remove()


def _check_checkout_params(params: dict) -> None:
    """Refuse what Stripe would refuse, with Stripe's kind of message."""
    if params.get("mode") not in ("payment", "subscription"):
        raise GatewayError(
            "Invalid mode: must be payment or subscription.", code="parameter_invalid"
        )
    if not params.get("success_url"):
        raise GatewayError("Missing required param: success_url.", code="parameter_missing")
    line_items = params.get("line_items") or []
    if not line_items or "price_data" not in line_items[0]:
        raise GatewayError("Missing required param: line_items.", code="parameter_missing")
    if params["mode"] == "subscription" and "recurring" not in line_items[0]["price_data"]:
        raise GatewayError(
            "In subscription mode a price must be recurring.", code="parameter_invalid"
        )


def _checkout_line_item(item: dict) -> dict:
    price_data = item["price_data"]
    return {
        "object": "item",
        "amount_total": _line_amount(item),
        "currency": price_data["currency"],
        "description": (price_data.get("product_data") or {}).get("name"),
        "price": {
            "object": "price",
            "unit_amount": int(price_data["unit_amount"]),
            "recurring": price_data.get("recurring"),
        },
        "quantity": int(item.get("quantity", 1)),
    }


def _line_amount(item: dict) -> int:
    return int(item["price_data"]["unit_amount"]) * int(item.get("quantity", 1))


def _strings(metadata: dict | None) -> dict:
    """Stripe stores metadata values as strings."""
    return {str(key): str(value) for key, value in (metadata or {}).items()}
