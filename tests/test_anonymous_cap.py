"""The anonymous cap: three free generations a day per client, enforced by Flask-Limiter."""

import socket
import time

from billing_site.extensions import limiter
from tests import servers
from tests.conftest import csrf_token_from, post_json
from tests.factories import log_in, make_user

API = "/api/v1/generations"


def generate(client, htmx=True, model="standard", prompt="a lighthouse"):
    page = client.get("/generate")
    data = {
        "prompt": prompt,
        "model": model,
        "csrf_token": csrf_token_from(page.get_data(as_text=True)),
    }
    headers = {"HX-Request": "true"} if htmx else {}
    return client.post("/generate", data=data, headers=headers)


def api_generate(client, **kwargs):
    return post_json(client, API, {"prompt": "a lighthouse", "model": "standard"}, **kwargs)


def test_three_free_generations_then_a_friendly_429(client):
    remaining = []
    for _ in range(3):
        response = generate(client)
        assert response.status_code == 200
        assert response.headers["X-RateLimit-Limit"] == "3"
        assert int(response.headers["X-RateLimit-Reset"]) > time.time()
        remaining.append(response.headers["X-RateLimit-Remaining"])
    assert remaining == ["2", "1", "0"]

    capped = generate(client)
    html = capped.get_data(as_text=True)
    assert capped.status_code == 429
    assert 0 < int(capped.headers["Retry-After"]) <= 24 * 3600
    assert capped.headers["X-RateLimit-Remaining"] == "0"
    assert "You&#39;ve used your 3 free generations today" in html
    assert "sign up for 10 free credits a month" in html
    assert 'href="/auth/signup"' in html
    assert html.lstrip().startswith('<section id="generator"')  # the card, swapped by HTMX


def test_capped_plain_post_gets_the_whole_page(client):
    for _ in range(3):
        generate(client, htmx=False)
    capped = generate(client, htmx=False)
    assert capped.status_code == 429
    assert "<!doctype html>" in capped.get_data(as_text=True)


def test_page_and_api_share_one_allowance(client):
    assert generate(client).status_code == 200
    assert generate(client).status_code == 200
    assert api_generate(client).status_code == 201
    capped = api_generate(client)
    assert capped.status_code == 429
    body = capped.json
    assert body["error"] == "rate_limit_exceeded"
    assert (body["limit"], body["window"]) == (3, "24h")
    assert 0 < body["retry_after"] <= 24 * 3600
    assert "sign up for 10 free credits a month" in body["message"]
    assert "Retry-After" in capped.headers


def test_page_shows_how_many_free_tries_remain(client):
    generate(client)
    html = client.get("/generate").get_data(as_text=True)
    assert "2</strong> of 3 free generations left today" in html


def test_invalid_requests_do_not_use_up_a_free_try(client):
    assert generate(client, prompt="").status_code == 422
    assert generate(client, model="ultra").status_code == 422
    assert [generate(client).status_code for _ in range(4)] == [200, 200, 200, 429]


def test_logged_in_customers_are_not_capped(app, client):
    with app.app_context():
        user = make_user()
        log_in(client, user)
    statuses = [generate(client).status_code for _ in range(5)]
    assert statuses == [200] * 5  # the free tier's 10 credits pay for them


def test_forged_forwarded_for_does_not_reset_the_cap(client):
    for _ in range(3):
        generate(client)
    forged = {"HTTP_X_FORWARDED_FOR": "203.0.113.99"}
    page = client.get("/generate")
    data = {
        "prompt": "again",
        "model": "standard",
        "csrf_token": csrf_token_from(page.get_data(as_text=True)),
    }
    response = client.post("/generate", data=data, headers={"X-Forwarded-For": "203.0.113.99"})
    assert response.status_code == 429
    assert api_generate(client, environ_base=forged).status_code == 429


def test_behind_one_trusted_proxy_each_client_gets_its_own_cap(make_app):
    app = make_app(TRUSTED_PROXIES=1)
    client = app.test_client()
    proxy = {"REMOTE_ADDR": "10.0.0.2"}

    def as_client(address, forged_hops=""):
        header = f"{forged_hops}{address}"
        return api_generate(client, environ_base=proxy, headers={"X-Forwarded-For": header})

    assert [as_client("198.51.100.7").status_code for _ in range(3)] == [201] * 3
    assert as_client("198.51.100.7").status_code == 429
    # Hops to the left of the trusted one are the client's own words: ignored.
    assert as_client("198.51.100.7", forged_hops="192.0.2.1, 192.0.2.2, ").status_code == 429
    # A different real client, as reported by the trusted proxy, starts afresh.
    assert as_client("198.51.100.8").status_code == 201


def test_rotating_fingerprints_cannot_lift_the_per_address_ceiling(make_app):
    app = make_app(ANONYMOUS_DAILY_LIMIT=1)  # ceiling: 10 a day per address
    client = app.test_client()
    statuses = [
        api_generate(client, headers={"X-Client-Fingerprint": f"device-{n}"}).status_code
        for n in range(11)
    ]
    assert statuses == [201] * 10 + [429]


def test_the_per_address_factor_is_configurable(make_app):
    app = make_app(ANONYMOUS_DAILY_LIMIT=1, ANONYMOUS_ADDRESS_FACTOR=2)
    client = app.test_client()
    statuses = [
        api_generate(client, headers={"X-Client-Fingerprint": f"device-{n}"}).status_code
        for n in range(3)
    ]
    assert statuses == [201, 201, 429]


def wait_until_closed(port: int) -> None:
    """stop() only signals Redis; wait until it no longer accepts connections."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) != 0:
                return
        time.sleep(0.01)
    raise AssertionError(f"Redis on port {port} did not stop")


def test_when_redis_goes_down_the_cap_still_holds_in_memory(make_app):
    redis = servers.start_redis()
    try:
        app = make_app(RATELIMIT_STORAGE_URI=redis.url)
        client = app.test_client()
        assert api_generate(client).status_code == 201
        assert client.get("/healthz").json["rate_limit_storage"] == "ok"

        redis.stop()
        wait_until_closed(redis.port)
        # The memory fallback starts from zero, so a visitor may get the full
        # allowance again in this process, but never more: limited, not unlimited.
        statuses = [api_generate(client).status_code for _ in range(5)]
        assert 500 not in statuses
        assert statuses == [201, 201, 201, 429, 429]
        capped = api_generate(client)
        assert capped.json["error"] == "rate_limit_exceeded"
        assert "Retry-After" in capped.headers
        health = client.get("/healthz")
        assert (health.status_code, health.json["status"]) == (200, "degraded")
    finally:
        redis.stop()
        # The limiter is one object shared by every app in this process, and it
        # remembers that its storage died: point it back at the suite's Redis.
        make_app()
        limiter._storage_dead = False
