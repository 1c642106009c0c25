"""Webhook events: what Stripe sent, where it is in the queue, and a replay for any of them."""

import json

from flask import abort, flash, redirect, render_template, request, url_for
from flask_login import current_user

from billing_site.admin import services
from billing_site.admin.routes import bp, page_number
from billing_site.extensions import db
from billing_site.htmx import render_page_or_fragment
from billing_site.models import StripeEvent


@bp.get("/events")
def events():
    status = request.args.get("status", "").strip()
    event_type = request.args.get("type", "").strip()
    return render_page_or_fragment(
        "admin/events.html",
        "admin/_events.html",
        status_filter=status,
        event_type=event_type,
        statuses=services.EVENT_STATUSES,
        types=services.event_types(),
        events=services.list_events(status, event_type, page_number()),
        processing=services.processing_event_ids(),
    )


@bp.get("/events/<event_id>")
def event_detail(event_id: str):
    event = db.session.get(StripeEvent, event_id) or abort(404)
    payload = json.dumps(event.payload, indent=2, sort_keys=True)
    return render_template("admin/event.html", event=event, payload=payload)


@bp.post("/events/<event_id>/replay")
def replay_event(event_id: str):
    db.session.get(StripeEvent, event_id) or abort(404)
    try:
        outcome = services.replay_event(current_user.id, event_id)
    except services.ReplayRefused as refused:
        flash(refused.message, "error")
    else:
        category = "error" if outcome.startswith("failed again") else "success"
        flash(f"Replayed: {outcome}", category)
    return redirect(url_for("admin.event_detail", event_id=event_id), code=303)
