"""Sign up, log in, log out, and the create-admin command."""

import click
from email_validator import EmailNotValidError
from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask_login import login_url, login_user, logout_user

from billing_site.auth import services
from billing_site.auth.forms import LoginForm, SignupForm
from billing_site.client_identity import client_key
from billing_site.errors import error_response
from billing_site.extensions import db, limiter, login_manager
from billing_site.models import User

bp = Blueprint("auth", __name__, url_prefix="/auth", cli_group=None)

login_manager.login_view = "auth.login"
login_manager.login_message = "Please log in to continue."
login_manager.login_message_category = "info"


@login_manager.user_loader
def load_user(user_id: str) -> User | None:
    return db.session.get(User, int(user_id))


@login_manager.unauthorized_handler
def unauthorized():
    """API callers get a 401 JSON body; people get the log-in page and come back after."""
    if request.path.startswith("/api/"):
        return error_response(401)
    flash(login_manager.login_message, login_manager.login_message_category)
    return redirect(login_url(login_manager.login_view, next_url=request.url))


def login_rate_limit() -> str:
    return current_app.config["LOGIN_RATE_LIMIT"]


def account_key() -> str:
    """Limit guesses against one account, whichever clients they come from."""
    return "account:" + services.email_key(request.form.get("email", ""))


def requested_next() -> str | None:
    return services.safe_next_url(request.args.get("next"))


def render_form(template: str, form, **context):
    # A submitted form that failed validation is Unprocessable Content.
    status = 422 if form.is_submitted() else 200
    return render_template(template, form=form, next_url=requested_next(), **context), status


@bp.route("/signup", methods=["GET", "POST"])
def signup():
    form = SignupForm()
    if not form.validate_on_submit():
        return render_form("auth/signup.html", form)
    try:
        user = services.create_user(form.email.data, form.password.data)
    except services.EmailTaken:
        form.email.errors.append("An account with this email already exists. Log in instead.")
        return render_form("auth/signup.html", form)
    login_user(user)
    flash("Welcome to Pixel Forge! Your account is ready.", "success")
    return redirect(requested_next() or url_for("pricing.index"))


@bp.route("/login", methods=["GET", "POST"])
# Both limits count POSTs only: reading the form is free, guessing is not.
@limiter.limit(login_rate_limit, key_func=client_key, methods=["POST"], scope="login-client")
@limiter.limit(login_rate_limit, key_func=account_key, methods=["POST"], scope="login-account")
def login():
    form = LoginForm()
    if not form.validate_on_submit():
        return render_form("auth/login.html", form)
    user = services.authenticate(form.email.data, form.password.data)
    if user is None:
        form.password.errors.append("That email and password do not match an account.")
        return render_form("auth/login.html", form)
    login_user(user)
    flash("You are logged in.", "success")
    return redirect(requested_next() or url_for("pricing.index"))


@bp.post("/logout")
def logout():
    logout_user()
    flash("You are logged out.", "info")
    return redirect(url_for("pricing.index"))


@bp.cli.command("create-admin")
@click.argument("email")
@click.option("--password", help="Set (or reset) the admin's password.")
def create_admin_command(email: str, password: str | None):
    """Create an admin account, or promote an existing user to admin."""
    try:
        email = services.normalise_email(email)
        user, created = services.create_or_promote_admin(email, password)
    except (EmailNotValidError, ValueError) as error:
        raise click.ClickException(str(error)) from error
    click.echo(f"{'Created' if created else 'Promoted'} admin {user.email}.")
