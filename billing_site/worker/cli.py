"""`flask --app wsgi worker`: the Procfile's worker process."""

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
    Worker(current_app._get_current_object(), run_jobs=not no_jobs).run()
