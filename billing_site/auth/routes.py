"""Sign up, verify, log in, log out (here or everywhere), change or reset password; create-admin."""

import click
from email_validator import EmailNotValidError
from flask import (
    Blueprint,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_login import current_user, login_required, login_url, login_user, logout_user
from sqlalchemy import bindparam, select
from werkzeug.security import generate_password_hash

from billing_site.auth import emails, reset_links, services, throttle, verification
from billing_site.auth.forms import (
    ButtonForm,
    ChangePasswordForm,
    LoginForm,
    RequestResetForm,
    ResetPasswordForm,
    SignupForm,
)
from billing_site.client_identity import address_key
from billing_site.errors import error_response
from billing_site.extensions import db, limiter, login_manager
from billing_site.models import User

bp = Blueprint("auth", __name__, url_prefix="/auth", cli_group=None)

# Built once: db.session.get builds a select() each time it misses the identity
# map, which is at the start of every request a logged-in customer makes.
USER_BY_ID = select(User).where(User.id == bindparam("user_id"))

login_manager.login_view = "auth.login"
login_manager.login_message = "Please log in to continue."
login_manager.login_message_category = "info"
LINK_INVALID = "That link has expired or is not valid. Log in and use “Send the link again” on your account page."
ACCOUNT_THROTTLED = (
    "Too many wrong passwords for this account from here. Wait a few minutes and try again."
)


@login_manager.user_loader
def load_user(session_id: str) -> User | None:
    """The user a session names, if it was made since their last log-out everywhere.

    Sessions are "<user id>:<session version>"; a bare id (made before versions
    existed) counts as version 0.
    """
    user_id, _, version = session_id.partition(":")
    if not user_id.isdigit() or not (version or "0").isdigit():
        return None
    user = db.session.execute(USER_BY_ID, {"user_id": int(user_id)}).scalar_one_or_none()
    if user is None or user.session_version != int(version or "0"):
        return None
    return user


@login_manager.unauthorized_handler
def unauthorized():
    """API callers get a 401 JSON body; people get the log-in page and come back after."""
    if request.path.startswith("/api/"):
        return error_response(401)
    flash(login_manager.login_message, login_manager.login_message_category)
    return redirect(login_url(login_manager.login_view, next_url=request.url))


def login_rate_limit() -> str:
    return current_app.config["LOGIN_RATE_LIMIT"]


def signup_rate_limit() -> str:
    return current_app.config["SIGNUP_RATE_LIMIT"]


def reset_rate_limit() -> str:
    return current_app.config["PASSWORD_RESET_RATE_LIMIT"]


def reset_email_limit() -> str:
    return current_app.config["PASSWORD_RESET_EMAIL_LIMIT"]


def reset_email_key() -> str:
    # Per address asked about, however spelt and whoever asks, so no one floods an inbox.
    return "password-reset:" + services.email_key(request.form.get("email", ""))


def requested_next() -> str | None:
    return services.safe_next_url(request.args.get("next"))


def render_form(template: str, form, **context):
    # A submitted form that failed validation is Unprocessable Content.
    status = 422 if form.is_submitted() else 200
    return render_template(template, form=form, next_url=requested_next(), **context), status


def start_session(user: User) -> None:
    """Log `user` in with a fresh CSRF token (one seen before log-in is worthless after)."""
    session.pop("csrf_token", None)
    g.pop("csrf_token", None)
    login_user(user)


def check_inbox(email: str, link: str | None = None):
    # The same page whether or not the address has an account; the link is shown
    # only to a developer running the site offline.
    dev_link = link if current_app.config["APP_ENV"] == "development" else None
    return render_template("auth/check_inbox.html", email=email, dev_link=dev_link)


@bp.route("/signup", methods=["GET", "POST"])
@limiter.limit(signup_rate_limit, key_func=address_key, methods=["POST"], scope="signup")
def signup():
    form = SignupForm()
    if not form.validate_on_submit():
        return render_form("auth/signup.html", form)
    email = form.email.data
    try:
        user = services.create_user(email, form.password.data)
    except services.EmailTaken as taken:
        if taken.lookalike:
            form.email.errors.append(
                "This address looks like one that already has an account. Use another address."
            )
            return render_form("auth/signup.html", form)
        generate_password_hash(form.password.data)  # as long as a real sign-up takes
        if taken.owner is not None:
            emails.send_signup_attempt_notice(taken.owner)
        return check_inbox(email)
    if not verification.verification_required():
        verification.mark_verified(user)
        start_session(user)
        flash("Welcome to Pixel Forge! Your account is ready.", "success")
        return redirect(requested_next() or url_for("pricing.index"))
    link = verification.verification_link(user, requested_next())
    emails.send_verification_email(user, link)
    return check_inbox(email, link)


@bp.get("/verify/<token>")
def verify_email(token: str):
    """The link in the verification email: verify, grant the free credits, log in."""
    user, next_url = verification.read_token(token)
    if user is None:
        return error_response(400, LINK_INVALID)
    first_time = not user.email_verified
    verification.mark_verified(user)
    if first_time:
        # Only the first use logs in: a link found later in a mailbox is no key.
        start_session(user)
        flash("Your email is verified and your free credits are ready.", "success")
        return redirect(services.safe_next_url(next_url) or url_for("pricing.index"))
    flash("Your email is already verified.", "info")
    return redirect(url_for("account.dashboard" if current_user.is_authenticated else "auth.login"))


@bp.post("/verify/resend")
@login_required
@limiter.limit("3 per hour", key_func=address_key, scope="verify-resend")
def resend_verification():
    if not current_user.email_verified:
        link = verification.verification_link(current_user)
        emails.send_verification_email(current_user, link)
        if current_app.config["APP_ENV"] == "development":
            flash(f"Development: verify at {link}", "info")
    flash(f"We sent a new link to {current_user.email}.", "info")
    return redirect(url_for("account.dashboard"))


@bp.route("/login", methods=["GET", "POST"])
# Per address (never a header the client picks); per account in throttle, failures only.
@limiter.limit(login_rate_limit, key_func=address_key, methods=["POST"], scope="login-address")
def login():
    form = LoginForm()
    if not form.validate_on_submit():
        return render_form("auth/login.html", form)
    account = services.email_key(form.email.data)
    if throttle.account_refuses(account):
        return error_response(429, ACCOUNT_THROTTLED)
    user = services.authenticate(form.email.data, form.password.data)
    if user is None:
        throttle.record_failure(account)
        form.password.errors.append("That email and password do not match an account.")
        return render_form("auth/login.html", form)
    start_session(user)
    flash("You are logged in.", "success")
    return redirect(requested_next() or url_for("pricing.index"))


@bp.post("/logout")
def logout():
    # A copied cookie dies with the real one: the version it names is gone.
    if current_user.is_authenticated:
        services.end_all_sessions(current_user)
        db.session.commit()
    logout_user()
    flash("You are logged out.", "info")
    return redirect(url_for("pricing.index"))


@bp.route("/password", methods=["GET", "POST"])
@login_required
def change_password():
    form = ChangePasswordForm(current_user.email)
    if not form.validate_on_submit():
        return render_form("auth/password.html", form, sessions_form=ButtonForm())
    user = current_user._get_current_object()
    if not services.change_password(user, form.current_password.data, form.password.data):
        form.current_password.errors.append("That is not your current password.")
        return render_form("auth/password.html", form, sessions_form=ButtonForm())
    start_session(user)  # this session goes on; every other one has ended
    flash("Your password is changed and your other sessions are logged out.", "success")
    return redirect(url_for("account.dashboard"))


@bp.post("/sessions/end")
@login_required
def end_other_sessions():
    """Log out everywhere else: every other device's session and remember cookie."""
    user = current_user._get_current_object()
    services.end_all_sessions(user)
    db.session.commit()
    start_session(user)
    flash("You are logged out everywhere else.", "success")
    return redirect(url_for("auth.change_password"))


@bp.route("/reset", methods=["GET", "POST"])
@limiter.limit(reset_rate_limit, key_func=address_key, methods=["POST"], scope="reset-address")
@limiter.limit(reset_email_limit, key_func=reset_email_key, methods=["POST"], scope="reset-email")
def request_password_reset():
    """Forgot your password: the same answer whether or not the address has an account."""
    form = RequestResetForm()
    if not form.validate_on_submit():
        return render_form("auth/reset_request.html", form)
    link = reset_links.send_reset_link(form.email.data)
    dev_link = link if current_app.config["APP_ENV"] == "development" else None
    return render_template("auth/reset_sent.html", email=form.email.data, dev_link=dev_link)


@bp.route("/reset/<token>", methods=["GET", "POST"])
def reset_password(token: str):
    """The link in the reset email: choose a new password, then carry on logged in."""
    try:
        user = reset_links.user_for(token)
        form = ResetPasswordForm(user.email)
        if not form.validate_on_submit():
            return render_form("auth/reset_password.html", form, token=token)
        user = reset_links.redeem(token, form.password.data)  # checked again, under a lock
    except reset_links.LinkRefused as refused:
        page = render_template("auth/reset_refused.html", message=refused.message)
        return page, refused.status
    start_session(user)  # the only session left: every other one has ended
    flash("Your password is changed and you are logged out everywhere else.", "success")
    return redirect(url_for("account.dashboard"))


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
