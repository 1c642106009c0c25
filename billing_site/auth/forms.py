"""Sign-up and log-in forms (Flask-WTF: every form carries csrf_token)."""

from email_validator import EmailNotValidError
from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField
from wtforms.validators import EqualTo, InputRequired, Length, ValidationError

from billing_site.auth.services import MIN_PASSWORD_LENGTH, normalise_email


def normalised_email(form, field) -> None:
    """Validate the email and replace the field's data with its normal form."""
    try:
        field.data = normalise_email(field.data or "")
    except EmailNotValidError as error:
        raise ValidationError(str(error)) from error


class SignupForm(FlaskForm):
    email = EmailField(
        "Email", validators=[InputRequired("Enter your email address."), normalised_email]
    )
    password = PasswordField(
        "Password",
        validators=[
            InputRequired("Choose a password."),
            Length(
                min=MIN_PASSWORD_LENGTH,
                max=1024,
                message=f"Use at least {MIN_PASSWORD_LENGTH} characters.",
            ),
        ],
    )
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
