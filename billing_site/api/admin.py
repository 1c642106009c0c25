"""Admin scope: refund a payment and search payments, as the admin console does.

The refund goes through refunds.py like the order page's form: the same bound
(never more than is still refundable), the same preview of the credits it takes
back, and the same one-refund-per-request guard, keyed here on the request's
Idempotency-Key (required) instead of the form's one-time token.
"""

import hashlib

from flask import jsonify, request

from billing_site import refunds
from billing_site.admin import services as admin
from billing_site.api.blueprint import require_admin, route
from billing_site.api.idempotency import HEADER, idempotent
from billing_site.api.payments import payment_json
from billing_site.api.shapes import ApiError, iso, json_body, money, optional_int, optional_string
from billing_site.extensions import db
from billing_site.models import Order


@route("/v1/admin/payments/<int:payment_id>/refunds", methods=("POST",))
@idempotent
def refund_payment(payment_id: int):
    user = require_admin()
    order = db.session.get(Order, payment_id)
    if order is None:
        raise ApiError(404, "not_found", "No such payment.")
    amount, reason, note, preview_only = refund_input(json_body())
    try:
        preview = refunds.preview(order, amount)
        if preview_only:
            return jsonify(preview_json(preview, order))
        result = refunds.refund_order(
            order.id,
            admin_id=user.id,
            amount_cents=amount,
            reason=reason,
            note=note,
            request_token=request_token(user.id),
        )
    except refunds.RefundRefused as refused:
        status = 422 if refused.status == 422 else 409
        raise ApiError(status, "refund_refused", refused.message, "amount") from refused
    if result.state == "failed":
        raise ApiError(502, "refund_failed", result.message)
    db.session.refresh(order)
    body = {
        "refund": refund_json(result.refund, order.currency),
        "state": result.state,
        "message": result.message,
        "preview": preview_json(preview, order),
        "payment": payment_json(order),
    }
    # A repeat of a request already made answers 200 with that refund, not a new one.
    return jsonify(body), 200 if result.state == "duplicate" else 201


def refund_input(data: dict) -> tuple[int | None, str, str | None, bool]:
    amount = optional_int(data, "amount")
    reason = data.get("reason")
    if reason not in refunds.REFUND_REASONS:
        choices = ", ".join(refunds.REFUND_REASONS)
        raise ApiError(422, "validation_error", f"reason must be one of: {choices}.", "reason")
    preview_only = data.get("preview", False)
    if not isinstance(preview_only, bool):
        raise ApiError(422, "validation_error", "preview must be true or false.", "preview")
    if not preview_only and not request.headers.get(HEADER):
        raise ApiError(
            400,
            "idempotency_key_required",
            "A refund needs an Idempotency-Key header, so a retry never refunds twice.",
        )
    return amount, reason, optional_string(data, "note", 1000), preview_only


def request_token(admin_id: int) -> str:
    # The form's one-time token, derived from the Idempotency-Key: every retry of
    # one request names the same refund, even after its claim was given back.
    raw = f"api:{admin_id}:{request.headers[HEADER].strip()}"
    return hashlib.sha256(raw.encode()).hexdigest()


def preview_json(preview: refunds.RefundPreview, order: Order) -> dict:
    return {
        "amount": money(preview.amount_cents, order.currency),
        "refundable": money(preview.refundable_cents, order.currency),
        "credits_clawed_back": preview.credits,
        "balance_before": preview.balance_before,
        "balance_after": preview.balance_after,
        "goes_negative": preview.goes_negative,
    }


def refund_json(refund, currency: str) -> dict:
    return {
        "id": refund.id,
        "status": refund.status,
        "amount": money(refund.amount_cents, currency),
        "reason": refund.reason,
        "stripe_refund_id": refund.stripe_refund_id,
        "created_at": iso(refund.created_at),
    }


@route("/v1/admin/payments")
def search_payments():
    require_admin()
    filters = admin.OrderFilters.from_args(request.args)
    if filters.errors:
        raise ApiError(422, "validation_error", " ".join(filters.errors), "from")
    page = request.args.get("page", "1")
    if not page.isdigit() or int(page) < 1:
        raise ApiError(422, "validation_error", "page must be a whole number ≥ 1.", "page")
    results = admin.search_orders(filters, int(page))
    data = [{**payment_json(order), "customer": customer_json(order)} for order in results.items]
    return jsonify({"data": data, "page": results.page, "has_more": results.has_next})


def customer_json(order: Order) -> dict:
    return {"id": order.user_id, "email": order.user.email}
