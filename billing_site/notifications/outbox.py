"""The outbox: messages are queued in their cause's transaction and sent after it commits.

`queue()` inserts a row into `outbound_emails` inside the caller's transaction,
keyed by a unique `cause_key`, so a cause applied five times (a webhook
redelivered) makes one message, and a cause rolled back makes none. Once that
transaction commits, the site tries to send what it queued (an `after_commit`
listener; never from inside the transaction, so a slow or refusing mail server
never fails a payment). A failed attempt is recorded and `send_due_emails()`
tries again later, with exponential backoff, until MAX_ATTEMPTS.

With no MAIL_URL nothing is sent: messages are inserted as "stored" and stay in
the table, where development reads them at /dev/mail and tests assert on them.
"""

import contextlib
import hashlib
import logging
from datetime import datetime, timedelta
from urllib.parse import parse_qs, unquote, urlsplit

from flask import current_app, has_app_context
from flask_mailman import EmailMultiAlternatives, Mail
from flask_sqlalchemy.session import Session as FlaskSession
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from billing_site import metrics
from billing_site.config import ConfigError
from billing_site.extensions import db, insert_once
from billing_site.models import OutboundEmail, utcnow

log = logging.getLogger("billing_site.notifications")

mail = Mail()
PENDING = "outbound_email_ids"  # the session.info key holding what this transaction queued
MAX_ATTEMPTS = 10
FIRST_RETRY = timedelta(minutes=1)
LONGEST_RETRY = timedelta(hours=6)
ERROR_TEXT_LIMIT = 2000
BATCH_SIZE = 200


def init_app(app) -> None:
    """Read MAIL_URL into Flask-Mailman's settings and send queued mail after each commit."""
    app.config.update(mail_settings(app.config.get("MAIL_URL", "")))
    mail.init_app(app)
    _listen_once()


def mail_settings(url: str) -> dict:
    """Flask-Mailman's MAIL_* settings from smtp://user:pass@host:port[?tls=1] (or smtps://)."""
    if not url:
        return {"MAIL_BACKEND": "locmem"}
    parts = urlsplit(url)
    if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
        raise ConfigError("MAIL_URL must look like smtp://user:password@host:587?tls=1.")
    query = parse_qs(parts.query)
    ssl = parts.scheme == "smtps"
    return {
        "MAIL_BACKEND": "smtp",
        "MAIL_SERVER": parts.hostname,
        "MAIL_PORT": parts.port or (465 if ssl else 25),
        "MAIL_USERNAME": unquote(parts.username) if parts.username else None,
        "MAIL_PASSWORD": unquote(parts.password) if parts.password else None,
        "MAIL_USE_TLS": query.get("tls", ["0"])[0].lower() in ("1", "true", "yes"),
        "MAIL_USE_SSL": ssl,
    }


def mail_configured() -> bool:
    return bool(current_app.config.get("MAIL_URL"))


def queue(
    cause_key: str,
    *,
    kind: str,
    to: str,
    subject: str,
    template: str,
    user_id: int | None = None,
    send_after_commit: bool = True,
    **context,
) -> int | None:
    """Queue a message in the caller's transaction, once per cause; the new id, or None.

    It is sent right after that transaction commits, or with `send_after_commit=False`
    by the worker's next `send-emails` run, when how long the request takes must not
    depend on whether an email went out."""
    # No mail server: nothing will ever be sent, so the message is stored as it is
    # queued, and no second transaction after the commit has to say so.
    sending = mail_configured()
    now = utcnow()
    values = {
        "cause_key": cause_key,
        "kind": kind,
        "user_id": user_id,
        "to_address": to,
        "subject": subject,
        "text_body": _render(f"email/{template}.txt", subject=subject, **context),
        "html_body": _render(f"email/{template}.html", subject=subject, **context),
        "status": "queued" if sending else "stored",
        "attempts": 0,
        "next_attempt_at": now,
        "created_at": now,
    }
    row = db.session.execute(_queue_statement(), values).first()
    if row is None:
        return None  # this cause already has its message
    if send_after_commit and sending:
        db.session.info.setdefault(PENDING, []).append(row.id)
    log.info(
        "email %s id=%s kind=%s cause=%s user_id=%s",
        values["status"],
        row.id,
        kind,
        cause_key,
        user_id,
    )
    return row.id


_queue_statements = {}  # dialect name → the INSERT, built once
QUEUED_COLUMNS = (
    "cause_key", "kind", "user_id", "to_address", "subject", "text_body", "html_body",
    "status", "attempts", "next_attempt_at", "created_at",
)  # fmt: skip


def _queue_statement():
    dialect = db.session.get_bind().dialect.name
    if dialect not in _queue_statements:
        _queue_statements[dialect] = insert_once(
            OutboundEmail.__table__, QUEUED_COLUMNS, "cause_key"
        )
    return _queue_statements[dialect]


def already_queued(cause_key: str) -> bool:
    return (
        db.session.execute(
            select(OutboundEmail.id).where(OutboundEmail.cause_key == cause_key)
        ).first()
        is not None
    )


