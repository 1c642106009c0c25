"""Record each Stripe event once and apply it once: the webhook's service layer.

A new event is recorded and applied in one transaction:

1. `INSERT … ON CONFLICT DO NOTHING` claims the event id. The row already
   carries the status it will have if the handler succeeds, so success costs
   no second write. A parallel delivery of the same event waits on the unique
   index until this transaction ends, then finds the row and does nothing.
2. The handler runs in the same transaction, and everything commits once.
3. A handler that raises is rolled back entirely (the claim with it), and the
   failure is written in a fresh transaction, so Stripe's retry, `reconcile` or
   an admin's replay can try again. A worker that dies mid-handler leaves
   nothing; Stripe, having had no 2xx, delivers again.

An event seen before is applied under its row lock (SELECT … FOR UPDATE) unless
it is already done, so a failed event's retry runs once however many arrive.

Statuses: "processed" (a handler ran, including when it found nothing of ours:
outcome "unknown_order", "unknown_user", … — valid, answered 200, changes
nothing, and reconcile will not retry it), "ignored" (no handler for the type),
"failed" (the handler raised; answered 500).
"""

import json
import logging
import time
import traceback
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select

from billing_site import metrics, notifications
from billing_site.extensions import db, dialect_insert
from billing_site.models import StripeEvent, utcnow
from billing_site.stripe_gateway import current_gateway, stripe_id
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
    started = time.perf_counter()
    try:
        outcome = _process_event(event)
    except HandlerFailed:
        metrics.observe_webhook(event, "failed", started)
        raise
    metrics.observe_webhook(event, outcome, started)
    return outcome


def _process_event(event: dict) -> str:
    handler = handler_for(event["type"])
    if not _claim_new_event(event, _status_after(handler)):
        return dispatch(event["id"])
    outcome = _run_handler(handler, event)
    db.session.commit()
    _log_line(event["id"], event["type"], _object_id(event), outcome, _status_after(handler))
    return outcome


def replay_event(event_id: str) -> str:
    """Run a stored event's handler again, whatever its status (handlers are idempotent).

    Raises EventNotFound for an unknown id and HandlerFailed when the handler raises.
    """
    if db.session.get(StripeEvent, event_id) is None:
        raise EventNotFound(event_id)
    db.session.rollback()
    return dispatch(event_id, force=True)


def _claim_new_event(event: dict, status: str) -> bool:
    """Insert the event row (uncommitted) with the status success will give it.

    False when the id is already stored: this delivery is a repeat or a retry.
    """
    values = _event_row(event) | {"status": status, "attempts": 1, "processed_at": utcnow()}
    table = StripeEvent.__table__
    statement = (
        dialect_insert(table).on_conflict_do_nothing(index_elements=["id"]).returning(table.c.id)
    )
    return db.session.execute(statement, values).first() is not None


def _event_row(event: dict) -> dict:
    return {
        "id": event["id"],
        "type": event["type"],
        "object_id": _object_id(event),
        "payment_intent_id": _payment_intent_of(event),
        "created": datetime.fromtimestamp(int(event.get("created") or 0), UTC),
        "payload": event,
        "received_at": utcnow(),
    }


def dispatch(event_id: str, *, force: bool = False) -> str:
    """Apply the stored event under its row lock, committing once; see the module docstring."""
    stored = _lock_event(event_id)
    if stored.status in DONE_STATUSES and not force:
        # Another delivery (or a parallel one we queued behind) already applied it.
        _log(stored, "duplicate")
        db.session.rollback()
        return "duplicate"
    handler = handler_for(stored.type)
    outcome = _run_handler(handler, stored.payload)
    stored.status = _status_after(handler)
    stored.error = None
    stored.attempts += 1
    stored.processed_at = utcnow()
    db.session.commit()
    _log(stored, outcome)
    return outcome


def _run_handler(handler, event: dict) -> str:
    """The handler's outcome; on an exception, roll back, record the failure, raise."""
    if handler is None:
        return "ignored: no handler for this type"
    try:
        outcome = handler(event) or "processed"
    except Exception as error:
        db.session.rollback()
        _record_failure(event, error)
        raise HandlerFailed(event["id"], error) from error
    notifications.after_event(event)  # queues its emails in this transaction
    return outcome


def _status_after(handler) -> str:
    return "processed" if handler is not None else "ignored"


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


def _record_failure(event: dict, error: Exception) -> None:
    """Store the event as failed, whether or not its row survived the rollback.

    A row another delivery has meanwhile finished is left as it is.
    """
    summary = "".join(traceback.format_exception(error, limit=-8))[-ERROR_TEXT_LIMIT:]
    failed = {"status": "failed", "error": summary}
    statement = dialect_insert(StripeEvent).values(**_event_row(event), **failed, attempts=1)
    statement = statement.on_conflict_do_update(
        index_elements=["id"],
        set_={**failed, "attempts": StripeEvent.attempts + 1},
        where=StripeEvent.status.not_in(DONE_STATUSES),
    )
    db.session.execute(statement)
    db.session.commit()
    log.error(
        "webhook event_id=%s type=%s object_id=%s outcome=error status=failed error=%r",
        event["id"],
        event["type"],
        _object_id(event),
        error,
    )


def _log(stored: StripeEvent, outcome: str) -> None:
    _log_line(stored.id, stored.type, stored.object_id, outcome, stored.status)


def _log_line(event_id: str, event_type: str, object_id: str | None, outcome: str, status: str):
    log.info(
        "webhook event_id=%s type=%s object_id=%s outcome=%s status=%s",
        event_id,
        event_type,
        object_id,
        _logfmt(outcome),
        status,
    )


def _logfmt(value: str) -> str:
    """A log value, quoted when it has spaces, so each line stays machine-readable."""
    return json.dumps(value) if " " in value or '"' in value else value


def _object_id(event: dict) -> str | None:
    return stripe_id(_event_object(event))


def _payment_intent_of(event: dict) -> str | None:
    obj = _event_object(event)
    if obj.get("object") == "payment_intent":
        return obj.get("id")
    return stripe_id(obj.get("payment_intent"))


def _event_object(event: dict) -> dict:
    obj = (event.get("data") or {}).get("object")
    return obj if isinstance(obj, dict) else {}
