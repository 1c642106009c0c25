"""The admin console under /admin: admins only, every action a CSRF-protected form.

This module holds the blueprint, its access rule, the overview, disputes and
the audit log; orders and refunds, customers and webhook events attach their
routes to the same blueprint from their own modules (imported at the bottom).
"""

from functools import wraps

from flask import Blueprint, abort, render_template, request
from flask_login import current_user

from billing_site.admin import services
from billing_site.extensions import login_manager
from billing_site.refunds import REFUND_REASONS, format_cents

bp = Blueprint("admin", __name__, url_prefix="/admin")


def admin_denied():
    """None for an admin; the log-in page for a visitor; 403 for a customer."""
    if not current_user.is_authenticated:
        return login_manager.unauthorized()  # a redirect carrying ?next=
    if not current_user.is_admin:
        abort(403)
    return None


def admin_required(view):
    """For an admin view outside this blueprint (the blueprint checks every request)."""

    @wraps(view)
    def wrapped(*args, **kwargs):
        return admin_denied() or view(*args, **kwargs)

    return wrapped


@bp.before_request
def require_admin():
    # Checked for every route of the blueprint, so a new page cannot forget it.
    return admin_denied()


@bp.context_processor
def admin_helpers():
    return {"money": format_cents, "refund_reasons": REFUND_REASONS}


def page_number() -> int:
    return request.args.get("page", 1, type=int) or 1


@bp.get("/")
def overview():
    from billing_site.stripe_contract import api_version_warning

    return render_template(
        "admin/overview.html", stats=services.overview(), api_version_warning=api_version_warning()
    )


@bp.get("/disputes")
def disputes():
    return render_template("admin/disputes.html", disputes=services.list_disputes(page_number()))


@bp.get("/audit")
def audit_log():
    entries = services.list_audit(page_number())
    return render_template(
        "admin/audit.html", entries=entries, emails=services.admin_emails(entries.items)
    )


from billing_site.admin import events, orders, users  # noqa: E402,F401  (attach their routes)
