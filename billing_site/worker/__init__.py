"""The worker: applies the events the webhook stored, and runs the scheduled jobs.

`flask --app wsgi worker` (the Procfile's `worker:` line) runs `runner.Worker`.
Tests and the local Stripe stand-in call `drain()` in-process: the same claim
and apply step the worker process runs, so what they observe is what it does.
"""

from billing_site.worker.jobs import JOBS, Job, register_job, run_due_jobs
from billing_site.worker.queue import apply_next, claim_due, drain, drain_in_app, fail_once

__all__ = [
    "JOBS",
    "Job",
    "apply_next",
    "claim_due",
    "drain",
    "drain_in_app",
    "fail_once",
    "register_job",
    "run_due_jobs",
]
