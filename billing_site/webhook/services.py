"""The webhook inbox and the one step that applies a stored event.

Receiving (the web process) does only this: insert the event with status
"queued" unless its id is stored (_insert_unless_stored), commit, NOTIFY the
workers (PostgreSQL), answer 200. Once that commit is done the event is never
lost, whatever dies next.

Applying (billing_site/worker, also admin replay and reconcile) runs the
handler in the same transaction that marks the event done, so an event is
either applied and marked, or neither. A handler that raises is rolled back
and the attempt recorded with its traceback: "retrying" with exponential
backoff (WORKER_RETRY_BASE_SECONDS doubling), then "dead" after
WORKER_MAX_ATTEMPTS, which an admin can replay.

Statuses: "queued", "retrying", "dead" (undone); "processed" (a handler ran,
including when it found nothing of ours: outcome "unknown_order", … — valid,
changes nothing), "ignored" (no handler for the type).
"""

import json
import logging
import re
import time
import traceback
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from flask import current_app
from sqlalchemy import Text, bindparam, cast, exists, func, select
from sqlalchemy import event as sa_event
from sqlalchemy.orm import undefer

from billing_site import metrics, notifications
from billing_site.extensions import db, dialect_insert, update_now
from billing_site.models import StripeEvent, utcnow
from billing_site.stripe_gateway import current_gateway, stripe_id
from billing_site.webhook.registry import handler_for

log = logging.getLogger("billing_site.webhook")

DONE_STATUSES = ("processed", "ignored")
PENDING_STATUSES = ("queued", "retrying")
ERROR_TEXT_LIMIT = 4000
NOTIFY_CHANNEL = "stripe_events"
WRITE_STATEMENT = re.compile(r'\s*(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+"?(\w+)', re.IGNORECASE)


class HandlerFailed(Exception):
    """The event's handler raised; its writes were rolled back and the failure recorded."""

    def __init__(self, event_id: str, error: Exception):
        super().__init__(f"handler for {event_id} failed: {error!r}")
        self.event_id = event_id
        self.error = error


class EventNotFound(LookupError):
    """No stored event has that id."""


# --- receiving (the web process) ---------------------------------------------------


def receive_event(event: dict, body: str | None = None) -> bool:
    """Store a verified event as queued and commit; False when its id was stored before.

    `body` is the JSON text Stripe signed, stored as it came: what Stripe sent is
    the record, and serialising the parsed event again would only cost time. An
    event fetched from the API (reconcile) has no body and is serialised.
    """
    now = utcnow()
    values = _event_row(event) | {
        "payload": json.dumps(event) if body is None else body,
        "status": "queued",
        "attempts": 0,
        "next_attempt_at": now,
    }
    # A connection of its own, not the ORM session: one INSERT and its COMMIT are
    # all there is to do, and the session's commit with its hooks (caches, emails
    # after the commit) cost more than both. An error rolls back; nothing is kept.
    with db.engine.begin() as connection:
        stored = connection.execute(_store_statement(), values).first() is not None
    metrics.WEBHOOK_EVENTS.labels(
        type=event["type"], outcome="queued" if stored else "duplicate"
    ).inc()
    log.info(
        "webhook event_id=%s type=%s object_id=%s status=%s",
        event["id"],
        event["type"],
        values["object_id"],
        "queued" if stored else "duplicate",
    )
    return stored


def _on_postgresql() -> bool:
    return db.session.get_bind().dialect.name == "postgresql"


STORED_COLUMNS = (
    "id", "type", "object_id", "payment_intent_id", "created", "payload",
    "status", "attempts", "received_at", "next_attempt_at",
)  # fmt: skip
_store_statements: dict[str, object] = {}


def _store_statement():
    """The INSERT of an event row, built once per dialect with bound parameters
    (building it costs more than running it)."""
    dialect = db.engine.dialect.name
    if dialect not in _store_statements:
        insert = _insert_unless_stored(StripeEvent.__table__, dialect)
        if dialect == "postgresql":
            # One round trip: NOTIFY the LISTENing workers only if a row was
            # inserted; PostgreSQL delivers it when (and only if) that commits.
            inserted = insert.cte("inserted")
            notify = func.pg_notify(NOTIFY_CHANNEL, "")
            insert = select(inserted.c.id, notify).select_from(inserted)
        _store_statements[dialect] = insert  # SQLite: one polling worker, nobody LISTENs
    return _store_statements[dialect]


def _insert_unless_stored(table, dialect: str):
    """INSERT … SELECT the row WHERE NOT EXISTS one with its id, ON CONFLICT DO NOTHING,
    RETURNING the id.

    The NOT EXISTS is a plain read, so a redelivery of an event a worker is applying
    right now is answered at once: ON CONFLICT alone waits for the transaction that
    changed the row it conflicts with (to learn whether that row stays), and so
    would hold Stripe's delivery until the worker, a lower-priority process
    mid-batch, commits. ON CONFLICT still settles two deliveries of a new event at once.
    """
    values = [_stored_value(table.c[name], dialect) for name in STORED_COLUMNS]
    not_stored = ~exists().where(table.c.id == bindparam("id", type_=table.c.id.type))
    return (
        dialect_insert(table)
        .from_select(STORED_COLUMNS, select(*values).where(not_stored))
        .on_conflict_do_nothing(index_elements=["id"])
        .returning(table.c.id)
    )


