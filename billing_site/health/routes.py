"""GET /healthz: is the database reachable, is the rate-limit storage, is a worker alive?"""

from datetime import timedelta

from flask import Blueprint, current_app, jsonify
from sqlalchemy import text

from billing_site.extensions import db, limiter
from billing_site.models import utcnow
from billing_site.worker import heartbeat

bp = Blueprint("health", __name__)


@bp.get("/healthz")
@limiter.exempt
def healthz():
    database = database_status()
    storage = rate_limit_storage_status()
    worker = worker_status() if database == "ok" else "unknown: database unreachable"
    if database != "ok":
        overall, status_code = "error", 503
    elif storage != "ok" or worker != "ok":
        # The site still serves and still limits (per process), and stored events
        # wait safely for a worker, so it stays in the load balancer, but says so.
        overall, status_code = "degraded", 200
    else:
        overall, status_code = "ok", 200
    body = {
        "status": overall,
        "database": database,
        "rate_limit_storage": storage,
        "worker": worker,
    }
    return jsonify(body), status_code


def database_status() -> str:
    try:
        db.session.execute(text("SELECT 1"))
        return "ok"
    except Exception as error:  # any driver error means "not reachable"
        db.session.rollback()
        return f"unreachable: {type(error).__name__}"


def rate_limit_storage_status() -> str:
    try:
        reachable = limiter.storage.check()
    except Exception:
        reachable = False
    return "ok" if reachable else "unreachable: limits held in memory per process"


def worker_status() -> str:
    """ "ok" when some worker beat within WORKER_STALE_AFTER_SECONDS, else how long ago."""
    try:
        seen = heartbeat.last_seen()
    except Exception as error:
        db.session.rollback()
        return f"unknown: {type(error).__name__}"
    if seen is None:
        return "not seen: no worker has run (start `flask --app wsgi worker`)"
    age = utcnow() - seen
    if age <= timedelta(seconds=current_app.config["WORKER_STALE_AFTER_SECONDS"]):
        return "ok"
    return f"not seen for {int(age.total_seconds())}s"
