"""Orders and refunds: find an order, look at it, preview and confirm a refund."""

from flask import (
    Response,
    abort,
    flash,
    redirect,
    render_template,
    request,
    stream_with_context,
    url_for,
)
from flask_login import current_user

from billing_site import refunds
from billing_site.admin import order_export, services
from billing_site.admin.forms import RefundForm
from billing_site.admin.routes import bp, page_number
from billing_site.extensions import db
from billing_site.htmx import render_page_or_fragment
from billing_site.models import ORDER_STATUSES, Refund, utcnow

FLASH_FOR_STATE = {
    "succeeded": "success",
    "pending": "warning",
    "failed": "error",
    "duplicate": "info",
}
EXPORT_BAD_DATES = (
    "Nothing was exported: the From and To dates must look like 2026-01-31. "
    "Fix them on the orders page and export again."
)


@bp.get("/orders")
def orders():
    filters = services.OrderFilters.from_args(request.args)
    return render_page_or_fragment(
        "admin/orders.html",
        "admin/_orders.html",
        filters=filters,
        orders=services.search_orders(filters, page_number()),
        statuses=ORDER_STATUSES,
    )


@bp.get("/orders.csv")
def export_orders():
    """The orders the list shows for the same search and filters, as a streamed CSV."""
    filters = services.OrderFilters.from_args(request.args)
    if filters.errors:
        # The page ignores a bad date and says so; a file cannot, and would silently
        # hold more orders than the admin asked for.
        abort(400, description=EXPORT_BAD_DATES)
    order_export.record_export(current_user.id, filters)
    filename = order_export.filename_for(utcnow().date())
    chunks = stream_with_context(order_export.csv_chunks(filters))
    response = Response(chunks, mimetype="text/csv")  # charset=utf-8 is added for text/*
    response.headers["Content-Disposition"] = f'attachment; filename="{filename}"'
    response.headers["Cache-Control"] = "no-store"  # customers' emails: no copies in caches
    return response


@bp.get("/orders/<int:order_id>")
def order_detail(order_id: int):
    form = RefundForm()
    form.new_token()
    return order_page(order_id, form)


@bp.post("/orders/<int:order_id>/refund/preview")
def preview_refund(order_id: int):
    form = RefundForm()
    if not form.validate_on_submit():
        return order_page(order_id, form, status=422, fragment=True)
    detail = _detail_or_404(order_id)
    try:
        preview = refunds.preview(detail.order, form.amount.cents)
    except refunds.RefundRefused as refused:
        form.amount.errors.append(refused.message)
        # 422, not 400: htmx swaps 422 into the panel, where the message belongs.
        return order_page(order_id, form, status=422, fragment=True)
    return order_page(order_id, form, preview=preview, fragment=True)


@bp.post("/orders/<int:order_id>/refund")
def refund_order(order_id: int):
    form = RefundForm()
    if not form.validate_on_submit():
        return order_page(order_id, form, status=422)
    _detail_or_404(order_id)
    try:
        result = refunds.refund_order(
            order_id,
            admin_id=current_user.id,
            amount_cents=form.amount.cents,
            reason=form.reason.data,
            note=form.note.data,
            request_token=form.refund_token.data,
        )
    except refunds.RefundRefused as refused:
        form.amount.errors.append(refused.message)
        return order_page(order_id, form, status=refused.status)
    flash(result.message, FLASH_FOR_STATE[result.state])
    return redirect(url_for("admin.order_detail", order_id=order_id), code=303)


@bp.post("/refunds/<int:refund_id>/retry")
def retry_refund(refund_id: int):
    refund = db.session.get(Refund, refund_id) or abort(404)
    try:
        result = refunds.retry_refund(refund.id, admin_id=current_user.id)
        flash(result.message, FLASH_FOR_STATE[result.state])
    except refunds.RefundRefused as refused:
        flash(refused.message, "error")
    return redirect(url_for("admin.order_detail", order_id=refund.order_id), code=303)


def order_page(order_id: int, form: RefundForm, *, status=200, preview=None, fragment=False):
    """The order page, or (for HTMX) just its refund panel."""
    detail = _detail_or_404(order_id)
    context = {"detail": detail, "form": form, "preview": preview}
    if fragment:
        return render_page_or_fragment(
            "admin/order.html", "admin/_refund_panel.html", status, **context
        )
    return render_template("admin/order.html", **context), status


def _detail_or_404(order_id: int) -> services.OrderDetail:
    return services.order_detail(order_id) or abort(404)