def _stored_value(column, dialect: str):
    """The bound parameter `column` is stored from; the payload comes as JSON text."""
    if column.name != "payload":
        return bindparam(column.name, type_=column.type)
    text = bindparam("payload", type_=Text)
    # PostgreSQL wants the text cast to the json column's type; SQLite stores the
    # text as it is (a CAST to JSON there would mean NUMERIC).
    return cast(text, column.type) if dialect == "postgresql" else text


def _event_row(event: dict) -> dict:
    return {
        "id": event["id"],
        "type": event["type"],
        "object_id": _object_id(event),
        "payment_intent_id": _payment_intent_of(event),
        "created": datetime.fromtimestamp(int(event.get("created") or 0), UTC),
        "received_at": utcnow(),
    }


# --- applying (the worker, replay, reconcile) --------------------------------------


def apply_stored(stored: StripeEvent) -> str:
    """Run the handler for a stored, locked event and mark it done, without committing."""
    handler = handler_for(stored.type)
    outcome = (handler(stored.payload) or "processed") if handler else "ignored: no handler"
    _mark_done(stored, "processed" if handler is not None else "ignored", outcome)
    # The one place to react to an applied event, inside its transaction (so a
    # reaction is written exactly when the event is): notifications hook in here.
    _after_event(stored, outcome)
    return outcome


def _mark_done(stored: StripeEvent, status: str, outcome: str) -> None:
    stored.status, stored.outcome, stored.error = status, outcome[:255], None
    stored.attempts += 1
    stored.next_attempt_at, stored.processed_at = None, utcnow()
    update_now(stored)  # one UPDATE, not a flush


def _after_event(stored: StripeEvent, outcome: str) -> None:
    """What else happens when an event is applied, in its transaction: the emails it calls for."""
    notifications.after_event(stored.payload)


def lock_event(event_id: str, *, skip_locked: bool = False) -> StripeEvent | None:
    """The stored event under its row lock (None if absent, or locked and skip_locked)."""
    statement = (
        select(StripeEvent)
        .where(StripeEvent.id == event_id)
        .options(undefer(StripeEvent.payload))
        .execution_options(populate_existing=True)
    )
    statement = statement.with_for_update(skip_locked=skip_locked and _on_postgresql())
    return db.session.execute(statement).scalar_one_or_none()


def record_failure(event_id: str, error: BaseException) -> str | None:
    """After a rollback: count the attempt, keep the traceback, schedule the retry or give up.

    Returns the new status ("retrying" or "dead"), or None when the event was
    meanwhile applied by someone else (a done event is left as it is).
    """
    config = current_app.config
    summary = "".join(traceback.format_exception(error, limit=-8))[-ERROR_TEXT_LIMIT:]
    stored = lock_event(event_id)
    if stored is None or stored.status in DONE_STATUSES:
        db.session.rollback()
        return None
    stored.attempts += 1
    stored.error = summary
    stored.outcome = f"error: {error!r}"[:255]
    if stored.attempts >= config["WORKER_MAX_ATTEMPTS"]:
        stored.status, stored.next_attempt_at = "dead", None
    else:
        stored.status = "retrying"
        stored.next_attempt_at = utcnow() + retry_delay(stored.attempts, config)
    status, attempts = stored.status, stored.attempts
    db.session.commit()
    log.error(
        "webhook event_id=%s outcome=error status=%s attempts=%s error=%r",
        event_id,
        status,
        attempts,
        error,
    )
    return status


def retry_delay(attempts: int, config) -> timedelta:
    """How long after its n-th failed attempt an event is tried again: base, doubling."""
    return timedelta(seconds=config["WORKER_RETRY_BASE_SECONDS"] * 2 ** (attempts - 1))


def replay_event(event_id: str) -> str:
    """Apply a stored event again now, whatever its status (handlers are idempotent).

    The outcome ends with "(no change)" when the handler wrote nothing. Raises
    EventNotFound for an unknown id and HandlerFailed when the handler raises.
    """
    stored = lock_event(event_id)
    if stored is None:
        db.session.rollback()
        raise EventNotFound(event_id)
    try:
        with _counting_writes() as writes:
            outcome = apply_stored(stored)
    except Exception as error:
        db.session.rollback()
        record_failure(event_id, error)
        raise HandlerFailed(event_id, error) from error
    applied_line = _applied_line(stored, outcome)
    db.session.commit()
    log.info(applied_line)
    return outcome if writes["rows"] else f"{outcome} (no change)"


