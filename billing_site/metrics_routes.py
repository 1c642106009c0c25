"""GET /metrics: Prometheus's scrape, summed over every gunicorn worker.

Open outside production. In production it answers only a request carrying
`Authorization: Bearer <METRICS_TOKEN>` or coming from METRICS_ALLOWED_NETWORKS
(comma-separated CIDRs); with neither set it is closed.
"""

import hmac
import ipaddress
import os

from flask import Blueprint, Response, abort, current_app, request
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from billing_site.extensions import limiter
from billing_site.metrics import StateCollector

bp = Blueprint("metrics", __name__)


@bp.get("/metrics")
@limiter.exempt
def scrape():
    if not scrape_allowed():
        abort(403)
    state = CollectorRegistry(auto_describe=True)
    state.register(StateCollector(current_app))
    body = generate_latest(_process_registry()) + generate_latest(state)
    return Response(body, mimetype=CONTENT_TYPE_LATEST)


def _process_registry():
    """Every worker's samples under gunicorn (multiprocess mode), else this process's."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    return registry


def scrape_allowed() -> bool:
    config = current_app.config
    if config["APP_ENV"] != "production":
        return True
    token = config.get("METRICS_TOKEN") or ""
    sent = request.headers.get("Authorization", "")
    if token and hmac.compare_digest(sent.encode(), f"Bearer {token}".encode()):
        return True
    return _from_allowed_network(config.get("METRICS_ALLOWED_NETWORKS") or "")


def _from_allowed_network(networks: str) -> bool:
    try:
        address = ipaddress.ip_address(request.remote_addr or "")
    except ValueError:
        return False
    for network in filter(None, (item.strip() for item in networks.split(","))):
        try:
            if address in ipaddress.ip_network(network, strict=False):
                return True
        except ValueError:
            continue  # a malformed entry allows nothing
    return False
