"""Claiming and applying stored events: the table `stripe_events` is the queue.

A worker claims the oldest due events with `SELECT … FOR UPDATE SKIP LOCKED`
(PostgreSQL), so any number of workers on any number of machines each take
different rows and none waits on another; the row locks are held while the
handlers run and are released by the commit that marks the events done. A
worker that dies mid-handler leaves nothing written and the rows unlocked, so
the next claim takes them again. SQLite (development) has no row locks: one
worker there.

Under a backlog the worker claims up to WORKER_BATCH_SIZE events at once and
applies them in one transaction (services.apply_all_and_commit): one claim and
one commit for several events. When events arrive one by one, each is claimed
as it comes, alone.
"""

from collections.abc import Callable
from datetime import datetime

from flask import current_app
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
    .limit(bindparam("limit"))
    .options(undefer(StripeEvent.payload))
    .execution_options(populate_existing=True)
)
CLAIM_OLDEST_DUE = OLDEST_DUE.with_for_update(skip_locked=True)  # built once: the worker's loop


def batch_size() -> int:
    """How many due events one claim takes under a backlog (WORKER_BATCH_SIZE, at least 1)."""
    return max(current_app.config["WORKER_BATCH_SIZE"], 1)


def claim_due(
    now: datetime | None = None, exclude: set[str] = frozenset(), limit: int = 1
) -> list[StripeEvent]:
    """Lock and return the oldest `limit` events due now (queued, or retrying and their
    time has come), oldest first."""
    on_postgresql = db.session.get_bind().dialect.name == "postgresql"
    statement = CLAIM_OLDEST_DUE if on_postgresql else OLDEST_DUE
    if exclude:
        statement = statement.where(StripeEvent.id.not_in(exclude))
    return list(db.session.scalars(statement, {"now": now or utcnow(), "limit": limit}))


def apply_next(
    now: datetime | None = None,
    exclude: set[str] = frozenset(),
    on_claim: Callable[[str | None], None] | None = None,
    limit: int = 1,
) -> list[Applied]:
    """Claim up to `limit` due events, apply them and commit; [] when nothing is due."""
    claimed = claim_due(now, exclude, limit)
    if not claimed:
        db.session.rollback()  # end the read, so the next claim sees new rows
        return []
    # Lets the local stand-in hold back the events a handler's Stripe calls cause
    # until this transaction (and its row locks) ends.
    db.session.info["applying_event"] = True
    try:
        return services.apply_all_and_commit(claimed, on_claim)
    finally:
        db.session.info.pop("applying_event", None)
        if on_claim:
            on_claim(None)


def drain(now: datetime | None = None) -> list[Applied]:
    """Apply every event due now, in the worker's order and batches; each event is
    tried once per drain."""
    limit = batch_size()
    results: list[Applied] = []
    tried: set[str] = set()
    while applied := apply_next(now, tried, limit=limit):
        tried.update(result.event_id for result in applied)
        results += applied
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
