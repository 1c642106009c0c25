"""Sign-up, log-in and password forms (Flask-WTF: every form carries csrf_token)."""

from email_validator import EmailNotValidError
from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField
from wtforms.validators import EqualTo, InputRequired, Length, ValidationError

from billing_site.auth.services import (
    MIN_PASSWORD_LENGTH,
    WeakPassword,
    check_password_strength,
    normalise_email,
)


def normalised_email(form, field) -> None:
    """Validate the email and replace the field's data with its normal form."""
    try:
        field.data = normalise_email(field.data or "")
    except EmailNotValidError as error:
        raise ValidationError(str(error)) from error


def strong_password(form, field) -> None:
    """Refuse common and guessable passwords, and the email itself (said beside the field)."""
    email = form.email.data if hasattr(form, "email") else form.account_email
    try:
        check_password_strength(field.data or "", email or "")
    except WeakPassword as error:
        raise ValidationError(str(error)) from error


NEW_PASSWORD_VALIDATORS = [
    InputRequired("Choose a password."),
    Length(
        min=MIN_PASSWORD_LENGTH,
        max=1024,
        message=f"Use at least {MIN_PASSWORD_LENGTH} characters.",
    ),
    strong_password,
]


class SignupForm(FlaskForm):
    email = EmailField(
        "Email", validators=[InputRequired("Enter your email address."), normalised_email]
    )
    password = PasswordField("Password", validators=NEW_PASSWORD_VALIDATORS)
    password_confirm = PasswordField(
        "Confirm password",
        validators=[
            InputRequired("Type the password again."),
            EqualTo("password", message="The two passwords do not match."),
        ],
    )


class LoginForm(FlaskForm):
    email = EmailField(
        "Email", validators=[InputRequired("Enter your email address."), normalised_email]
    )
    password = PasswordField("Password", validators=[InputRequired("Enter your password.")])


class ResetPasswordForm(FlaskForm):
    """A new password for an account, typed twice (the reset link's form)."""

    password = PasswordField("New password", validators=NEW_PASSWORD_VALIDATORS)
    password_confirm = PasswordField(
        "Confirm new password",
        validators=[
            InputRequired("Type the new password again."),
            EqualTo("password", message="The two passwords do not match."),
        ],
    )

    def __init__(self, account_email: str, **kwargs):
        super().__init__(**kwargs)
        self.account_email = account_email  # strong_password refuses the email itself


class ChangePasswordForm(ResetPasswordForm):
    """The same, from a logged-in person who knows the current one."""

    current_password = PasswordField(
        "Current password", validators=[InputRequired("Enter your current password.")]
    )


class RequestResetForm(FlaskForm):
    email = EmailField(
        "Email", validators=[InputRequired("Enter your email address."), normalised_email]
    )


class ButtonForm(FlaskForm):
    """A form with nothing but its CSRF token (log out everywhere, resend)."""
