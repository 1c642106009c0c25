"""Every Prometheus metric the site exports, declared once; the rest imports them from here.

Under gunicorn each worker is its own process, so prometheus_client runs in its
multiprocess mode: gunicorn.conf.py sets PROMETHEUS_MULTIPROC_DIR before any
worker imports this, each worker writes its samples to files there, and
/metrics (billing_site.metrics_routes) adds them up. Without that variable
(`flask run`, the tests) the samples live in this process.

Gauges that describe the database (failed events, payments needing review, the
webhook backlog) are not kept in processes at all: StateCollector reads them at
scrape time, so every worker reports the same truth.
"""

import logging
import time
from datetime import UTC, datetime

from flask import Flask, g, request
from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily

CREDIT_CHECKS = Counter(
    "billing_credit_checks_total",
    "Balance checks before a paid generation, by whether a purchase was required.",
    ["purchase_required"],
)
CHARGES = Counter(
    "billing_charges_total",
    "Credit charges for generations, by whether the credits were taken and the model.",
    ["success", "model"],
)
GENERATIONS = Counter(
    "billing_generations_total", "Generations finished, by final status.", ["status"]
)
CREDITS_GRANTED = Counter(
    "billing_credits_granted_total", "Credits granted, by lot source.", ["source"]
)
CREDITS_CLAWED_BACK = Counter(
    "billing_credits_clawed_back_total",
    "Credits taken back, by reason (refund, dispute, admin).",
    ["reason"],
)
WEBHOOK_EVENTS = Counter(
    "billing_webhook_events_total",
    "Stripe events: deliveries stored (queued) or repeated (duplicate), and applications "
    "by the worker (processed, ignored, failed).",
    ["type", "outcome"],
)
WEBHOOK_PROCESSING = Histogram(
    "billing_webhook_processing_seconds",
    "Time to record and apply one Stripe event.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
WEBHOOK_LAG = Histogram(
    "billing_webhook_lag_seconds",
    "From an event's `created` at Stripe to the site having applied it.",
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 21600, 86400),
)
CHECKOUTS_STARTED = Counter(
    "billing_checkouts_started_total", "Stripe Checkout Sessions opened, by kind.", ["kind"]
)
PAYMENTS = Counter(
    "billing_payments_total",
    "Payments, once each, by kind (pack, subscription, renewal, proration) and status.",
    ["kind", "status"],
)
REFUNDS = Counter("billing_refunds_total", "Refunds settled, by status.", ["status"])
DISPUTES = Counter("billing_disputes_total", "Dispute status changes, by new status.", ["status"])
RATE_LIMIT_HITS = Counter(
    "billing_rate_limit_hits_total",
    "Requests refused by a rate limit, by scope (anonymous_cap, login, checkout, fair_use).",
    ["scope"],
)
EMAILS_SENT = Counter(
    "billing_emails_total", "Attempts to send an email, by kind and outcome.", ["kind", "outcome"]
)
HTTP_REQUESTS = Counter(
    "billing_http_requests_total",
    "HTTP requests answered, by method, endpoint and status.",
    ["method", "endpoint", "status"],
)
HTTP_LATENCY = Histogram(
    "billing_http_request_duration_seconds",
    "Time to answer an HTTP request, by method and endpoint.",
    ["method", "endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

# Flask-Limiter's limit scopes, as the metric names them.
RATE_LIMIT_SCOPES = (
    ("anonymous-generations", "anonymous_cap"),
    ("unlimited-tier-generations", "fair_use"),
    ("login", "login"),
    ("checkout", "checkout"),
)


def count_credit_check(model: str, *, purchase_required: bool) -> None:
    """A customer's generation checked the balance: covered (charged) or a 402."""
    CREDIT_CHECKS.labels(purchase_required=str(purchase_required).lower()).inc()
    CHARGES.labels(success=str(not purchase_required).lower(), model=model).inc()


def count_rate_limit_hit(request_limit) -> None:
    """Flask-Limiter's on_breach callback (RATELIMIT_ON_BREACH_CALLBACK) for every limit."""
    key = str(getattr(request_limit, "key", ""))
    scope = next((name for part, name in RATE_LIMIT_SCOPES if part in key), "other")
    RATE_LIMIT_HITS.labels(scope=scope).inc()


def init_app(app: Flask) -> None:
    """Count and time every request by endpoint (before Flask-Limiter reads its callback)."""
    app.config.setdefault("RATELIMIT_ON_BREACH_CALLBACK", count_rate_limit_hit)

    @app.before_request
    def start_timer():
        g.metrics_started = time.perf_counter()

    @app.after_request
    def count_request(response):
        started = g.pop("metrics_started", None)
        observe_request(request.method, request.endpoint or "none", response.status_code, started)
        return response


def observe_request(method: str, endpoint: str, status: int, started: float | None) -> None:
    HTTP_REQUESTS.labels(method, endpoint, str(status)).inc()
    if started is not None:
        HTTP_LATENCY.labels(method, endpoint).observe(time.perf_counter() - started)


class StateCollector:
    """Gauges read from the database and the limiter at scrape time."""

    def __init__(self, app: Flask):
        self.app = app

    def collect(self):
        from billing_site import observability
        from billing_site.extensions import db

        try:
            state = observability.current_state()
        except Exception:  # the database is down: the process metrics still go out
            db.session.rollback()
            logging.getLogger(__name__).warning("metrics: database state unreadable", exc_info=True)
            yield _gauge("billing_state_readable", "1 when the database state could be read.", 0)
            return
        yield _gauge("billing_state_readable", "1 when the database state could be read.", 1)
        yield _gauge(
            "billing_webhook_failed_events",
            "Stripe events whose handler failed and that await a retry or replay.",
            state.failed_events,
        )
        yield _gauge(
            "billing_webhook_backlog_age_seconds",
            "Age of the oldest stored event not yet applied (0 when none waits).",
            state.backlog_age_seconds,
        )
        yield _gauge(
            "billing_webhook_last_received_timestamp_seconds",
            "When the newest Stripe event was received (Unix time; 0 if never).",
            state.last_received_timestamp,
        )
        yield _gauge(
            "billing_payments_needs_review",
            "Payments whose amount did not match and that wait for an admin.",
            state.payments_needing_review,
        )
        yield _gauge(
            "billing_rate_limit_storage_degraded",
            "1 when the rate-limit storage is unreachable and limits are held per process.",
            0 if state.rate_limit_storage == "ok" else 1,
        )
        yield _gauge(
            "billing_emails_queued",
            "Emails waiting for their first or next attempt.",
            state.emails_queued,
        )
        yield _gauge(
            "billing_emails_failed", "Emails given up on after every retry.", state.emails_failed
        )


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation)
    family.add_metric([], value)
    return family


def observe_webhook(
    event_type: str, outcome: str, started: float, *, created: datetime | None = None
) -> None:
    """Count one application of an event by outcome and time it; an applied event's lag too.

    (The webhook counts each delivery as "queued" or "duplicate" when it stores it.)
    """
    label = (
        "failed"
        if outcome == "failed"
        else "ignored"
        if outcome.startswith("ignored")
        else "processed"
    )
    WEBHOOK_PROCESSING.observe(time.perf_counter() - started)
    WEBHOOK_EVENTS.labels(type=str(event_type or "unknown")[:100], outcome=label).inc()
    if created is not None and label != "failed":
        WEBHOOK_LAG.observe(max(0.0, (datetime.now(UTC) - created).total_seconds()))
