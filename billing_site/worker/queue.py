"""Claiming and applying stored events: the table `stripe_events` is the queue.

A worker claims the oldest due event with `SELECT … FOR UPDATE SKIP LOCKED`
(PostgreSQL), so any number of workers on any number of machines each take a
different row and none waits on another; the row lock is held while the
handler runs and is released by the commit that marks the event done. A
worker that dies mid-handler leaves nothing written and the row unlocked, so
the next claim takes it again. SQLite (development) has no row locks: one
worker there.
"""

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import bindparam, select, text
from sqlalchemy.orm import undefer

from billing_site.extensions import db
from billing_site.models import StripeEvent, utcnow
from billing_site.models.billing import DUE_PREDICATE
from billing_site.webhook import services
from billing_site.webhook.services import Applied

OLDEST_DUE = (
    select(StripeEvent)
    # Spelled as the partial index's own predicate, so PostgreSQL uses that index.
    .where(text(DUE_PREDICATE), StripeEvent.next_attempt_at <= bindparam("now"))
    .order_by(StripeEvent.next_attempt_at, StripeEvent.created, StripeEvent.id)
    .limit(1)
    .options(undefer(StripeEvent.payload))
    .execution_options(populate_existing=True)
)
CLAIM_OLDEST_DUE = OLDEST_DUE.with_for_update(skip_locked=True)  # built once: the worker's loop


def claim_due(now: datetime | None = None, exclude: set[str] = frozenset()) -> StripeEvent | None:
    """Lock and return the oldest event due now (queued, or retrying and its time has come)."""
    on_postgresql = db.session.get_bind().dialect.name == "postgresql"
    statement = CLAIM_OLDEST_DUE if on_postgresql else OLDEST_DUE
    if exclude:
        statement = statement.where(StripeEvent.id.not_in(exclude))
    return db.session.scalars(statement, {"now": now or utcnow()}).first()


def apply_next(
    now: datetime | None = None,
    exclude: set[str] = frozenset(),
    on_claim: Callable[[str | None], None] | None = None,
) -> Applied | None:
    """Claim one due event, apply it and commit; None when nothing is due."""
    stored = claim_due(now, exclude)
    if stored is None:
        db.session.rollback()  # end the read, so the next claim sees new rows
        return None
    if on_claim:
        on_claim(stored.id)
    # Lets the local stand-in hold back the events a handler's Stripe calls cause
    # until this transaction (and its row locks) ends.
    db.session.info["applying_event"] = True
    try:
        return services.apply_and_commit(stored)
    finally:
        db.session.info.pop("applying_event", None)
        if on_claim:
            on_claim(None)


def drain(now: datetime | None = None) -> list[Applied]:
    """Apply every event due now, in the worker's order; each event is tried once per drain."""
    results: list[Applied] = []
    tried: set[str] = set()
    while (applied := apply_next(now, tried)) is not None:
        tried.add(applied.event_id)
        results.append(applied)
    return results


def drain_in_app(app, now: datetime | None = None) -> list[Applied]:
    """drain() in a fresh app context of `app` (its own session), e.g. from a delivery thread."""
    with app.app_context():
        try:
            return drain(now)
        finally:
            db.session.remove()


class InjectedFailure(RuntimeError):
    """A failure asked for on purpose (the local stand-in's "fail the next delivery")."""


def fail_once(event_id: str, reason: str) -> str | None:
    """Record one failed attempt for a stored, undone event, as if its handler had raised.

    The event is then "retrying" (the worker tries it again after the backoff,
    or an admin replays it): the retry and replay paths can be seen offline.
    """
    from billing_site.webhook.services import record_failure

    try:
        raise InjectedFailure(reason)
    except InjectedFailure as error:
        return record_failure(event_id, error)
