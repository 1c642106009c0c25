"""CLI commands that belong to no single blueprint.

The worker runs expire-credits, sweep-generations and reconcile on a schedule
(billing_site/worker/jobs.py); these commands stay for manual runs.
"""

import re
import time
from datetime import timedelta

import click
from flask import Flask, current_app
from flask.cli import with_appcontext

from billing_site import credits
from billing_site.stripe_gateway import GatewayError
from billing_site.worker.cli import worker_command

WINDOW_UNITS = {"m": 60, "h": 3600, "d": 86400}


def register_commands(app: Flask) -> None:
    app.cli.add_command(expire_credits_command)
    app.cli.add_command(reconcile_command)
    app.cli.add_command(sweep_generations_command)
    app.cli.add_command(worker_command)


@click.command("expire-credits")
def expire_credits_command():
    """Expire every lot whose expiry has passed, writing one ledger entry each."""
    expired = credits.expire_due_lots()
    click.echo(f"Expired {expired} lot(s).")


def parse_window(text: str) -> int:
    """Seconds in a window written like 30m, 72h or 2d."""
    match = re.fullmatch(r"\s*(\d+)\s*([mhd])\s*", text or "")
    if not match or int(match.group(1)) == 0:
        raise ValueError(f"{text!r} is not a window like 30m, 72h or 2d")
    return int(match.group(1)) * WINDOW_UNITS[match.group(2)]


def _window(ctx, param, value: str) -> int:
    try:
        return parse_window(value)
    except ValueError as error:
        raise click.BadParameter(str(error)) from error


@click.command("reconcile")
@click.option(
    "--since",
    "window",
    default="72h",
    show_default=True,
    callback=_window,
    help="How far back to look: 30m, 72h, 2d (Stripe keeps events 30 days).",
)
def reconcile_command(window: int):
    """Apply the Stripe events of the window that the site missed or failed to process."""
    from billing_site.webhook import services

    try:
        results = services.reconcile(int(time.time()) - window)
    except GatewayError as error:
        raise click.ClickException(f"Could not list Stripe's events: {error.message}") from error
    for result in results:
        click.echo(f"{result.action:8} {result.event_id} {result.event_type}: {result.outcome}")
    counts = {
        action: sum(r.action == action for r in results)
        for action in ("applied", "skipped", "failed")
    }
    click.echo(
        f"{len(results)} event(s) from Stripe: {counts['applied']} applied, "
        f"{counts['skipped']} already done, {counts['failed']} failed."
    )
    if counts["failed"]:
        # A non-zero exit lets a scheduler alert someone.
        raise SystemExit(1)


@click.command("sweep-generations")
@with_appcontext  # `flask` pushes one anyway; this also lets a test or a thread invoke it bare
def sweep_generations_command():
    """Fail generations left pending by a crashed worker and give their credits back, once."""
    from billing_site.generate.services import sweep_stale_generations

    stale_after = current_app.config["GENERATION_STALE_AFTER_SECONDS"]
    result = sweep_stale_generations(timedelta(seconds=stale_after))
    click.echo(
        f"Swept generations pending over {stale_after}s: {result.failed} failed and refunded "
        f"({result.credits_returned} credit(s) returned), {result.finished_meanwhile} finished "
        f"meanwhile, {result.errors} error(s)."
    )
    if result.errors:
        # A non-zero exit lets a scheduler alert someone; the rows stay pending for the next run.
        raise SystemExit(1)
