"""Refunds and disputes of charges, and the lists the books audit reads."""

import copy

from billing_site.local_stripe.state import _new_id, _now, _strings
from billing_site.stripe_gateway import GatewayError


class RefundsMixin:
    """Refunds (the site's, or made "in the dashboard") and disputes opened, won or lost."""

    def list_charges(self, *, created_since: int) -> list[dict]:
        return self._listed(state_key="charges", created_since=created_since)

    def list_refunds(self, *, created_since: int) -> list[dict]:
        return self._listed(state_key="refunds", created_since=created_since)

    def list_disputes(self, *, created_since: int) -> list[dict]:
        return self._listed(state_key="disputes", created_since=created_since)

    def list_invoices(self, *, created_since: int) -> list[dict]:
        return self._listed(state_key="invoices", created_since=created_since)

    def _listed(self, *, state_key: str, created_since: int) -> list[dict]:
        # Newest first, as Stripe lists them.
        with self._state() as state:
            found = [o for o in state[state_key].values() if o["created"] >= created_since]
            return copy.deepcopy(sorted(found, key=lambda o: o["created"], reverse=True))

    def refund_in_dashboard(self, charge_id: str, amount: int | None = None) -> list[dict]:
        """Someone refunds in the Stripe dashboard: no site metadata, the same events."""
        with self._state() as state:
            charge = self._get(state, "charges", charge_id)
            refund, events = self._refund_charge(state, charge, {"amount": amount})
            self._store(state, "refunds", refund)
        self._deliver(events)
        return events

    def open_dispute(self, charge_id: str) -> list[dict]:
        """The cardholder disputes the charge: the money is withdrawn pending the outcome."""
        with self._state() as state:
            charge = self._get(state, "charges", charge_id)
            if charge["disputed"]:
                raise GatewayError("This charge is already disputed.", code="invalid_state")
            dispute = _new_dispute(charge)
            charge["disputed"] = True
            self._store(state, "disputes", dispute)
            events = [
                self._event(state, "charge.dispute.created", dispute),
                self._event(state, "charge.dispute.funds_withdrawn", dispute),
            ]
        self._deliver(events)
        return events

    def close_dispute(self, dispute_id: str, *, won: bool) -> list[dict]:
        """The bank decides: won (the money comes back) or lost (it stays withdrawn)."""
        with self._state() as state:
            dispute = self._get(state, "disputes", dispute_id)
            if dispute["status"] in ("won", "lost"):
                raise GatewayError("This dispute is already closed.", code="invalid_state")
            previous = {"status": dispute["status"]}
            dispute["status"] = "won" if won else "lost"
            events = [self._event(state, "charge.dispute.closed", dispute, previous)]
            if won:
                events.append(self._event(state, "charge.dispute.funds_reinstated", dispute))
        self._deliver(events)
        return events

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


def _new_dispute(charge: dict) -> dict:
    created = _now()
    return {
        "id": _new_id("dp"),
        "object": "dispute",
        "amount": charge["amount"] - charge["amount_refunded"],
        "balance_transactions": [],
        "charge": charge["id"],
        "created": created,
        "currency": charge["currency"],
        "evidence_details": {
            "due_by": created + 7 * 24 * 60 * 60,
            "has_evidence": False,
            "past_due": False,
            "submission_count": 0,
        },
        "is_charge_refundable": False,
        "livemode": False,
        "metadata": {},
        "payment_intent": charge["payment_intent"],
        "reason": "fraudulent",
        "status": "needs_response",
    }
