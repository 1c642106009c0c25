"""Refunds of charges."""

import copy

from billing_site.local_stripe.state import _new_id, _now, _strings
from billing_site.stripe_gateway import GatewayError


class RefundsMixin:
    """Refunds, as the site asks for them."""

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
