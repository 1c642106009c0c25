"""What this installation keeps about its contract with Stripe: its id and version warnings.

The installation id prefixes every idempotency key (stripe_gateway._call), so
two databases sharing one Stripe account never replay each other's answers. It
is INSTALLATION_ID when configured, else generated once and kept in site_settings.
An event of another API version than the pinned one is noted here, once per
version, for the admin overview.
"""

import json
import logging
import secrets
from functools import lru_cache

from flask import current_app
from sqlalchemy import select

from billing_site import stripe_gateway
from billing_site.extensions import db, dialect_insert
from billing_site.models import SiteSetting, utcnow

log = logging.getLogger(__name__)
INSTALLATION_ID = "installation_id"
API_VERSION_WARNING = "stripe_api_version_warning"


def installation_id() -> str:
    """This installation's id: configured, or generated once and stored."""
    configured = current_app.config.get("INSTALLATION_ID", "")
    return configured or _stored_installation_id(str(db.engine.url))


@lru_cache(maxsize=8)
def _stored_installation_id(_database: str) -> str:
    # Its own transaction: the caller's may be rolled back after a Stripe error.
    with db.engine.begin() as connection:
        insert = dialect_insert(SiteSetting.__table__).values(
            name=INSTALLATION_ID, value="pf" + secrets.token_hex(6), updated_at=utcnow()
        )
        connection.execute(insert.on_conflict_do_nothing(index_elements=["name"]))
        return connection.scalar(
            select(SiteSetting.value).where(SiteSetting.name == INSTALLATION_ID)
        )


_noted_versions: set[str] = set()


def note_api_version(version: str, event: dict) -> None:
    """Keep the latest other-version event for the admin overview (once per version)."""
    if version in _noted_versions:
        return
    value = json.dumps({"version": version[:40], "event": event["id"], "at": utcnow().isoformat()})
    try:
        with db.engine.begin() as connection:
            insert = dialect_insert(SiteSetting.__table__).values(
                name=API_VERSION_WARNING, value=value, updated_at=utcnow()
            )
            connection.execute(
                insert.on_conflict_do_update(
                    index_elements=["name"], set_={"value": value, "updated_at": utcnow()}
                )
            )
        _noted_versions.add(version)
    except Exception:  # a note must never cost the event its delivery
        log.exception("could not record the API version warning")


def api_version_warning() -> str | None:
    """The sentence the admin overview shows, if events of another version arrived."""
    value = db.session.scalar(
        select(SiteSetting.value).where(SiteSetting.name == API_VERSION_WARNING)
    )
    if value is None:
        return None
    version = json.loads(value)["version"]
    if version == stripe_gateway.STRIPE_API_VERSION:
        return None
    return (
        f"The webhook endpoint sends {version}; set it to "
        f"{stripe_gateway.STRIPE_API_VERSION} in Stripe's dashboard."
    )


def install(app) -> None:
    stripe_gateway.api_version_listener = note_api_version
