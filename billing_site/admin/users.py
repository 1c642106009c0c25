"""Customers: find one, see their credits and orders, adjust their credits."""

from flask import abort, flash, redirect, request, url_for
from flask_login import current_user

from billing_site.admin import services
from billing_site.admin.forms import AdjustCreditsForm
from billing_site.admin.routes import bp, page_number
from billing_site.htmx import render_page_or_fragment


@bp.get("/users")
def users():
    query = request.args.get("q", "").strip()
    return render_page_or_fragment(
        "admin/users.html",
        "admin/_users.html",
        query=query,
        users=services.search_users(query, page_number()),
    )


@bp.get("/users/<int:user_id>")
def user_detail(user_id: int):
    form = AdjustCreditsForm()
    form.new_token()
    return customer_page(user_id, form)


@bp.post("/users/<int:user_id>/credits")
def adjust_credits(user_id: int):
    form = AdjustCreditsForm()
    if not form.validate_on_submit():
        return customer_page(user_id, form, status=422)
    services.customer_detail(user_id, 1) or abort(404)
    message = services.adjust_credits(
        current_user.id,
        user_id,
        form.delta.data,
        reason=form.reason.data.strip(),
        expires_on=form.expires_on.data,
        token=form.adjustment_token.data,
    )
    flash(message, "success")
    return redirect(url_for("admin.user_detail", user_id=user_id), code=303)


def customer_page(user_id: int, form: AdjustCreditsForm, status: int = 200):
    """The customer page, or (for HTMX ledger paging) just the ledger."""
    ledger_page = request.args.get("ledger_page", 1, type=int) or 1
    detail = services.customer_detail(user_id, ledger_page) or abort(404)
    return render_page_or_fragment(
        "admin/user.html", "admin/_ledger.html", status, detail=detail, form=form
    )
