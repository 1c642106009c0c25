"""Subscriptions, their invoices, renewals and cancellation."""

import copy

from billing_site.local_stripe.state import _new_id, _now, _strings, add_month
from billing_site.stripe_gateway import GatewayError


class SubscriptionsMixin:
    """Subscriptions and the invoices that pay for them."""

    def retrieve_subscription(self, subscription_id: str) -> dict:
        with self._state() as state:
            return copy.deepcopy(self._get(state, "subscriptions", subscription_id))

    def set_cancel_at_period_end(
        self, subscription_id: str, cancel: bool, *, idempotency_key: str
    ) -> dict:
        def change(state: dict, subscription: dict) -> list[dict]:
            _refuse_if_ended(subscription)
            previous = {"cancel_at_period_end": subscription["cancel_at_period_end"]}
            period_end = subscription["items"]["data"][0]["current_period_end"]
            subscription.update(
                cancel_at_period_end=cancel,
                cancel_at=period_end if cancel else None,
                canceled_at=_now() if cancel else None,
            )
            return [self._event(state, "customer.subscription.updated", subscription, previous)]

        return self._change_subscription(subscription_id, idempotency_key, change)

    def cancel_subscription(self, subscription_id: str, *, idempotency_key: str) -> dict:
        """End a subscription now, as DELETE /v1/subscriptions/:id does (books helper)."""

        def change(state: dict, subscription: dict) -> list[dict]:
            if subscription["status"] == "canceled":
                return []
            return self._end_subscription(state, subscription)

        return self._change_subscription(subscription_id, idempotency_key, change)

    def _change_subscription(self, subscription_id: str, idempotency_key: str, change) -> dict:
        """One idempotent write to a subscription: `change(state, subscription)` edits it
        and returns the events it causes, delivered once the state is saved."""
        with self._state() as state:
            replay = self._replay(state, idempotency_key)
            if replay:
                return replay
            subscription = self._get(state, "subscriptions", subscription_id)
            events = change(state, subscription)
            state["idempotency"][idempotency_key] = ["subscriptions", subscription_id]
            result = copy.deepcopy(subscription)
        self._deliver(events)
        return result

    def list_subscriptions(self, *, customer_id: str) -> list[dict]:
        with self._state() as state:
            found = [s for s in state["subscriptions"].values() if s["customer"] == customer_id]
            return copy.deepcopy(sorted(found, key=lambda s: s["created"], reverse=True))

    def list_invoice_payments(self, invoice_id: str) -> list[dict]:
        # An invoice the stand-in never made (a test's own event) has no payments it knows.
        with self._state() as state:
            invoice = state["invoices"].get(invoice_id) or {}
            return copy.deepcopy((invoice.get("payments") or {}).get("data") or [])

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

    def _complete_subscription(self, state: dict, session: dict) -> list[dict]:
        extras = state["session_extras"][session["id"]]
        subscription = self._subscription(state, session, extras)
        item = subscription["items"]["data"][0]
        period = (item["current_period_start"], item["current_period_end"])
        invoice = self._invoice(
            state, subscription, "subscription_create", period, (period[0], period[0])
        )
        self._discount_first_invoice(state, session, invoice)
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
        line = extras["line_items"][0]
        price_data = line["price_data"]
        subscription_id = _new_id("sub")
        start = _now()
        # A catalog Price as it is (the portal and plan changes can name it); an
        # inline price_data gets a Price of its own, as at Stripe.
        price = copy.deepcopy(state["prices"].get(line.get("price") or "")) or {
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
            "schedule": None,
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
            "discounts": [],
            "total_discount_amounts": [],
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
        payments = []
        # Nothing due (a 100% code, a proration that nets to zero): paid with no charge.
        if invoice["amount_due"] > 0:
            # Stripe names no invoice on the charge (API 2025-03-31 on): invoice.payments
            # ties them, so the books audit must pair them through the invoice.
            metadata = dict(subscription["metadata"])
            intent = self._payment_intent(
                state, invoice, status="succeeded", metadata=metadata, customer=invoice["customer"]
            )
            self._charge(state, intent)
            payments.append(
                {
                    "object": "invoice_payment",
                    "payment": {"type": "payment_intent", "payment_intent": intent["id"]},
                    "status": "paid",
                }
            )
        invoice.update(
            status="paid",
            amount_paid=invoice["amount_due"],
            amount_remaining=0,
            status_transitions={"finalized_at": invoice["created"], "paid_at": _now()},
            payments={"object": "list", "data": payments},
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
        # A downgrade scheduled for this renewal switches the Price before it is billed.
        self._start_next_phase(state, subscription)
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


def _refuse_if_ended(subscription: dict) -> None:
    if subscription["status"] == "canceled":
        raise GatewayError("This subscription has already ended.", code="invalid_state")
