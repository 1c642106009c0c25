"""The account dashboard, its HTMX partials, receipts, saved cards and self-service."""

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user, login_required

from billing_site import plan_changes
from billing_site.account import services
from billing_site.extensions import limiter
from billing_site.generator import svg_data_url
from billing_site.htmx import render_page_or_fragment

bp = Blueprint("account", __name__)


@bp.app_context_processor
def plan_card_context() -> dict:
    # The plan card is included by several pages; it says when a failed payment is due.
    return {"update_card_by": services.update_card_by}


@bp.get("/account")
@login_required
def dashboard():
    return render_template(
        "account/dashboard.html",
        board=services.dashboard(current_user),
        plans=plan_changes.plans(current_user),
        svg_data_url=svg_data_url,
    )


@bp.get("/account/ledger")
@login_required
def ledger():
    before = request.args.get("before", type=int)
    page = request.args.get("page", default=1, type=int)
    ledger_page = services.ledger_page(current_user.id, before=before, page=page)
    return render_page_or_fragment(
        "account/ledger.html",
        "account/_ledger_page.html",
        ledger=ledger_page,
        before=before,
        page_number=max(page, 1),
    )


@bp.get("/account/billing")
@login_required
def billing():
    return render_template(
        "account/billing.html", payments=services.billing_history(current_user.id)
    )


@bp.get("/account/orders/<int:order_id>/receipt")
@login_required
def receipt(order_id: int):
    order = services.order_for_receipt(current_user, order_id)
    if order is None:
        abort(404)  # someone else's order looks exactly like a missing one
    return render_template("account/receipt.html", payment=services.payment_view(order))


@bp.get("/account/payment-methods")
@login_required
def payment_methods():
    try:
        context = {"cards": services.saved_cards(current_user), "error": None}
    except services.SelfServiceError as error:
        context = {"cards": [], "error": error.message}
    return render_page_or_fragment(
        "account/payment_methods.html", "account/_payment_methods.html", **context
    )


# --- subscription self-service -------------------------------------------------------------


def portal_rate_limit() -> str:
    return current_app.config["PORTAL_RATE_LIMIT"]


def user_key() -> str:
    return f"user:{current_user.id}"


@bp.post("/account/portal")
@login_required
# Each opening calls Stripe, whose rate limit the whole site shares.
@limiter.limit(portal_rate_limit, key_func=user_key, scope="portal")
def portal():
    return_url = current_app.config["SITE_URL"] + url_for("account.dashboard")
    try:
        url = services.portal_url(current_user, return_url)
    except services.SelfServiceError as error:
        flash(error.message, "warning")
        return redirect(url_for("account.dashboard"), 303)
    return redirect(url, 303)


@bp.get("/account/subscription")
@login_required
def subscription_card():
    return _subscription_card(200)


@bp.post("/account/subscription/cancel")
@login_required
def cancel_subscription():
    return _change_subscription(cancel=True)


@bp.post("/account/subscription/resume")
@login_required
def resume_subscription():
    return _change_subscription(cancel=False)


def _change_subscription(cancel: bool):
    try:
        pending = services.set_cancel_at_period_end(current_user, cancel)
    except services.SelfServiceError as error:
        return _subscription_card(error.status, error=error.message)
    return _subscription_card(200, pending=pending)


def _subscription_card(status: int, **context):
    return render_page_or_fragment(
        "account/subscription.html",
        "account/_subscription_card.html",
        status,
        subscription=services.current_subscription(current_user),
        tier=services.tier_of(current_user),
        **context,
    )


# --- plan changes (billing_site.plan_changes) ------------------------------------------------


@bp.get("/account/plan")
@login_required
def plan():
    return _plan_card(200)


@bp.get("/account/plan/preview")
@login_required
def preview_plan():
    try:
        preview = plan_changes.preview_upgrade(current_user, request.args.get("tier", ""))
    except plan_changes.PlanChangeError as error:
        return _plan_card(error.status, error=error.message)
    return _plan_card(200, preview=preview)


@bp.post("/account/plan/upgrade")
@login_required
def upgrade_plan():
    form = request.form
    try:
        tier = plan_changes.confirm_upgrade(
            current_user, form.get("tier", ""), form.get("token", "")
        )
    except plan_changes.PlanChangeError as error:
        return _plan_card(error.status, error=error.message)
    flash(f"You are on {tier.name} now.", "success")
    return redirect(url_for("account.dashboard"), 303)


@bp.post("/account/plan/downgrade")
@login_required
def downgrade_plan():
    try:
        plan_changes.schedule_downgrade(current_user, request.form.get("tier", ""))
    except plan_changes.PlanChangeError as error:
        return _plan_card(error.status, error=error.message)
    return _plan_card(200)


@bp.post("/account/plan/keep")
@login_required
def keep_plan():
    try:
        plan_changes.cancel_downgrade(current_user)
    except plan_changes.PlanChangeError as error:
        return _plan_card(error.status, error=error.message)
    return _plan_card(200)


def _plan_card(status: int, **context):
    return render_page_or_fragment(
        "account/plan.html",
        "account/_plan_change.html",
        status,
        plans=plan_changes.plans(current_user),
        **context,
    )
