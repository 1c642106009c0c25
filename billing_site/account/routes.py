"""The account dashboard, its HTMX partials, receipts, usage JSON and self-service."""

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask_login import current_user, login_required

from billing_site.account import services
from billing_site.errors import error_response
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


@bp.get("/api/v1/account/usage")
def usage_api():
    if not current_user.is_authenticated:
        return error_response(401, "Log in to see your usage.", error="unauthorized")
    services.touch_month(current_user)
    return jsonify(services.usage(current_user).as_json())


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
