"""The books audit on a page: Stripe's charges, refunds and disputes beside the site's."""

import time

from flask import render_template, request

from billing_site import books_audit
from billing_site.admin.routes import bp
from billing_site.commands import parse_window
from billing_site.stripe_gateway import GatewayError


@bp.get("/books")
def books_audit_page():
    since = request.args.get("since", "30d")
    try:
        window = parse_window(since)
    except ValueError as error:
        return render_template("admin/books_audit.html", since=since, error=str(error)), 400
    try:
        report = books_audit.audit(int(time.time()) - window)
    except GatewayError as error:
        return render_template("admin/books_audit.html", since=since, error=error.message), 502
    return render_template("admin/books_audit.html", since=since, report=report)
