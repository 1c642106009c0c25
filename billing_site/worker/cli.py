"""`flask --app wsgi worker`: the Procfile's worker process."""

import os

import click
from flask import current_app
from flask.cli import with_appcontext

from billing_site.worker import queue
from billing_site.worker.runner import Worker


@click.command("worker")
@click.option("--no-jobs", is_flag=True, help="Apply events only; run no scheduled jobs.")
@click.option("--drain", "drain_only", is_flag=True, help="Apply what is due now, then exit.")
@with_appcontext
def worker_command(no_jobs: bool, drain_only: bool):
    """Apply stored Stripe events and run the scheduled jobs until stopped (SIGTERM)."""
    if drain_only:
        results = queue.drain()
        failed = sum(not result.ok for result in results)
        click.echo(f"Applied {len(results) - failed} event(s); {failed} failed.")
        return
    _yield_the_cpu_to_the_web(current_app.config["WORKER_NICENESS"])
    Worker(current_app._get_current_object(), run_jobs=not no_jobs).run()


def _yield_the_cpu_to_the_web(niceness: int) -> None:
    """Run below the web process's priority where they share a machine.

    A webhook is acknowledged once stored and Stripe waits for that answer;
    applying it can wait a little. Under a burst, a nice worker leaves the
    CPU to the request path (faster 200s, fewer Stripe timeouts) and drains
    the inbox in the idle time. 0 keeps the worker at the web's priority.
    """
    if niceness > 0:
        os.nice(niceness)
