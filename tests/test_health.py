"""GET /healthz: the database and the rate-limit storage, for the load balancer."""

from tests.servers import free_port


def test_healthz_is_ok_when_everything_answers(client):
    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.get_json() == {"status": "ok", "database": "ok", "rate_limit_storage": "ok"}


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