def _render(template_name: str, **context) -> str:
    # Straight from the Jinja environment: an email has no request, user or
    # CSRF token, so the site's context processors must not run for it.
    template = current_app.jinja_env.get_template(template_name)
    return template.render(site_url=current_app.config["SITE_URL"], **context)


# --- sending ---------------------------------------------------------------------


def send_due_emails(now: datetime | None = None) -> dict[str, int]:
    """Try every queued message whose time has come; returns how many ended in each status."""
    now = now or utcnow()
    ids = (
        db.session.execute(
            select(OutboundEmail.id)
            .where(OutboundEmail.status == "queued", OutboundEmail.next_attempt_at <= now)
            .order_by(OutboundEmail.next_attempt_at, OutboundEmail.id)
            .limit(BATCH_SIZE)
        )
        .scalars()
        .all()
    )
    db.session.rollback()
    counts: dict[str, int] = {}
    for email_id in ids:
        status = deliver(email_id)
        counts[status] = counts.get(status, 0) + 1
    return counts


def deliver(email_id: int) -> str:
    """One attempt at one queued message, in its own transaction; returns its status after."""
    with Session(db.engine, expire_on_commit=False) as session:
        email = session.execute(
            select(OutboundEmail)
            .where(OutboundEmail.id == email_id, OutboundEmail.status == "queued")
            .with_for_update(skip_locked=True)
        ).scalar_one_or_none()
        if email is None:
            return "skipped"  # sent meanwhile, or another process is sending it now
        if not mail_configured():
            email.status = "stored"
        else:
            _attempt(email)
        session.commit()
        return email.status


def _attempt(email: OutboundEmail) -> None:
    email.attempts += 1
    try:
        _send(email)
    except Exception as error:  # any failure of the mail server: record it, retry later
        email.last_error = repr(error)[:ERROR_TEXT_LIMIT]
        if email.attempts >= MAX_ATTEMPTS:
            email.status = "failed"
        else:
            email.next_attempt_at = utcnow() + retry_delay(email.attempts)
        metrics.EMAILS_SENT.labels(kind=email.kind, outcome="error").inc()
        log.warning(
            "email send failed id=%s kind=%s attempt=%s status=%s error=%r",
            email.id,
            email.kind,
            email.attempts,
            email.status,
            error,
        )
        return
    email.status = "sent"
    email.sent_at = utcnow()
    email.last_error = None
    metrics.EMAILS_SENT.labels(kind=email.kind, outcome="sent").inc()
    log.info("email sent id=%s kind=%s attempt=%s", email.id, email.kind, email.attempts)


def retry_delay(attempts: int) -> timedelta:
    """1, 2, 4, … minutes after each failed attempt, at most LONGEST_RETRY."""
    return min(FIRST_RETRY * 2 ** (attempts - 1), LONGEST_RETRY)


def _send(email: OutboundEmail) -> None:
    config = current_app.config
    message = EmailMultiAlternatives(
        subject=email.subject,
        body=email.text_body,
        from_email=config["MAIL_DEFAULT_SENDER"],
        to=[email.to_address],
        # The same Message-ID on every attempt lets a receiving server drop a
        # copy we resent because its acknowledgement got lost.
        headers={"Message-ID": _message_id(email), "X-Pixel-Forge-Kind": email.kind},
    )
    message.attach_alternative(email.html_body, "text/html")
    connection = mail.get_connection(fail_silently=False)
    try:
        connection.open()
        connection.send_messages([message])
    finally:
        _close(connection)


def _close(connection) -> None:
    """Close the SMTP connection even when QUIT fails (a refusing server), never leak it."""
    smtp = getattr(connection, "connection", None)
    with contextlib.suppress(Exception):
        connection.close()
    if smtp is not None:
        with contextlib.suppress(Exception):
            smtp.close()


def _message_id(email: OutboundEmail) -> str:
    digest = hashlib.sha256(email.cause_key.encode()).hexdigest()[:24]
    domain = urlsplit(current_app.config["SITE_URL"]).hostname or "localhost"
    return f"<{email.id}.{digest}@{domain}>"


# --- after the cause commits -------------------------------------------------------

_listening = False


def _listen_once() -> None:
    global _listening
    if not _listening:
        event.listen(FlaskSession, "after_commit", _send_after_commit)
        event.listen(FlaskSession, "after_soft_rollback", _forget_after_rollback)
        _listening = True


def _send_after_commit(session) -> None:
    if session.in_nested_transaction():
        return  # a savepoint was released; the outer transaction has not committed yet
    ids = session.info.pop(PENDING, None)
    if not ids or not has_app_context():
        return
    for email_id in ids:
        try:
            deliver(email_id)
        except Exception:  # the cause is committed; send_due_emails will try again
            log.exception("email delivery after commit failed id=%s", email_id)


def _forget_after_rollback(session, previous_transaction) -> None:
    # Only the outermost transaction's rollback takes the queued rows with it.
    if previous_transaction.parent is None:
        session.info.pop(PENDING, None)
