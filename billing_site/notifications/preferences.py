"""POST /account/email-preferences: a customer turns the optional emails on or off.

Receipts, payment failures and refunds always go; credit-expiry reminders and
low-balance warnings can be turned off. The form sits on the account page.
"""

from dataclasses import dataclass

from flask import Blueprint, flash, redirect, request, url_for
from flask_login import current_user, login_required
from sqlalchemy import bindparam, select

from billing_site.extensions import db
from billing_site.models import EmailPreference

bp = Blueprint("email_preferences", __name__)


@dataclass(frozen=True)
class EmailChoices:
    credits_expiring: bool
    low_balance: bool


ALL_ON = EmailChoices(credits_expiring=True, low_balance=True)
# Read on every account page view: two columns of one row, without loading (or,
# for a customer who never chose, constructing) an EmailPreference entity.
_preferences = EmailPreference.__table__
CHOICES_OF = select(_preferences.c.credits_expiring, _preferences.c.low_balance).where(
    _preferences.c.user_id == bindparam("user_id")
)


def preferences_of(user_id: int) -> EmailChoices:
    """The customer's choices (all on when never set)."""
    row = db.session.connection().execute(CHOICES_OF, {"user_id": user_id}).first()
    return EmailChoices(*row) if row is not None else ALL_ON


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
