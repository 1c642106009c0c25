"""The admin's forms: a refund, a credit adjustment (Flask-WTF, so each carries csrf_token)."""

import re
import uuid
from datetime import date

from flask_wtf import FlaskForm
from wtforms import DateField, HiddenField, IntegerField, SelectField, StringField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import InputRequired, Length, NumberRange, Optional, ValidationError

from billing_site.refunds import REFUND_REASONS

# "5", "5.0", "5.00", "$5.00", "1,250.50"; a comma only as a thousands separator,
# so "5,00" (a decimal comma) is refused rather than read as five hundred dollars.
MONEY_PATTERN = re.compile(r"^\$?\s*(?P<whole>\d{1,3}(?:,\d{3})+|\d+)(?:\.(?P<cents>\d+))?$")
MAX_ADJUSTMENT = 1_000_000


def parse_money(text: str) -> int:
    """Cents from money as a person types it; ValueError with a message to show."""
    cleaned = (text or "").strip()
    if cleaned.startswith("-") or cleaned.startswith("$-"):
        raise ValueError("Enter a positive amount, like 5.00.")
    match = MONEY_PATTERN.match(cleaned)
    if match is None:
        raise ValueError("Enter an amount in dollars, like 5.00.")
    cents_text = match.group("cents") or ""
    if len(cents_text) > 2:
        raise ValueError("Use at most two decimal places (whole cents).")
    cents = int(match.group("whole").replace(",", "")) * 100 + int(cents_text.ljust(2, "0"))
    if cents == 0:
        raise ValueError("The amount must be more than zero.")
    return cents


def money_amount(form, field) -> None:
    """Blank means "everything still refundable"; otherwise the amount in cents."""
    field.cents = None
    if (field.data or "").strip():
        try:
            field.cents = parse_money(field.data)
        except ValueError as error:
            raise ValidationError(str(error)) from error


def one_time_token(form, field) -> None:
    try:
        uuid.UUID(field.data or "")
    except ValueError as error:
        raise ValidationError("This form is incomplete; reload the page and try again.") from error


class RefundForm(FlaskForm):
    amount = StringField("Amount (USD)", validators=[money_amount])
    reason = SelectField(
        "Reason",
        choices=[SelectChoice(value, label) for value, label in REFUND_REASONS.items()],
        validators=[InputRequired("Choose a reason.")],
    )
    note = TextAreaField("Note", validators=[Optional(), Length(max=1000)])
    # Fixed when the order page is rendered: every submission of this one form
    # (double-clicks, a second tab) names the same refund.
    refund_token = HiddenField(validators=[one_time_token])

    def new_token(self) -> None:
        self.refund_token.data = str(uuid.uuid4())


def not_zero(form, field) -> None:
    if field.data == 0:
        raise ValidationError("Enter a number of credits other than zero.")


def expiry_for_grants_only(form, field) -> None:
    if field.data is None:
        return
    if form.delta.data is not None and form.delta.data < 0:
        raise ValidationError("Only credits given (a plus) can have an expiry date.")
    if field.data <= date.today():
        raise ValidationError("Choose a date after today.")


class WholeNumberField(IntegerField):
    """An integer field whose complaint about "ten" or "1.5" says what to type."""

    def process_formdata(self, valuelist):
        try:
            super().process_formdata(valuelist)
        except ValueError as error:
            raise ValueError("Enter a whole number of credits, like 50 or -20.") from error


class AdjustCreditsForm(FlaskForm):
    delta = WholeNumberField(
        "Credits (+ to give, − to take)",
        validators=[
            InputRequired("Enter a whole number of credits, like 50 or -20."),
            NumberRange(
                min=-MAX_ADJUSTMENT,
                max=MAX_ADJUSTMENT,
                message=f"Adjust by at most {MAX_ADJUSTMENT:,} credits at a time.",
            ),
            not_zero,
        ],
    )
    reason = StringField(
        "Reason",
        validators=[InputRequired("Say why (it goes in the audit log)."), Length(max=500)],
    )
    expires_on = DateField("Expires on (optional)", validators=[Optional(), expiry_for_grants_only])
    adjustment_token = HiddenField(validators=[one_time_token])

    def new_token(self) -> None:
        self.adjustment_token.data = str(uuid.uuid4())
