"""Prometheus metrics (issue 14): /metrics counts a generation, a 402 and a webhook event
across two gunicorn workers; it is closed in production without a token or network;
the alert rules load in promtool and name only metrics the site serves."""

import json
import os
import re
import shutil
import signal
import subprocess
import threading
from pathlib import Path

import pytest
import requests
from prometheus_client.mmap_dict import MmapedDict
from prometheus_client.parser import text_string_to_metric_families

from billing_site import credits
from billing_site.extensions import db as _db
from tests import gunicorn_server
from tests.conftest import TEST_PASSWORD, csrf_token_from, unavailable
from tests.factories import make_order, make_user
from tests.stripe_events import checkout_session, make_event, signature_for

ALERTS = Path(__file__).resolve().parent.parent / "docs" / "alerts.yml"
PRODUCTION = {
    "APP_ENV": "production",
    "DATABASE_URL": "postgresql://set-by-the-test",
    "STRIPE_SECRET_KEY": "sk_test_metrics",
    "STRIPE_WEBHOOK_SECRET": "whsec_metrics",
}


def samples(text: str) -> dict[tuple, float]:
    """{(name, sorted labels): value} of a scrape."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(scrape: dict, name: str, **labels) -> float:
    return scrape.get((name, tuple(sorted(labels.items()))), 0.0)


# --- in one process ---------------------------------------------------------------------


def test_metrics_are_open_in_development_and_name_every_metric_of_the_issue(client):
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    body = response.get_data(as_text=True)
    for name in (
        "billing_credit_checks_total",
        "billing_charges_total",
        "billing_generations_total",
        "billing_credits_granted_total",
        "billing_credits_clawed_back_total",
        "billing_webhook_events_total",
        "billing_webhook_processing_seconds",
        "billing_webhook_lag_seconds",
        "billing_webhook_failed_events",
        "billing_checkouts_started_total",
        "billing_payments_total",
        "billing_refunds_total",
        "billing_disputes_total",
        "billing_rate_limit_hits_total",
        "billing_rate_limit_storage_degraded",
        "billing_http_requests_total",
        "billing_http_request_duration_seconds",
    ):
        assert f"# TYPE {name.removesuffix('_total')}" in body, name


def test_rate_limit_hits_are_counted_by_scope(make_app):
    app = make_app(LOGIN_RATE_LIMIT="2 per minute")
    client = app.test_client()
    before = samples(client.get("/metrics").get_data(as_text=True))
    token = csrf_token_from(client.get("/auth/login").get_data(as_text=True))
    codes = [
        client.post(
            "/auth/login", data={"email": "a@example.com", "password": "x", "csrf_token": token}
        ).status_code
        for _ in range(4)
    ]
    after = samples(client.get("/metrics").get_data(as_text=True))

    assert codes.count(429) == 2
    # Two limits (per client and per account) refuse each of the two requests.
    hits = value(after, "billing_rate_limit_hits_total", scope="login") - value(
        before, "billing_rate_limit_hits_total", scope="login"
    )
    assert hits >= 2


def test_metrics_are_closed_in_production_without_the_token_or_an_allowed_network(make_app):
    closed = make_app(**PRODUCTION).test_client()
    token = make_app(**PRODUCTION, METRICS_TOKEN="s3cret-scrape-token").test_client()
    network = make_app(
        **PRODUCTION, METRICS_ALLOWED_NETWORKS="10.0.0.0/8, 127.0.0.0/8"
    ).test_client()
    other_network = make_app(**PRODUCTION, METRICS_ALLOWED_NETWORKS="10.0.0.0/8").test_client()

    assert closed.get("/metrics").status_code == 403
    assert token.get("/metrics").status_code == 403
    assert token.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 403
    bearer = {"Authorization": "Bearer s3cret-scrape-token"}
    assert token.get("/metrics", headers=bearer).status_code == 200
    assert network.get("/metrics").status_code == 200  # the test client is 127.0.0.1
    assert other_network.get("/metrics").status_code == 403


# --- under gunicorn ---------------------------------------------------------------------


def log_in(session: requests.Session, base: str, email: str) -> str:
    token = csrf_token_from(session.get(f"{base}/auth/login", timeout=30).text)
    response = session.post(
        f"{base}/auth/login",
        data={"email": email, "password": TEST_PASSWORD, "csrf_token": token},
        allow_redirects=False,
        timeout=30,
    )
    assert response.status_code in (302, 303), response.text[:500]
    return csrf_token_from(session.get(f"{base}/auth/login", timeout=30).text)


def requests_served_per_worker(directory: Path) -> dict[int, float]:
    """healthz requests counted in each worker's own sample file."""
    served = {}
    for path in directory.glob("counter_*.db"):
        pid = int(path.stem.split("_")[1])
        for key, count, *_ in MmapedDict.read_all_values_from_file(str(path)):
            _, name, labels, _ = json.loads(key)
            if name == "billing_http_requests_total" and labels.get("endpoint") == "health.healthz":
                served[pid] = served.get(pid, 0) + count
    return served


def scrape(base: str) -> dict:
    response = requests.get(f"{base}/metrics", timeout=30)
    assert response.status_code == 200
    return samples(response.text)