@contextmanager
def _counting_writes():
    """Count rows the session's connection inserts, updates or deletes, bar the event's own."""
    connection = db.session.connection()
    writes = {"rows": 0}

    def count(conn, cursor, statement, parameters, context, executemany):
        written = WRITE_STATEMENT.match(statement)
        if conn is connection and written and written.group(1) != "stripe_events":
            writes["rows"] += max(cursor.rowcount, 0)

    sa_event.listen(connection, "after_cursor_execute", count)
    try:
        yield writes
        db.session.flush()  # the handler's pending ORM writes count too
    finally:
        sa_event.remove(connection, "after_cursor_execute", count)


def _applied_line(stored: StripeEvent, outcome: str) -> str:
    return (
        f"webhook event_id={stored.id} type={stored.type} object_id={stored.object_id}"
        f" outcome={_logfmt(outcome)} status={stored.status}"
    )


@dataclass(frozen=True)
class Applied:
    event_id: str
    event_type: str
    outcome: str
    ok: bool  # False: the handler raised; the event is retrying or dead


def apply_and_commit(stored: StripeEvent) -> Applied:
    """Apply a claimed (locked) event and commit; on an error roll back and record the attempt."""
    event_id, event_type = stored.id, stored.type
    started = time.perf_counter()
    try:
        done = _apply_in_transaction(stored)
        db.session.commit()
    except Exception as error:
        db.session.rollback()
        status = record_failure(event_id, error)
        metrics.observe_webhook(event_type, "failed", started)
        return Applied(
            event_id, event_type, f"error: {error!r} ({status or 'done meanwhile'})", False
        )
    return done.committed()


def apply_all_and_commit(
    claimed: list[StripeEvent], on_claim: Callable[[str | None], None] | None = None
) -> list[Applied]:
    """Apply claimed (locked) events in order in one transaction, and commit once.

    The claim and the commit are most of what a backlog costs per event beyond its
    handler, so several events share them. If any of them fails, nothing of the
    batch is kept: it is rolled back and each event applied again on its own
    (handlers are idempotent), so only the failing one is recorded and retried.
    """
    if len(claimed) == 1:
        if on_claim:
            on_claim(claimed[0].id)
        return [apply_and_commit(claimed[0])]
    event_ids = [stored.id for stored in claimed]
    try:
        done = []
        for stored in claimed:
            if on_claim:
                on_claim(stored.id)
            done.append(_apply_in_transaction(stored))
        db.session.commit()
    except Exception as error:
        db.session.rollback()
        log.warning(
            "worker: a batch of %s events rolled back (%r); applying each on its own",
            len(event_ids),
            error,
        )
        return [applied for event_id in event_ids if (applied := apply_now(event_id))]
    return [each.committed() for each in done]


@dataclass(frozen=True)
class _Done:
    """An event applied in the open transaction: what to report once it commits."""

    event_id: str
    event_type: str
    created: datetime
    outcome: str
    started: float
    applied_line: str

    def committed(self) -> Applied:
        metrics.observe_webhook(self.event_type, self.outcome, self.started, created=self.created)
        log.info(self.applied_line)
        return Applied(self.event_id, self.event_type, self.outcome, True)


def _apply_in_transaction(stored: StripeEvent) -> _Done:
    started = time.perf_counter()
    outcome = apply_stored(stored)
    # Read before the commit expires the row, so reporting it asks nothing more.
    return _Done(
        stored.id, stored.type, stored.created, outcome, started, _applied_line(stored, outcome)
    )


def apply_now(event_id: str) -> Applied | None:
    """Apply one stored event now unless it is done; None when a worker holds it right now."""
    stored = lock_event(event_id, skip_locked=True)
    if stored is None:
        db.session.rollback()
        return None
    if stored.status in DONE_STATUSES:
        db.session.rollback()
        return Applied(event_id, stored.type, "duplicate", True)
    return apply_and_commit(stored)


@dataclass(frozen=True)
class ReconcileResult:
    event_id: str
    event_type: str
    action: str  # "skipped", "applied", "failed"
    outcome: str


def reconcile(created_since: int) -> list[ReconcileResult]:
    """Store and apply now every event Stripe has since `created_since` that is not done here.

    Missing events are stored as a delivery would store them; missing, queued,
    retrying and dead ones are then applied at once through the worker's own
    step; processed and ignored ones are skipped. Raises GatewayError when
    Stripe cannot list its events.
    """
    results = []
    for event in current_gateway().list_events(created_since=created_since):
        results.append(_reconcile_one(event))
    return results


def _reconcile_one(event: dict) -> ReconcileResult:
    status = db.session.scalar(select(StripeEvent.status).where(StripeEvent.id == event["id"]))
    db.session.rollback()
    if status in DONE_STATUSES:
        return ReconcileResult(event["id"], event["type"], "skipped", f"already {status}")
    receive_event(event)
    applied = apply_now(event["id"])
    if applied is None:
        return ReconcileResult(event["id"], event["type"], "skipped", "a worker is applying it")
    if applied.outcome == "duplicate":
        return ReconcileResult(event["id"], event["type"], "skipped", "already done")
    action = "applied" if applied.ok else "failed"
    return ReconcileResult(event["id"], event["type"], action, applied.outcome)


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
