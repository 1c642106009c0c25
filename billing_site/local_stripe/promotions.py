"""Promotion codes at the test checkout: TEST50 takes 50% off, FREE100 all of it.

The shapes are Stripe's: a Checkout Session names its discount in `discounts`
and the amount in total_details.amount_discount; a subscription's first invoice
carries `discounts` and total_discount_amounts (the coupons are `duration:
once`, so renewals are at full price).
"""

import copy

from billing_site.local_stripe.state import _now
from billing_site.stripe_gateway import GatewayError

PERCENT_OFF = {"TEST50": 50, "FREE100": 100}


def promotion_code(code: str) -> dict:
    """The promotion code object for a known code."""
    percent = PERCENT_OFF[code]
    coupon = {
        "id": f"coupon_local_{code.lower()}",
        "object": "coupon",
        "amount_off": None,
        "duration": "once",
        "name": f"{percent}% off",
        "percent_off": float(percent),
        "valid": True,
    }
    return {
        "id": f"promo_local_{code.lower()}",
        "object": "promotion_code",
        "active": True,
        "code": code,
        "created": _now(),
        "livemode": False,
        "promotion": {"coupon": coupon["id"], "type": "coupon"},
        "coupon": coupon,
    }


def discount_of(amount: int, percent: int) -> int:
    return amount * percent // 100 if percent < 100 else amount


class PromotionsMixin:
    """Applying a code to an open session, and to the first invoice of its subscription."""

    def apply_promotion_code(self, session_id: str, code: str) -> dict:
        """The customer typed a code at the test checkout (Stripe's own page does this)."""
        code = (code or "").strip().upper()
        with self._state() as state:
            session = self._get(state, "checkout_sessions", session_id)
            if session["status"] != "open":
                raise GatewayError("This checkout is no longer open.", code="invalid_state")
            if not session["allow_promotion_codes"]:
                raise GatewayError("This checkout does not take codes.", code="parameter_invalid")
            if code not in PERCENT_OFF:
                raise GatewayError("This code is invalid.", code="promotion_code_invalid")
            promotion = promotion_code(code)
            discount = discount_of(session["amount_subtotal"], PERCENT_OFF[code])
            session.update(
                discounts=[
                    {"coupon": promotion["coupon"]["id"], "promotion_code": promotion["id"]}
                ],
                amount_total=session["amount_subtotal"] - discount,
                total_details={**session["total_details"], "amount_discount": discount},
            )
            state["session_extras"][session_id]["promotion_code"] = code
            return copy.deepcopy(session)

    def _discount_first_invoice(self, state: dict, session: dict, invoice: dict) -> None:
        code = state["session_extras"][session["id"]].get("promotion_code")
        if not code:
            return
        promotion = promotion_code(code)
        discount = discount_of(invoice["subtotal"], PERCENT_OFF[code])
        discount_id = f"di_local_{invoice['id']}"
        total = invoice["subtotal"] - discount
        invoice.update(
            discounts=[discount_id],
            total_discount_amounts=[{"amount": discount, "discount": discount_id}],
            total=total,
            amount_due=total,
            amount_remaining=total,
        )
        line = invoice["lines"]["data"][0]
        line["discount_amounts"] = [{"amount": discount, "discount": discount_id}]
        line["discounts"] = [discount_id]
        invoice["discount_details"] = {"promotion_code": promotion["id"], "code": code}
