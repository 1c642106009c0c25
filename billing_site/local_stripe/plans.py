"""Plan changes: invoice previews, subscription updates with prorations, and schedules."""

import copy

from billing_site.local_stripe.state import _new_id, _now, _strings
from billing_site.local_stripe.subscriptions import _refuse_if_ended
from billing_site.stripe_gateway import GatewayError


class PlansMixin:
    """invoices.create_preview, subscriptions.update and subscription_schedules.*."""

    def preview_invoice(self, params: dict) -> dict:
        """The proration invoice a price change would make now (nothing is stored)."""
        details = params.get("subscription_details") or {}
        with self._state() as state:
            subscription = self._get(state, "subscriptions", params.get("subscription"))
            change = (details.get("items") or [{}])[0]
            price = self._active_price(state, change.get("price"))
            when = int(details.get("proration_date") or _now())
            lines = _proration_lines(subscription, price, when, "preview")
            total = sum(line["amount"] for line in lines)
            return {
                "object": "invoice",
                "id": None,
                "amount_due": max(total, 0),
                "billing_reason": "subscription_update",
                "currency": subscription["currency"],
                "customer": subscription["customer"],
                "lines": {"object": "list", "data": lines, "has_more": False},
                "subtotal": total,
                "total": total,
                "status": "draft",
            }

    def update_subscription(
        self, subscription_id: str, params: dict, *, idempotency_key: str
    ) -> dict:
        """Switch the subscription's Price; always_invoice bills the proration at once."""

        def change(state: dict, subscription: dict) -> list[dict]:
            _refuse_if_ended(subscription)
            return self._change_price(state, subscription, params)

        return self._change_subscription(subscription_id, idempotency_key, change)

    def create_subscription_schedule(self, params: dict, *, idempotency_key: str) -> dict:
        with self._state() as state:
            replay = self._replay(state, idempotency_key)
            if replay:
                return replay
            subscription = self._get(state, "subscriptions", params["from_subscription"])
            if subscription.get("schedule"):
                raise GatewayError(
                    "This subscription is already attached to a schedule.", code="invalid_state"
                )
            schedule = _new_schedule(subscription)
            subscription["schedule"] = schedule["id"]
            self._store(state, "subscription_schedules", schedule, idempotency_key)
            return copy.deepcopy(schedule)

    def update_subscription_schedule(
        self, schedule_id: str, params: dict, *, idempotency_key: str
    ) -> dict:
        with self._state() as state:
            schedule = self._get(state, "subscription_schedules", schedule_id)
            if schedule["status"] != "active":
                raise GatewayError("This schedule is no longer active.", code="invalid_state")
            for phase in params.get("phases") or []:
                for item in phase["items"]:
                    self._active_price(state, item["price"])
            schedule.update(
                phases=copy.deepcopy(params.get("phases") or schedule["phases"]),
                end_behavior=params.get("end_behavior", schedule["end_behavior"]),
            )
            return copy.deepcopy(schedule)

    def release_subscription_schedule(self, schedule_id: str, *, idempotency_key: str) -> dict:
        with self._state() as state:
            schedule = self._get(state, "subscription_schedules", schedule_id)
            if schedule["status"] != "active":
                raise GatewayError("This schedule is no longer active.", code="invalid_state")
            subscription = state["subscriptions"][schedule["subscription"]]
            events = self._release(state, schedule, subscription)
            result = copy.deepcopy(schedule)
        self._deliver(events)
        return result

    # --- inside the state --------------------------------------------------------------

    def _active_price(self, state: dict, price_id: str | None) -> dict:
        price = self._get(state, "prices", price_id)
        if not price["active"]:
            raise GatewayError(
                f"The price specified is inactive: {price_id}", code="price_inactive"
            )
        return price

    def _change_price(self, state: dict, subscription: dict, params: dict) -> list[dict]:
        item = subscription["items"]["data"][0]
        change = (params.get("items") or [{}])[0]
        price = self._active_price(state, change.get("price"))
        previous = {
            "items": copy.deepcopy(subscription["items"]),
            "metadata": copy.deepcopy(subscription["metadata"]),
        }
        when = int(params.get("proration_date") or _now())
        lines = _proration_lines(subscription, price, when, "invoice")
        item["price"] = copy.deepcopy(price)
        subscription["metadata"].update(_strings(params.get("metadata")))
        events = [self._event(state, "customer.subscription.updated", subscription, previous)]
        if params.get("proration_behavior") == "always_invoice":
            invoice = self._proration_invoice(state, subscription, lines)
            previous_invoice = {"latest_invoice": subscription["latest_invoice"]}
            subscription["latest_invoice"] = invoice["id"]
            events[0]["data"]["previous_attributes"].update(previous_invoice)
            events[0]["data"]["object"]["latest_invoice"] = invoice["id"]
            events.append(self._event(state, "invoice.paid", invoice))
        return events

    def _proration_invoice(self, state: dict, subscription: dict, lines: list[dict]) -> dict:
        item = subscription["items"]["data"][0]
        period = (lines[-1]["period"]["start"], lines[-1]["period"]["end"])
        invoice = self._invoice(state, subscription, "subscription_update", period, period)
        for line in lines:
            line["invoice"] = invoice["id"]
            line["parent"]["subscription_item_details"]["subscription_item"] = item["id"]
        total = sum(line["amount"] for line in lines)
        invoice["lines"]["data"] = lines
        due = max(total, 0)
        invoice.update(amount_due=due, amount_remaining=due, subtotal=total, total=total)
        self._mark_invoice_paid(state, invoice, subscription)
        return invoice

    def _start_next_phase(self, state: dict, subscription: dict) -> None:
        """At a renewal: a schedule whose first phase just ended moves to its next phase."""
        schedule = state["subscription_schedules"].get(subscription.get("schedule") or "")
        if schedule is None or schedule["status"] != "active" or len(schedule["phases"]) < 2:
            return
        item = subscription["items"]["data"][0]
        if (schedule["phases"][0].get("end_date") or 0) > item["current_period_start"]:
            return
        next_phase = schedule["phases"][1]
        item["price"] = copy.deepcopy(state["prices"][next_phase["items"][0]["price"]])
        subscription["metadata"].update(_strings(next_phase.get("metadata")))
        schedule["phases"] = schedule["phases"][1:]
        if schedule["end_behavior"] == "release":
            schedule.update(status="released", released_at=_now(), released_subscription=None)
            subscription["schedule"] = None

    def _release(self, state: dict, schedule: dict, subscription: dict) -> list[dict]:
        schedule.update(
            status="released", released_at=_now(), released_subscription=subscription["id"]
        )
        previous = {"schedule": subscription.get("schedule")}
        subscription["schedule"] = None
        return [self._event(state, "customer.subscription.updated", subscription, previous)]


