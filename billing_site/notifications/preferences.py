"""POST /account/email-preferences: a customer turns the optional emails on or off.

Receipts, payment failures and refunds always go; credit-expiry reminders and
low-balance warnings can be turned off. The form sits on the account page.
"""

from flask import Blueprint, flash, redirect, request, url_for
from flask_login import current_user, login_required

from billing_site.extensions import db
from billing_site.models import EmailPreference

bp = Blueprint("email_preferences", __name__)


def preferences_of(user_id: int) -> EmailPreference:
    """The customer's choices (all on when never set)."""
    return db.session.get(EmailPreference, user_id) or EmailPreference(
        user_id=user_id, credits_expiring=True, low_balance=True
    )


@bp.app_context_processor
def preference_helpers():
    return {"email_preferences_of": preferences_of}


@bp.post("/account/email-preferences")
@login_required
def update():
    preference = db.session.get(EmailPreference, current_user.id)
    if preference is None:
        preference = EmailPreference(user_id=current_user.id)
        db.session.add(preference)
    # An unticked checkbox is simply absent from the form.
    preference.credits_expiring = request.form.get("credits_expiring") == "on"
    preference.low_balance = request.form.get("low_balance") == "on"
    db.session.commit()
    flash("Your email preferences are saved.", "success")
    return redirect(url_for("account.dashboard", _anchor="email-preferences"), code=303)
