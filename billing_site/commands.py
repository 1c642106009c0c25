"""CLI commands that belong to no single blueprint."""

import click
from flask import Flask

from billing_site import credits


def register_commands(app: Flask) -> None:
    app.cli.add_command(expire_credits_command)


@click.command("expire-credits")
def expire_credits_command():
    """Expire every lot whose expiry has passed, writing one ledger entry each."""
    expired = credits.expire_due_lots()
    click.echo(f"Expired {expired} lot(s).")