def _proration_lines(subscription: dict, price: dict, when: int, stage: str) -> list[dict]:
    """Stripe's two proration lines: unused time on the old Price, remaining time on the new."""
    item = subscription["items"]["data"][0]
    start, end = item["current_period_start"], item["current_period_end"]
    # The stand-in's renewals move the period on without the clock: a change made
    # "now" falls inside the period being paid for, never before it (Stripe's
    # proration_date is always within the current period).
    when = min(max(when, start), end)
    share = (end - when) / max(end - start, 1)
    old = item["price"]
    return [
        _line(subscription, old, -round(old["unit_amount"] * share), when, end, "Unused time on"),
        _line(
            subscription, price, round(price["unit_amount"] * share), when, end, "Remaining time on"
        ),
    ]


def _line(subscription: dict, price: dict, amount: int, start: int, end: int, words: str) -> dict:
    return {
        "id": _new_id("il"),
        "object": "line_item",
        "amount": amount,
        "currency": subscription["currency"],
        "description": f"{words} {price.get('nickname') or 'plan'}",
        "invoice": None,
        "metadata": {},
        "parent": {
            "type": "subscription_item_details",
            "subscription_item_details": {
                "invoice_item": _new_id("ii"),
                "proration": True,
                "subscription": subscription["id"],
                "subscription_item": subscription["items"]["data"][0]["id"],
            },
        },
        "period": {"start": start, "end": end},
        "pricing": {
            "type": "price_details",
            "price_details": {"price": price["id"], "product": price["product"]},
        },
        "quantity": 1,
    }


def _new_schedule(subscription: dict) -> dict:
    item = subscription["items"]["data"][0]
    return {
        "id": _new_id("sub_sched"),
        "object": "subscription_schedule",
        "created": _now(),
        "current_phase": {
            "start_date": item["current_period_start"],
            "end_date": item["current_period_end"],
        },
        "customer": subscription["customer"],
        "end_behavior": "release",
        "livemode": False,
        "metadata": {},
        "phases": [
            {
                "items": [{"price": item["price"]["id"], "quantity": 1}],
                "start_date": item["current_period_start"],
                "end_date": item["current_period_end"],
            }
        ],
        "released_at": None,
        "released_subscription": None,
        "status": "active",
        "subscription": subscription["id"],
    }
