"""Record each Stripe event once, then process it once: the webhook's service layer.

Two transactions per event, dj-stripe style:

1. `record_event` inserts the StripeEvent row (INSERT … ON CONFLICT DO NOTHING)
   and commits at once, so the record of a delivery survives whatever its
   handler does, and a repeated delivery finds the row already there.
2. `dispatch` locks that row (SELECT … FOR UPDATE), so parallel deliveries of
   one event queue behind each other; the first runs the handler and commits
   the handler's writes together with status "processed"; the others then find
   it processed and do nothing. A handler that raises is rolled back entirely,
   and the failure (with a traceback summary) is written in a third, fresh
   transaction, so Stripe's retry, `reconcile` or an admin's replay can try again.

Statuses: "processed" (a handler ran, including when it found nothing of ours:
outcome "unknown_order", "unknown_user", … — valid, answered 200, changes
nothing, and reconcile will not retry it), "ignored" (no handler for the type),
"failed" (the handler raised; answered 500).
"""

import json
import logging
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from billing_site.extensions import db
from billing_site.models import StripeEvent, utcnow
from billing_site.stripe_gateway import current_gateway
from billing_site.webhook.registry import handler_for

log = logging.getLogger("billing_site.webhook")

DONE_STATUSES = ("processed", "ignored")
ERROR_TEXT_LIMIT = 4000


class HandlerFailed(Exception):
    """The event's handler raised; its writes were rolled back and the failure recorded."""

    def __init__(self, event_id: str, error: Exception):
        super().__init__(f"handler for {event_id} failed: {error!r}")
        self.event_id = event_id
        self.error = error


class EventNotFound(LookupError):
    """No stored event has that id."""


def process_event(event: dict) -> str:
    """Record `event` once and apply it once; returns the outcome ("duplicate" if done before).

    Raises HandlerFailed (after recording the failure) when its handler raises.
    """
    record_event(event)
    return dispatch(event["id"])


def replay_event(event_id: str) -> str:
    """Run a stored event's handler again, whatever its status (handlers are idempotent).

    Raises EventNotFound for an unknown id and HandlerFailed when the handler raises.
    """
    if db.session.get(StripeEvent, event_id) is None:
        raise EventNotFound(event_id)
    db.session.rollback()
    return dispatch(event_id, force=True)


def record_event(event: dict) -> None:
    """Store the delivery in its own committed transaction; a repeat changes nothing."""
    values = {
        "id": event["id"],
        "type": event["type"],
        "object_id": _object_id(event),
        "created": datetime.fromtimestamp(int(event.get("created") or 0), UTC),
        "payload": event,
        "status": "received",
        "attempts": 0,
        "received_at": utcnow(),
    }
    statement = _insert(StripeEvent).values(**values).on_conflict_do_nothing(index_elements=["id"])
    db.session.execute(statement)
    db.session.commit()


def dispatch(event_id: str, *, force: bool = False) -> str:
    """Apply the stored event under its row lock, committing once; see the module docstring."""
    stored = _lock_event(event_id)
    if stored.status in DONE_STATUSES and not force:
        # Another delivery (or a parallel one we queued behind) already applied it.
        _log(stored, "duplicate")
        db.session.rollback()
        return "duplicate"
    handler = handler_for(stored.type)
    if handler is None:
        return _finish(stored, "ignored", "ignored: no handler for this type")
    try:
        outcome = handler(stored.payload) or "processed"
    except Exception as error:
        db.session.rollback()
        _record_failure(event_id, error)
        raise HandlerFailed(event_id, error) from error
    return _finish(stored, "processed", outcome)


@dataclass(frozen=True)
class ReconcileResult:
    event_id: str
    event_type: str
    action: str  # "skipped", "applied", "failed"
    outcome: str


def reconcile(created_since: int) -> list[ReconcileResult]:
    """Apply every event Stripe has since `created_since` that the site has not processed.

    Missing and failed events go through process_event (the same path as a
    delivery); processed and ignored ones are skipped. Raises GatewayError when
    Stripe cannot list its events.
    """
    results = []
    for event in current_gateway().list_events(created_since=created_since):
        results.append(_reconcile_one(event))
    return results


def _reconcile_one(event: dict) -> ReconcileResult:
    stored = db.session.get(StripeEvent, event["id"])
    status = stored.status if stored is not None else None
    db.session.rollback()
    if status in DONE_STATUSES:
        return ReconcileResult(event["id"], event["type"], "skipped", f"already {status}")
    try:
        outcome = process_event(event)
    except HandlerFailed as failure:
        return ReconcileResult(event["id"], event["type"], "failed", repr(failure.error))
    return ReconcileResult(event["id"], event["type"], "applied", outcome)


def _lock_event(event_id: str) -> StripeEvent:
    statement = (
        select(StripeEvent)
        .where(StripeEvent.id == event_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    return db.session.execute(statement).scalar_one()


def _finish(stored: StripeEvent, status: str, outcome: str) -> str:
    stored.status = status
    stored.error = None
    stored.attempts += 1
    stored.processed_at = utcnow()
    db.session.commit()
    _log(stored, outcome)
    return outcome


def _record_failure(event_id: str, error: Exception) -> None:
    summary = "".join(traceback.format_exception(error, limit=-8))[-ERROR_TEXT_LIMIT:]
    db.session.execute(
        update(StripeEvent)
        .where(StripeEvent.id == event_id)
        .values(status="failed", error=summary, attempts=StripeEvent.attempts + 1)
    )
    db.session.commit()
    stored = db.session.get(StripeEvent, event_id)
    log.error(
        "webhook event_id=%s type=%s object_id=%s outcome=error status=failed error=%r",
        stored.id,
        stored.type,
        stored.object_id,
        error,
    )


def _log(stored: StripeEvent, outcome: str) -> None:
    log.info(
        "webhook event_id=%s type=%s object_id=%s outcome=%s status=%s",
        stored.id,
        stored.type,
        stored.object_id,
        _logfmt(outcome),
        stored.status,
    )


def _logfmt(value: str) -> str:
    """A log value, quoted when it has spaces, so each line stays machine-readable."""
    return json.dumps(value) if " " in value or '"' in value else value


def _object_id(event: dict) -> str | None:
    obj = (event.get("data") or {}).get("object") or {}
    return obj.get("id") if isinstance(obj, dict) else None


def _insert(model):
    """INSERT for the session's dialect (both offer on_conflict_do_nothing)."""
    dialect = db.session.get_bind().dialect.name
    return postgresql_insert(model) if dialect == "postgresql" else sqlite_insert(model)
