"""GET /healthz: is the database reachable, and is the rate-limit storage?"""

from flask import Blueprint, jsonify
from sqlalchemy import text

from billing_site.extensions import db, limiter

bp = Blueprint("health", __name__)


@bp.get("/healthz")
@limiter.exempt
def healthz():
    database = database_status()
    storage = rate_limit_storage_status()
    if database != "ok":
        overall, status_code = "error", 503
    elif storage != "ok":
        # The site still serves and still limits (per process), so it stays in
        # the load balancer, but says it is running on the fallback.
        overall, status_code = "degraded", 200
    else:
        overall, status_code = "ok", 200
    body = {"status": overall, "database": database, "rate_limit_storage": storage}
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
