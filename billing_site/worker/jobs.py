"""Scheduled jobs that the worker runs, once per time slot however many workers run.

A job runs at most once in each slot of its period (slot = the period's start,
in epoch seconds): the worker that inserts the `job_runs` row for (job, slot)
runs it, the others' `INSERT … ON CONFLICT DO NOTHING` find the row and skip.
This works on SQLite as on PostgreSQL, and leaves a history an operator can
read. A worker that dies mid-job loses that slot's run; the next slot runs it.

Add a job with `register_job("name", every_seconds, function)` (or the
`@job(...)` decorator) from anywhere imported at start-up; the function takes
no argument, runs inside an app context and returns a one-line summary.
"""

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from flask import current_app

from billing_site.extensions import db, dialect_insert
from billing_site.models import JobRun, utcnow

log = logging.getLogger("billing_site.worker")

OUTCOME_LIMIT = 2000


@dataclass(frozen=True)
class Job:
    name: str
    every_seconds: int
    run: Callable[[], str]

    def slot(self, now: float) -> int:
        return int(now // self.every_seconds) * self.every_seconds


JOBS: dict[str, Job] = {}


def register_job(name: str, every_seconds: int, run: Callable[[], str]) -> Job:
    """Add a scheduled job to every worker; a name can be registered once."""
    if name in JOBS:
        raise RuntimeError(f"job {name!r} is already registered")
    JOBS[name] = Job(name, every_seconds, run)
    return JOBS[name]


def job(name: str, every_seconds: int):
    """Decorator form of register_job."""

    def register(function: Callable[[], str]) -> Callable[[], str]:
        register_job(name, every_seconds, function)
        return function

    return register


def run_due_jobs(worker_id: str, already_tried: dict[str, int], now: float | None = None) -> list:
    """Run each job whose current slot no worker has claimed yet; returns the jobs this one ran.

    `already_tried` (job name → slot) is the caller's memory, so a slot is
    claimed at most once per worker without asking the database every loop.
    """
    now = time.time() if now is None else now
    ran = []
    for registered in list(JOBS.values()):
        slot = registered.slot(now)
        if already_tried.get(registered.name) == slot:
            continue
        already_tried[registered.name] = slot
        if _claim_slot(registered.name, slot, worker_id):
            _run(registered, slot)
            ran.append(registered.name)
    return ran


def _claim_slot(name: str, slot: int, worker_id: str) -> bool:
    statement = (
        dialect_insert(JobRun)
        .values(job=name, slot=slot, worker_id=worker_id, started_at=utcnow())
        .on_conflict_do_nothing(index_elements=["job", "slot"])
        .returning(JobRun.job)
    )
    claimed = db.session.execute(statement).first() is not None
    db.session.commit()
    return claimed


def _run(registered: Job, slot: int) -> None:
    started = time.monotonic()
    try:
        outcome = registered.run() or "done"
    except Exception as error:  # one job's failure must not stop the worker or the others
        db.session.rollback()
        log.exception("job %s slot=%s raised", registered.name, slot)
        outcome = f"error: {error!r}"
    run = db.session.get(JobRun, (registered.name, slot))
    run.finished_at = utcnow()
    run.outcome = outcome[:OUTCOME_LIMIT]
    db.session.commit()
    log.info(
        "job %s slot=%s seconds=%.2f outcome=%r",
        registered.name,
        slot,
        time.monotonic() - started,
        outcome,
    )


# --- the built-in jobs (their CLI commands stay for manual runs) -------------------------


@job("expire-credits", every_seconds=3600)
def expire_credits() -> str:
    from billing_site import credits

    return f"expired {credits.expire_due_lots()} lot(s)"


@job("sweep-generations", every_seconds=60)
def sweep_generations() -> str:
    from billing_site.generate.services import sweep_stale_generations

    stale_after = current_app.config["GENERATION_STALE_AFTER_SECONDS"]
    result = sweep_stale_generations(timedelta(seconds=stale_after))
    return (
        f"{result.failed} failed and refunded ({result.credits_returned} credit(s)), "
        f"{result.finished_meanwhile} finished meanwhile, {result.errors} error(s)"
    )


RECONCILE_WINDOW_SECONDS = 72 * 3600


@job("reconcile", every_seconds=6 * 3600)
def reconcile() -> str:
    from billing_site.webhook import services

    results = services.reconcile(int(time.time()) - RECONCILE_WINDOW_SECONDS)
    counts = {a: sum(r.action == a for r in results) for a in ("applied", "skipped", "failed")}
    return (
        f"{len(results)} event(s) from Stripe: {counts['applied']} applied, "
        f"{counts['skipped']} already done, {counts['failed']} failed"
    )


@job("send-emails", every_seconds=60)
def send_emails() -> str:
    from billing_site.notifications import send_due_emails

    counts = send_due_emails()
    return ", ".join(f"{n} {status}" for status, n in sorted(counts.items())) or "none due"


@job("notify-expiring-credits", every_seconds=86400)
def notify_expiring_credits() -> str:
    from billing_site.notifications.scans import notify_expiring_credits as notify

    return f"queued {notify()} expiring-credits email(s)"


@job("purge-idempotency-keys", every_seconds=3600)
def purge_idempotency_keys() -> str:
    from billing_site.api.idempotency import purge_expired

    return f"deleted {purge_expired()} expired idempotency key(s)"


JOB_HISTORY_DAYS = 30


@job("prune-job-history", every_seconds=86400)
def prune_job_history() -> str:
    """`sweep-generations` alone leaves 1,440 rows a day; a month is enough to read back."""
    from sqlalchemy import delete

    cutoff = utcnow() - timedelta(days=JOB_HISTORY_DAYS)
    result = db.session.execute(
        delete(JobRun).where(JobRun.finished_at.is_not(None), JobRun.finished_at < cutoff)
    )
    db.session.commit()
    return f"deleted {result.rowcount} job run(s) older than {JOB_HISTORY_DAYS} days"
