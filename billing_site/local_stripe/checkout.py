"""Customers, Checkout Sessions, and the payment intents and charges they make."""

import copy

from billing_site.local_stripe.state import (
    DECLINE_MESSAGE,
    SESSION_LIFETIME_SECONDS,
    _new_id,
    _now,
    _strings,
)
from billing_site.stripe_gateway import GatewayError


class CheckoutMixin:
    """What Stripe Checkout does, and what the local checkout page asks of it."""

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

    def list_payment_methods(self, customer_id: str) -> dict:
        """The test card (Visa 4242) once the customer has paid with it, as their default."""
        with self._state() as state:
            paid = any(
                charge.get("customer") == customer_id and charge.get("paid")
                for charge in state["charges"].values()
            )
        if not paid:
            return {"data": [], "default_payment_method": None}
        card = {"brand": "visa", "display_brand": "visa", "last4": "4242"}
        method = {
            "id": f"pm_local_{customer_id}",
            "object": "payment_method",
            "type": "card",
            "customer": customer_id,
            "card": {**card, "exp_month": 12, "exp_year": 2034, "funding": "credit"},
            "livemode": False,
        }
        return {"data": [method], "default_payment_method": method["id"]}

    def create_checkout_session(self, params: dict, *, idempotency_key: str) -> dict:
        with self._state() as state:
            replay = self._replay(state, idempotency_key)
            if replay:
                return replay
            params = {**params, "line_items": self._inline_prices(state, params)}
            _check_checkout_params(params)
            session = self._new_checkout_session(state, params)
            state["session_extras"][session["id"]] = {
                "line_items": params["line_items"],
                "subscription_data": params.get("subscription_data") or {},
                "payment_intent_data": params.get("payment_intent_data") or {},
            }
            self._store(state, "checkout_sessions", session, idempotency_key)
            return copy.deepcopy(session)

    def _inline_prices(self, state: dict, params: dict) -> list[dict]:
        """Line items with a Price id, written out as the price_data they stand for."""
        items = []
        for item in params.get("line_items") or []:
            if "price" not in item:
                items.append(item)
                continue
            price = self._get(state, "prices", item["price"])
            if not price["active"]:
                raise GatewayError(
                    f"The price specified is inactive: {price['id']}", code="price_inactive"
                )
            product = state["products"].get(price["product"]) or {}
            price_data = {
                "currency": price["currency"],
                "unit_amount": price["unit_amount"],
                "product_data": {"name": product.get("name") or price.get("nickname")},
            }
            if price["recurring"]:
                price_data["recurring"] = {"interval": price["recurring"]["interval"]}
            items.append({**item, "price_data": price_data})
        return items

    def retrieve_checkout_session(self, session_id: str) -> dict:
        with self._state() as state:
            return copy.deepcopy(self._get(state, "checkout_sessions", session_id))

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
            "discounts": [],
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
        if session["amount_total"] == 0:
            # A 100% code: Stripe completes the session with no payment intent at all.
            session.update(status="complete", payment_status="no_payment_required")
            return [self._event(state, "checkout.session.completed", session)]
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