@pytest.mark.concurrency
def test_metrics_count_a_generation_a_402_and_a_webhook_event_across_two_gunicorn_workers(
    db, database_url, redis_server, tmp_path, monkeypatch
):
    metrics_dir = tmp_path / "prometheus"
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(metrics_dir))
    broke = make_user("broke@example.com")
    credits.claw_back(broke.id, 50, reference="admin:test", kind="adjust")  # balance -50
    _db.session.commit()
    order = make_order(make_user(), "pro")
    event = make_event("checkout.session.completed", checkout_session(order))

    # One thread per worker, so parallel requests spread over both processes
    # (with gthread's 8 threads one process may answer them all).
    one_thread = {"GUNICORN_CMD_ARGS": "--threads 1"}
    with gunicorn_server.serve(
        database_url, redis_server.url, tmp_path, workers=2, env=one_thread
    ) as site:
        # Enough parallel requests that both workers answer some.
        for _ in range(10):
            threads = [
                threading.Thread(
                    target=requests.get, args=(f"{site.url}/healthz",), kwargs={"timeout": 30}
                )
                for _ in range(8)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            if len([n for n in requests_served_per_worker(metrics_dir).values() if n]) >= 2:
                break
        served = requests_served_per_worker(metrics_dir)
        assert len([n for n in served.values() if n]) >= 2, served
        before = scrape(site.url)

        visitor = requests.Session()
        token = csrf_token_from(visitor.get(f"{site.url}/auth/login", timeout=30).text)
        made = visitor.post(
            f"{site.url}/api/v1/generations",
            json={"prompt": "a red bicycle", "model": "standard"},
            headers={"X-CSRFToken": token},
            timeout=30,
        )
        customer = requests.Session()
        token = log_in(customer, site.url, "broke@example.com")
        refused = customer.post(
            f"{site.url}/api/v1/generations",
            json={"prompt": "a red bicycle", "model": "standard"},
            headers={"X-CSRFToken": token},
            timeout=30,
        )
        payload = json.dumps(event)
        delivered = requests.post(
            f"{site.url}/stripe/webhook",
            data=payload,
            headers={
                "Stripe-Signature": signature_for(payload),
                "Content-Type": "application/json",
            },
            timeout=30,
        )
        after = [scrape(site.url) for _ in range(4)]  # whichever worker answers

        assert (made.status_code, refused.status_code, delivered.status_code) == (201, 402, 200)
        for scraped in after:

            def delta(name, scraped=scraped, **labels):
                return value(scraped, name, **labels) - value(before, name, **labels)

            assert delta("billing_generations_total", status="succeeded") == 1
            assert delta("billing_credit_checks_total", purchase_required="true") == 1
            assert delta("billing_charges_total", success="false", model="standard") == 1
            # The web process stores the event; a worker (not running here) applies it.
            assert (
                delta(
                    "billing_webhook_events_total",
                    type="checkout.session.completed",
                    outcome="queued",
                )
                == 1
            )
            assert (
                delta(
                    "billing_http_requests_total",
                    method="POST",
                    endpoint="api.create_generation",
                    status="402",
                )
                == 1
            )
            assert value(scraped, "billing_webhook_failed_events") == 0
            assert value(scraped, "billing_rate_limit_storage_degraded") == 0

        # A worker that dies takes none of its counts with it.
        os.kill(site.worker_pids()[0], signal.SIGKILL)
        site.wait_for_workers(2)
        survived = scrape(site.url)
        assert value(survived, "billing_generations_total", status="succeeded") == value(
            after[-1], "billing_generations_total", status="succeeded"
        )


# --- the alert rules ------------------------------------------------------------------------


def test_the_alert_rules_load_in_promtool():
    promtool = shutil.which("promtool")
    if promtool is None:
        unavailable("promtool is not installed (apt-get install prometheus)")
    result = subprocess.run(
        [promtool, "check", "rules", str(ALERTS)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_the_alert_rules_name_only_metrics_the_site_serves(client):
    import yaml

    rules = yaml.safe_load(ALERTS.read_text())
    alerts = {rule["alert"]: rule for group in rules["groups"] for rule in group["rules"]}
    assert {
        "WebhookEventsFailing",
        "WebhookLagOverFiveMinutes",
        "PaymentsStuckNeedsReview",
        "RateLimitStorageDegraded",
    } <= set(alerts)
    served = client.get("/metrics").get_data(as_text=True)
    families = set(re.findall(r"^# TYPE (\S+)", served, re.MULTILINE))
    named = set()
    for rule in alerts.values():
        named |= set(re.findall(r"\bbilling_[a-z_]+", rule["expr"]))
    suffixes = ("_total", "_bucket", "_sum", "_count")
    unknown = {
        name
        for name in named
        if name not in families
        and not any(name.endswith(s) and name.removesuffix(s) in families for s in suffixes)
    }
    assert unknown == set()


def test_the_worker_counts_what_it_applies_and_how_late(db, client):
    order = make_order(make_user(), "pro")
    before = samples(client.get("/metrics").get_data(as_text=True))
    event = make_event("checkout.session.completed", checkout_session(order))
    from tests.stripe_events import post_event

    assert post_event(client, event).applied_ok
    after = samples(client.get("/metrics").get_data(as_text=True))

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    kind = "checkout.session.completed"
    assert delta("billing_webhook_events_total", type=kind, outcome="queued") == 1
    assert delta("billing_webhook_events_total", type=kind, outcome="processed") == 1
    assert delta("billing_webhook_processing_seconds_count") == 1
    assert delta("billing_webhook_lag_seconds_count") == 1
    assert delta("billing_credits_granted_total", source="pack") == 100
    assert delta("billing_payments_total", kind="pack", status="succeeded") == 1
