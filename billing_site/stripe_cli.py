"""`flask stripe …`: keeping Stripe's catalog in step, and proving the books equal Stripe."""

import time

import click
from flask.cli import AppGroup

from billing_site.commands import parse_window
from billing_site.stripe_gateway import GatewayError

# An AppGroup: each command runs in an app context, invoked by `flask` or a test.
stripe_group = AppGroup("stripe", help="Commands that compare the site with its Stripe account.")


@stripe_group.command("sync-catalog")
@click.option(
    "--apply", "apply", is_flag=True, help="Write the changes (default: only print them)."
)
def sync_catalog_command(apply: bool):
    """Create or update the catalog's Products and Prices in Stripe (a dry run unless --apply)."""
    from billing_site import stripe_catalog

    try:
        changes = stripe_catalog.sync_catalog(apply=apply)
    except GatewayError as error:
        raise click.ClickException(f"Stripe refused: {error.message}") from error
    for change in changes:
        click.echo(change.describe())
    writes = [c for c in changes if c.action != "configured"]
    if not writes:
        click.echo("Stripe already holds the catalog; nothing to change.")
    elif apply:
        click.echo(f"Applied {len(writes)} change(s).")
    else:
        click.echo(f"{len(writes)} change(s) to make; run again with --apply to write them.")


@stripe_group.command("audit")
@click.option("--since", "since", default="30d", show_default=True, help="Window: 30m, 72h, 30d.")
def audit_command(since: str):
    """List Stripe's charges, refunds and disputes beside the books; exit 1 on any difference."""
    from billing_site import books_audit

    try:
        window = parse_window(since)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--since") from error
    try:
        report = books_audit.audit(int(time.time()) - window)
    except GatewayError as error:
        raise click.ClickException(f"Could not list Stripe's records: {error.message}") from error
    for line in report.lines():
        click.echo(line)
    if report.differences:
        # A non-zero exit lets a scheduler alert someone.
        raise SystemExit(1)
