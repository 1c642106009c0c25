"""Buying: start a Stripe Checkout, come back to the success or cancel page.

Views are thin: the work (orders, Stripe calls, fulfilment) is in services.py.
"""

from functools import wraps

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

from billing_site.checkout import services
from billing_site.client_identity import client_key
from billing_site.errors import error_response
from billing_site.extensions import limiter
from billing_site.htmx import is_htmx_request, render_page_or_fragment

bp = Blueprint("checkout", __name__)


def checkout_rate_limit() -> str:
    return current_app.config["CHECKOUT_RATE_LIMIT"]


def customer_key() -> str:
    # Per customer, not per address: one account cannot open sessions in a loop.
    if current_user.is_authenticated:
        return f"user:{current_user.id}"
    return client_key()


# One budget shared by every way of starting a checkout (page or API).
limit_checkout_starts = limiter.shared_limit(
    checkout_rate_limit, scope="checkout-start", key_func=customer_key
)


def login_then_pricing(view):
    """Anonymous buyers log in first and come back to pricing (not to this POST)."""

    @wraps(view)
    def wrapper(*args, **kwargs):
        if not current_user.is_authenticated:
            flash("Please log in or sign up to buy.", "info")
            return redirect(url_for("auth.login", next=url_for("pricing.index")))
        return view(*args, **kwargs)

    return wrapper


@bp.post("/checkout/pack/<pack_id>")
@login_then_pricing
@limit_checkout_starts
def start_pack(pack_id: str):
    return start(services.start_pack_checkout, pack_id)


@bp.post("/checkout/plan/<tier>")
@login_then_pricing
@limit_checkout_starts
def start_plan(tier: str):
    return start(services.start_plan_checkout, tier)


def start(start_checkout, item_id: str):
    try:
        checkout = start_checkout(current_user._get_current_object(), item_id)
    except services.UnknownItem:
        abort(404, description="We do not sell that. Pick a pack or plan from the pricing page.")
    except services.CheckoutFailed as error:
        return render_template("checkout/failed.html", message=error.message), 502
    # 303: the browser follows with a GET, whatever method brought it here.
    return redirect(checkout.url, code=303)


def success_page_rate_limit() -> str:
    return current_app.config["SUCCESS_PAGE_RATE_LIMIT"]


@bp.get("/checkout/success")
@login_required
@limiter.limit(success_page_rate_limit, key_func=customer_key, scope="checkout-success")
def success():
    outcome = services.confirm_checkout(
        current_user._get_current_object(), request.args.get("session_id")
    )
    if outcome is None:
        abort(404, description="We could not find that checkout.")
    return render_page_or_fragment(
        "checkout/success.html",
        "checkout/_status.html",
        outcome=outcome,
        session_id=request.args["session_id"],
        is_poll=is_htmx_request(),
    )


@bp.get("/checkout/cancel")
def cancel():
    return render_template("checkout/cancel.html")


@bp.post("/api/v1/stripe/checkout")
@login_required  # under /api/ the login manager answers 401 JSON
@limit_checkout_starts
def api_start():
    payload = request.get_json(silent=True)
    package_id = payload.get("package_id") if isinstance(payload, dict) else None
    if not isinstance(package_id, str) or not package_id:
        return error_response(422, "package_id is required.", error="validation_error")
    try:
        checkout = services.start_pack_checkout(current_user._get_current_object(), package_id)
    except services.UnknownItem:
        return error_response(404, f"No package {package_id!r}.", error="unknown_package")
    except services.CheckoutFailed as error:
        return error_response(502, error.message, error="payment_provider_error")
    return jsonify(services.checkout_json(checkout)), 201


@bp.get("/api/v1/orders/<int:order_id>")
@login_required  # under /api/ the login manager answers 401 JSON
def api_order(order_id: int):
    order = services.find_order_for(current_user._get_current_object(), order_id)
    if order is None:
        return error_response(404, "No such order.", error="not_found")
    return jsonify(services.order_json(order))
