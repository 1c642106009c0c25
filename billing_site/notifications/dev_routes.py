"""Development only: /dev/mail lists every email the site queued, each readable as sent.

Registered only where the local test checkout is (no real Stripe, never in
production), so a developer sees receipts and reminders without a mail server.
The HTML part is served as its own document (its inline styles are the mail's),
under a policy that allows nothing but those styles.
"""

from flask import Blueprint, Response, abort, render_template, request
from sqlalchemy import select

from billing_site.extensions import db, talisman
from billing_site.models import OutboundEmail

bp = Blueprint("dev_mail", __name__, url_prefix="/dev/mail")
PAGE_SIZE = 100
# The email's own HTML: its inline styles and nothing else (no scripts, no forms),
# framed only by the message page.
EMAIL_CSP = {
    "default-src": "'none'",
    "style-src": "'unsafe-inline'",
    "img-src": "data:",
    "frame-ancestors": "'self'",
}


@bp.get("")
def outbox():
    kind = request.args.get("kind", "").strip()
    statement = select(OutboundEmail).order_by(OutboundEmail.id.desc()).limit(PAGE_SIZE)
    if kind:
        statement = statement.where(OutboundEmail.kind == kind)
    emails = db.session.execute(statement).scalars().all()
    return render_template("dev/mail.html", emails=emails, kind=kind)


@bp.get("/<int:email_id>")
def message(email_id: int):
    email = db.session.get(OutboundEmail, email_id) or abort(404)
    return render_template("dev/mail_message.html", email=email)


@bp.get("/<int:email_id>.html")
@talisman(content_security_policy=EMAIL_CSP, frame_options="SAMEORIGIN")
def message_html(email_id: int):
    email = db.session.get(OutboundEmail, email_id) or abort(404)
    return Response(email.html_body, mimetype="text/html")


@bp.get("/<int:email_id>.txt")
def message_text(email_id: int):
    email = db.session.get(OutboundEmail, email_id) or abort(404)
    return Response(email.text_body, mimetype="text/plain")
