"""GET /healthz: the database, the rate-limit storage and the worker, for the load balancer."""

from datetime import timedelta

from billing_site.models import utcnow
from billing_site.worker import heartbeat
from tests.servers import free_port


def test_healthz_is_ok_when_everything_answers_and_a_worker_beat_recently(db, client):
    heartbeat.beat("host:1:abc")

    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.get_json() == {
        "status": "ok",
        "database": "ok",
        "rate_limit_storage": "ok",
        "worker": "ok",
    }


def test_healthz_is_degraded_but_up_when_no_worker_ever_ran(client):
    response = client.get("/healthz")

    assert response.status_code == 200  # events wait safely in the table for a worker
    body = response.get_json()
    assert body["status"] == "degraded"
    assert body["worker"].startswith("not seen")


def test_healthz_is_degraded_when_the_last_worker_beat_over_a_minute_ago(db, client):
    from billing_site.models import WorkerHeartbeat

    heartbeat.beat("host:1:abc")
    db.session.get(WorkerHeartbeat, "host:1:abc").last_seen_at = utcnow() - timedelta(seconds=90)
    db.session.commit()

    body = client.get("/healthz").get_json()

    assert body["status"] == "degraded"
    assert body["worker"].startswith("not seen for 9")


def test_healthz_is_degraded_but_up_when_the_rate_limit_storage_is_unreachable(make_app):
    client = make_app(RATELIMIT_STORAGE_URI=f"redis://127.0.0.1:{free_port()}/0").test_client()

    response = client.get("/healthz")

    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "degraded"
    assert body["database"] == "ok"
    assert body["rate_limit_storage"].startswith("unreachable")


def test_healthz_fails_naming_the_database_when_it_is_unreachable(make_app):
    closed = f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/billing"
    client = make_app(SQLALCHEMY_DATABASE_URI=closed).test_client()

    response = client.get("/healthz")

    assert response.status_code == 503
    body = response.get_json()
    assert body["status"] == "error"
    assert body["database"].startswith("unreachable")
    assert body["rate_limit_storage"] == "ok"
